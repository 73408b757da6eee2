"""``warnd contacts check``: exit codes, output, --json, and the delayed progress bar."""

from __future__ import annotations

import io
import json
from pathlib import Path

from click.testing import CliRunner, Result
from directory_gen import generate
from rich.console import Console

from warnd.cli import main
from warnd.cli.contacts import summary
from warnd.cli.progress import DelayedBar, rows
from warnd.core.directory import load

EXAMPLE = Path(__file__).resolve().parent.parent / "contacts"
HEADER = "contact_id,division_code,division_name,level,rank,role,name,phone,alt_phone\n"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["contacts", "check", *args])


def test_example_directory_passes() -> None:
    directory, problems = load(EXAMPLE)
    assert problems == []
    counts = directory.counts()
    assert (counts["county"], counts["township"], counts["village"]) == (1, 4, 12)
    result = run(str(EXAMPLE))
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"通讯录检查通过：县 1 个，乡镇 4 个，村 12 个，联系人 {len(directory)} 人\n"
    )
    assert result.stderr == ""


def test_example_directory_has_the_posts_the_chain_needs() -> None:
    d, _ = load(EXAMPLE)
    county = d.division("433122")
    assert county is not None and county.name == "泸溪县"
    assert d.persons("433122", "duty")[0].phone.startswith("+86743")  # a landline
    townships = d.overlapping(["433122"], "township")
    assert [t.name for t in townships] == ["武溪镇", "浦市镇", "达岚镇", "合水镇"]
    villages = d.overlapping(["433122"], "village")
    for place in (*townships, *villages):
        assert d.persons(place.code, "A") and d.persons(place.code, "B"), place
    assert any(len(d.persons(v.code, "A")) == 2 for v in villages)


def _broken(tmp_path: Path) -> Path:
    path = tmp_path / "a.csv"
    path.write_text(
        HEADER
        + "c-1,433122,泸溪县,county,A,指挥长,张三,13800000001,\n"
        + "c-2,433122,泸溪县,county,B,副指挥长,李四,1381234,\n",
        encoding="utf-8",
    )
    return path


def test_problems_print_one_per_line_and_exit_1(tmp_path: Path) -> None:
    path = _broken(tmp_path)
    _, problems = load(path)
    result = run(str(path))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines == [str(p) for p in problems]
    assert lines[0] == f"{path}:2: 县 433122 泸溪县 没有值班室 (no duty row)"
    assert lines[1].startswith(f"{path}:3: 电话号码无效 (phone) '1381234'")
    assert "2 个问题" in result.stderr and "联系人 1 人" in result.stderr


def test_json_output(tmp_path: Path) -> None:
    result = run(str(_broken(tmp_path)), "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    assert doc["counts"] == {"county": 1, "township": 0, "village": 0, "contacts": 1}
    assert [(p["file"], p["line"], p["kind"]) for p in doc["problems"]] == [
        (str(tmp_path / "a.csv"), 2, "no_duty"),
        (str(tmp_path / "a.csv"), 3, "bad_phone"),
    ]
    assert all(isinstance(p["message"], str) for p in doc["problems"])
    clean = run(str(EXAMPLE), "--json", "--config", str(tmp_path / "ignored.toml"))
    assert clean.exit_code == 0
    doc = json.loads(clean.stdout)
    assert doc["ok"] is True and doc["problems"] == [] and doc["counts"]["village"] == 12


def test_unloadable_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run(str(tmp_path / "missing"))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "path not found" in result.stderr
    bad = tmp_path / "h.csv"
    bad.write_text("contact_id,name\nc-1,张三\n", encoding="utf-8")
    result = run(str(bad), "--json")
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and "missing columns" in doc["error"] and f"{bad}:1" in doc["error"]


def test_summary_counts() -> None:
    text = summary({"county": 2, "township": 30, "village": 400, "contacts": 5000})
    assert text == "县 2 个，乡镇 30 个，村 400 个，联系人 5000 人"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_bar_appears_only_after_a_second() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80)
    clock = FakeClock()
    bar = DelayedBar("读取通讯录", console, describe=rows, clock=clock)
    bar(10, 100)
    clock.now += 0.5
    bar(20, 100)
    assert not bar.shown and out.getvalue() == ""
    clock.now += 0.6
    bar(30, 100)
    assert bar.shown
    bar(100, 100)
    bar.close()
    assert "读取通讯录" in out.getvalue() and "100/100 行" in out.getvalue()


def test_load_reports_progress(tmp_path: Path) -> None:
    generate(tmp_path, 2, 3, 40, 12, seed=5)  # 2 files, ~2,900 rows
    seen: list[tuple[int, int]] = []
    load(tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert len(seen) >= 2
    assert seen[-1][0] == seen[-1][1] > 2_800
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
