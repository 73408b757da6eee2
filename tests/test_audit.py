"""``warnd contacts audit``: per post, A and B, numbers, the superior, the duty office, and the
worst-case ladder against the level's budget to its 631 deadline (the report's rule)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from factory import county_rows, write_contacts

from warnd.cli import main
from warnd.config.policy import Policy
from warnd.core.deadline import deadlines, windows
from warnd.core.directory import load
from warnd.desk.audit import audit, row_codes, worst_case

EXAMPLE = Path(__file__).resolve().parent.parent / "contacts"


@pytest.fixture(autouse=True)
def no_default_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run where no config/warnd.toml exists, so the contract's defaults apply unless given."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["contacts", "audit", *args])


def policy_toml(tmp: Path, window: str, attempts: int, ladder: str, stages: str = "") -> Path:
    path = tmp / "warnd.toml"
    path.write_text(
        f'[ack]\nwindow = "{window}"\nattempts = {attempts}\n[escalation]\nladder = {ladder}\n'
        + stages,
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
    # the county must be reached before the townships are warned (T − 3h): 3 h, not 6 h
    assert (county["budget"], county["deadline_before_onset"]) == ("3h", "3h")
    assert township["rungs"] == ["stage", "backup", "superior", "duty"]
    assert township["worst_s"] == 3600 and township["ok"] and township["budget_s"] == 7200
    assert village["worst_s"] == 3600 and village["lead_s"] == 3600
    assert village["budget_s"] == 3600 and village["deadline_before_onset"] == "0s"
    assert village["ladder_ok"] is False and not village["ok"]
    assert village["problems"] == [
        "最坏叫应 1h（4 级 × 3 次 × 5m）不短于村级 631 时限 1h（村级提前量 1h，到发生时间）"
    ]
    assert doc["policy"]["budgets"] == {"county": "3h", "township": "2h", "village": "1h"}
    assert doc["counts"]["village"] == {"posts": 4, "failed": 4}
    assert doc["counts"]["all"] == {"posts": 7, "failed": 4}
    # the table: Chinese headers, only the failing posts, the formula, the verdict
    table = invoke(str(folder))
    assert table.exit_code == 1
    for text in (
        "区划代码",
        "A角/B角",
        "上级A角",
        "县值班室",
        "433122100200",
        "不短于村级 631 时限",
    ):
        assert text in table.stdout
    assert "433122101 " not in table.stdout  # a passing township is not listed without --all
    assert "有岗位不通过" in table.stdout and "须短于该层级的 631 时限" in table.stdout
    assert "乡镇级 631 时限 2h（乡镇级提前量 3h − 村级提前量 1h）" in table.stdout


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


def test_budget_is_the_lead_less_the_next_stage_as_in_the_report(tmp_path: Path) -> None:
    """10 min × 3 per rung: a township's 4 rungs take 2 h — inside its 3 h lead, but not before
    the villages are warned (T − 1h), which is when the report calls it late."""
    folder = write_contacts(tmp_path / "contacts", county_rows(townships=1, villages=1))
    cfg = policy_toml(tmp_path, "10m", 3, '["backup", "superior", "duty"]')
    doc = json.loads(invoke(str(folder), "--config", str(cfg), "--json").stdout)
    posts = {p["code"]: p for p in doc["posts"]}
    township = posts["433122100"]
    assert (township["worst"], township["lead"], township["budget"]) == ("2h", "3h", "2h")
    assert township["ladder_ok"] is False
    assert township["problems"] == [
        "最坏叫应 2h（4 级 × 3 次 × 10m）不短于"
        "乡镇级 631 时限 2h（乡镇级提前量 3h − 村级提前量 1h）"
    ]
    assert posts["433122"]["ladder_ok"] is True  # 3 rungs, 1h30m < 3h


def test_budgets_follow_the_configured_timetable(tmp_path: Path) -> None:
    """Stages in any file order, a level left out: each level's budget runs to the next stage."""
    folder = write_contacts(tmp_path / "contacts", county_rows(townships=1, villages=1))
    stages = (
        '[[stages]]\nlevel = "village"\nlead = "30m"\n[[stages]]\nlevel = "county"\nlead = "4h"\n'
    )
    cfg = policy_toml(tmp_path, "2m", 3, '["backup", "superior", "duty"]', stages)
    doc = json.loads(invoke(str(folder), "--config", str(cfg), "--json").stdout)
    assert doc["policy"]["budgets"] == {"county": "3h30m", "village": "30m"}
    posts = {p["code"]: p for p in doc["posts"]}
    assert posts["433122"]["budget"] == "3h30m"
    assert posts["433122100"]["budget"] is None and posts["433122100"]["ladder_ok"] is None
    assert posts["433122100200"]["worst"] == "24m" and posts["433122100200"]["ladder_ok"]


def test_the_audit_and_the_report_share_one_deadline_rule() -> None:
    """The report's deadline of each level is T − lead + the audit's budget, for any timetable."""
    h = timedelta(hours=1)
    onset = datetime(2025, 6, 14, 8, 0, tzinfo=UTC)
    default = [(s.level, s.lead) for s in Policy.default().stages]
    budgets = {level: w.budget for level, w in windows(default).items()}
    assert budgets == {"county": 3 * h, "township": 2 * h, "village": h}
    for stages in (default, [("village", 0.75 * h), ("township", 2 * h)]):
        dl = deadlines(onset, stages)
        for level, w in windows(stages).items():
            assert dl[level] == onset - w.lead + w.budget


REPO = Path(__file__).resolve().parent.parent


def test_the_shipped_config_passes_its_own_audit(monkeypatch: Any) -> None:
    """Issue 13 item 2: what a duty office copies passes the pre-season audit, as shipped."""
    monkeypatch.chdir(REPO)  # its paths are relative to the repository root (the quick start)
    res = invoke("--config", "config/warnd.toml", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["ok"] is True and doc["fix"] is None
    assert doc["counts"]["all"] == {"posts": 17, "failed": 0}
    assert (doc["policy"]["window"], doc["policy"]["attempts"]) == ("2m", 3)
    assert {p["worst"] for p in doc["posts"] if p["level"] == "village"} == {"24m"}


def test_a_failing_audit_says_exactly_what_to_change_and_that_change_passes(
    tmp_path: Path,
) -> None:
    """With the contract's defaults (5m × 3) the villages fail; the audit names the longest
    window and the most attempts that fit, and each of them, applied alone, passes."""
    folder = write_contacts(tmp_path / "contacts", county_rows(townships=2, villages=2))
    res = invoke(str(folder), "--json")
    assert res.exit_code == 1
    assert json.loads(res.stdout)["fix"] == {
        "window": "4m",
        "window_s": 240,
        "attempts": 2,
        "levels": ["village"],
    }
    text = invoke(str(folder)).stdout
    fix = '[ack] window = "4m"（现为 5m）；或 [ack] attempts = 2（现为 3）'
    assert f"村级最坏叫应超时。改法（任选其一）：{fix}" in text
    ladder = '["backup", "superior", "duty"]'
    # each suggestion alone passes; the window is whole minutes below the exact limit (4m59s),
    # and one step past the limit fails
    for window, attempts, code in (("4m", 3, 0), ("5m", 2, 0), ("4m59s", 3, 0), ("5m", 3, 1)):
        cfg = policy_toml(tmp_path, window, attempts, ladder)
        assert invoke(str(folder), "--config", str(cfg)).exit_code == code, (window, attempts)


def test_bundling_is_named_and_leaves_the_worst_case_as_it_is(tmp_path: Path) -> None:
    """``[ack] bundle`` (contracts §8) only ever brings an attempt forward: the audit says so
    and its figures do not change."""
    folder = write_contacts(tmp_path / "contacts", county_rows(townships=1, villages=1))
    plain = policy_toml(tmp_path, "5m", 3, '["backup"]')
    before = json.loads(invoke(str(folder), "--config", str(plain), "--json").stdout)
    assert "bundle" not in before["policy"]
    text = plain.read_text(encoding="utf-8").replace(
        "attempts = 3\n", 'attempts = 3\nbundle = "2m"\n'
    )
    plain.write_text(text, encoding="utf-8")
    after = json.loads(invoke(str(folder), "--config", str(plain), "--json").stdout)
    assert after["policy"]["bundle"] == "2m"
    assert after["posts"] == before["posts"] and after["counts"] == before["counts"]
    assert "合并发送 bundle = 2m" in invoke(str(folder), "--config", str(plain), "--all").stdout
