"""``warnd contacts audit``: per post, A and B, numbers, the superior, the duty office, and the
worst-case ladder against the level's lead time."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from factory import county_rows, write_contacts

from warnd.audit import audit, row_codes, worst_case
from warnd.cli import main
from warnd.directory import load
from warnd.policy import Policy

EXAMPLE = Path(__file__).resolve().parent.parent / "contacts"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["contacts", "audit", *args])


def policy_toml(tmp: Path, window: str, attempts: int, ladder: str) -> Path:
    path = tmp / "warnd.toml"
    path.write_text(
        f'[ack]\nwindow = "{window}"\nattempts = {attempts}\n[escalation]\nladder = {ladder}\n',
        encoding="utf-8",
    )
    return path


def test_the_631_defaults_are_too_slow_for_villages(tmp_path: Path) -> None:
    """5 min × 3 per rung, four rungs (stage, B, superior, duty): 60 min is not inside 1 h."""
    folder = write_contacts(tmp_path / "contacts", county_rows(townships=2, villages=2))
    res = invoke(str(folder), "--json")
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and "attempts × window" in doc["formula"]
    posts = {p["code"]: p for p in doc["posts"]}
    county, township, village = posts["433122"], posts["433122100"], posts["433122100200"]
    # the county's superior (a prefecture) is not in the directory: that rung is skipped
    assert county["rungs"] == ["stage", "backup", "duty"] and county["worst"] == "45m"
    assert county["ok"] and county["ladder_ok"] and county["lead"] == "6h"
    assert township["rungs"] == ["stage", "backup", "superior", "duty"]
    assert township["worst_s"] == 3600 and township["ok"]
    assert village["worst_s"] == 3600 and village["lead_s"] == 3600
    assert village["ladder_ok"] is False and not village["ok"]
    assert village["problems"] == ["最坏叫应 1h（4 级 × 3 次 × 5m）不短于村级提前量 1h"]
    assert doc["counts"]["village"] == {"posts": 4, "failed": 4}
    assert doc["counts"]["all"] == {"posts": 7, "failed": 4}
    # the table: Chinese headers, only the failing posts, the formula, the verdict
    table = invoke(str(folder))
    assert table.exit_code == 1
    for text in ("区划代码", "A角/B角", "上级A角", "县值班室", "433122100200", "不短于村级提前量"):
        assert text in table.stdout
    assert "433122101 " not in table.stdout  # a passing township is not listed without --all
    assert "有岗位不通过" in table.stdout and "须短于该层级的提前量" in table.stdout


def test_a_tighter_policy_from_the_config_passes(tmp_path: Path) -> None:
    folder = write_contacts(tmp_path / "contacts", county_rows(townships=2, villages=2))
    cfg = policy_toml(tmp_path, "3m", 3, '["backup", "superior", "duty"]')
    res = invoke(str(folder), "--config", str(cfg), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["ok"] is True and doc["policy"]["window"] == "3m"
    assert {p["worst"] for p in doc["posts"] if p["level"] == "village"} == {"36m"}
    everything = invoke(str(folder), "--config", str(cfg), "--all")
    assert everything.exit_code == 0 and "433122101201" in everything.stdout
    assert "全部通过" in everything.stdout


def test_each_check_fails_on_its_own_post(tmp_path: Path) -> None:
    rows = county_rows(townships=2, villages=1, duty=False)
    by_id = {r[0]: r for r in rows}
    by_id["c-433122100-b"][7] = "1381234"  # a bad number: the row is dropped, the post keeps it
    by_id["c-433122101200-b"][7] = by_id["c-433122101200-a"][7]  # A and B share a number
    rows = [r for r in rows if r[0] != "c-433122101-a"]  # a township without an A
    rows.append(["c-bad", "43312X", "坏代码", "county", "A", "", "某人", "13900000001", ""])
    folder = write_contacts(tmp_path / "contacts", rows)
    policy = Policy.default()
    directory, problems = load(folder)
    posts, unplaced = audit(directory, policy, problems, row_codes(folder))
    by = {p.code: p for p in posts}
    assert [p.kind for p in unplaced] == ["bad_code"]  # no post can hold that row
    t100 = by["433122100"]
    assert (t100.a, t100.b, t100.phones_ok) == (1, 0, False)
    assert "没有 B 角" in t100.problems
    assert not by["433122101200"].phones_ok  # the shared number
    assert by["433122100200"].phones_ok
    t101 = by["433122101"]
    assert t101.a == 0 and "没有 A 角" in t101.problems
    v = by["433122101200"]
    assert v.parent_a is False and "上级乡镇 433122101 没有 A 角" in v.problems
    # the superior rung goes up to the nearest division with an A (the county), as the
    # engine does; the duty rung has nobody to call and costs nothing
    assert v.rungs == ("stage", "backup", "superior") and v.worst == timedelta(minutes=45)
    assert all(not p.county_duty and "县 433122 没有值班室 (duty)" in p.problems for p in posts)
    assert by["433122"].parent is None and by["433122"].parent_a is None
    res = invoke(str(folder), "--json")
    assert res.exit_code == 1
    assert [u["kind"] for u in json.loads(res.stdout)["unplaced"]] == ["bad_code"]


def test_worst_case_formula_and_a_shorter_ladder() -> None:
    policy = Policy.default()
    assert worst_case(4, policy) == timedelta(hours=1)
    assert worst_case(0, policy) == timedelta(0)


def test_the_example_directory_and_the_config_path(tmp_path: Path) -> None:
    cfg = tmp_path / "warnd.toml"
    cfg.write_text(f'[contacts]\npath = "{EXAMPLE}"\n', encoding="utf-8")
    res = invoke("--config", str(cfg), "--json")
    doc = json.loads(res.stdout)
    assert doc["path"] == str(EXAMPLE)
    assert doc["counts"]["all"]["posts"] == 17
    failing = {p["code"] for p in doc["posts"] if not p["ok"]}
    assert failing == {p["code"] for p in doc["posts"] if p["ladder_ok"] is False}
    assert res.exit_code == (1 if failing else 0)
    missing = invoke(str(tmp_path / "nowhere"))
    assert missing.exit_code == 2 and len(missing.output.strip().splitlines()) == 1
