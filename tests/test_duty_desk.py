"""The duty desk tells one truth, in the duty officer's words (issue 13's numbered items).

Each test names its item. The store is filled by the real engine on a manual clock
(tests/scenario.py); the commands run as a duty officer types them (``--clock-file``: the
commands' clock, no sleeping).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from factory import cap_xml, county_rows
from scenario import Scenario

from warnd.cli import main

H, M = timedelta(hours=1), timedelta(minutes=1)
SENT = datetime.fromisoformat("2025-07-04T08:15:00+08:00")
KEY = "43312241600005_20250704081500"


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def ok_json(*args: str) -> Any:
    res = cli(*args, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def clock_file(tmp: Path, when: datetime) -> str:
    path = tmp / "clock"
    path.write_text(when.isoformat(), encoding="utf-8")
    return str(path)


# --- 1. one T rule for a warning without onset -------------------------------------------------


def test_1_status_report_and_drill_report_give_the_same_deadlines_without_onset(
    tmp_path: Path,
) -> None:
    """No onset, no effective: T is sent (08:15) for status, the live report and the drill
    report alike — deadlines county 05:15, township 07:15, village 08:15."""
    data = cap_xml(KEY, SENT)  # no onset, no effective
    sc = Scenario(tmp_path, rows=county_rows(townships=1, villages=1), start=SENT)

    async def fill() -> None:
        async with sc:
            await sc.arrive(data)
            await sc.run_until(SENT + 20 * M)

    asyncio.run(fill())
    config = str(sc.config())
    want = {
        "county": "2025-07-04T05:15:00+08:00",
        "township": "2025-07-04T07:15:00+08:00",
        "village": "2025-07-04T08:15:00+08:00",
    }

    clock = clock_file(tmp_path, SENT + 20 * M)
    status = ok_json("status", KEY, "--config", config, "--clock-file", clock)
    assert status["warning"]["onset"] == "2025-07-04T08:15:00+08:00"
    assert status["warning"]["onset_kind"] == "sent"
    assert {lv["level"]: lv["deadline"] for lv in status["warning"]["levels"]} == want
    assert {d["level"]: d["deadline"] for d in status["divisions"]} == want

    live = ok_json("report", KEY, "--config", config)
    (w,) = live["warnings"]
    assert (w["onset"], w["onset_kind"]) == ("2025-07-04T08:15:00+08:00", "sent")
    assert {lv["level"]: lv["deadline"] for lv in w["levels"]} == want

    feed = tmp_path / "feed"
    feed.mkdir()
    (feed / "w.xml").write_bytes(data)
    responders = tmp_path / "responders.csv"
    responders.write_text("contact_id,ack_after\n", encoding="utf-8")
    drill_file = tmp_path / "drill.json"
    res = cli(
        "drill",
        "simulate",
        "--feed",
        str(feed),
        "--contacts",
        str(sc.contacts),
        "--responders",
        str(responders),
        "--report",
        str(drill_file),
    )
    assert res.exit_code == 0, res.output
    drill = json.loads(drill_file.read_text(encoding="utf-8"))
    (facts,) = drill["warnings"]  # the file carries T and the timetable
    assert (facts["onset"], facts["onset_kind"]) == ("2025-07-04T08:15:00+08:00", "sent")
    from_file = ok_json("report", str(drill_file), "--format", "json")
    (d,) = from_file["warnings"]
    assert (d["onset"], d["onset_kind"]) == ("2025-07-04T08:15:00+08:00", "sent")
    assert {lv["level"]: lv["deadline"] for lv in d["levels"]} == want
    # and the terminal report says it the same way (no "推算" estimate)
    text = cli("report", str(drill_file)).stdout
    assert "推算" not in text


def test_1_an_older_drill_file_without_facts_estimates_the_same_t(tmp_path: Path) -> None:
    """A drill file written before the facts were added: the estimate follows the same rule."""
    sc = Scenario(tmp_path, rows=county_rows(townships=1, villages=1))
    feed = tmp_path / "feed"
    feed.mkdir()
    (feed / "w.xml").write_bytes(cap_xml(KEY, SENT))
    responders = tmp_path / "responders.csv"
    responders.write_text("contact_id,ack_after\n", encoding="utf-8")
    drill_file = tmp_path / "drill.json"
    args = ["drill", "simulate", "--feed", str(feed), "--contacts", str(sc.contacts)]
    res = cli(*args, "--responders", str(responders), "--report", str(drill_file))
    assert res.exit_code == 0, res.output
    old = json.loads(drill_file.read_text(encoding="utf-8"))
    del old["warnings"]
    drill_file.write_text(json.dumps(old), encoding="utf-8")
    (d,) = ok_json("report", str(drill_file), "--format", "json")["warnings"]
    assert (d["onset"], d["onset_kind"]) == ("2025-07-04T08:15:00+08:00", "estimated")
    assert [lv["deadline"] for lv in d["levels"]] == [
        "2025-07-04T05:15:00+08:00",
        "2025-07-04T07:15:00+08:00",
        "2025-07-04T08:15:00+08:00",
    ]


# --- 3. warnd ack says what was recorded --------------------------------------------------------


def silent_county(tmp: Path, until: timedelta = 2 * H) -> Scenario:
    """Nobody answers a no-onset warning: by ``until`` every division is on the not-woken list."""
    sc = Scenario(tmp, rows=county_rows(townships=1, villages=1), start=SENT)

    async def fill() -> None:
        async with sc:
            await sc.arrive(cap_xml(KEY, SENT))
            await sc.run_until(SENT + until)

    asyncio.run(fill())
    return sc


def test_3_ack_prints_who_for_which_division_by_whom_and_a_repeat_is_a_duplicate(
    tmp_path: Path,
) -> None:
    sc = silent_county(tmp_path)
    config = str(sc.config())
    village = "433122100200"
    args = ("ack", KEY, "--contact", f"c-{village}-a", "--by", "张三", "--note", "电话叫醒")

    first = cli(*args, "--config", config)
    assert first.exit_code == 0, first.output
    line = first.stdout.strip()
    assert "\n" not in line
    assert line.startswith("已登记：张三 记录 村支书0-0（c-433122100200-a） 已应答")
    assert f"代表 村村0-0（{village}），预警 {KEY}" in line
    assert "已确认收到" not in line  # not the text the responder's phone shows

    again = ok_json(*args, "--config", config)
    assert again["ok"] is True and again["duplicate"] is True
    assert (again["contact"], again["name"], again["division"]) == (
        f"c-{village}-a",
        "村支书0-0",
        village,
    )
    assert (again["by"], again["source"]) == ("张三", "officer")  # the first record stands
    assert again["message"].startswith("已应答过，未重复登记：村支书0-0")

    # the division itself: its not-woken entry is resolved, and the output says so
    township = "433122100"
    res = ok_json("ack", KEY, "--division", township, "--by", "李四", "--config", config)
    assert (res["ok"], res["duplicate"], res["resolved"]) == (True, False, True)
    assert (res["division"], res["division_name"], res["level"], res["by"]) == (
        township,
        "镇0",
        "township",
        "李四",
    )
    assert res["message"].endswith("该区划的未叫醒条目已处置")


def test_3_ack_refuses_both_or_neither_of_contact_and_division_in_chinese(tmp_path: Path) -> None:
    sc = silent_county(tmp_path, until=10 * M)
    config = str(sc.config())
    both = cli(
        "ack", KEY, "--contact", "c-433122-a", "--division", "433122", "--by", "张三",
        "--config", config,
    )  # fmt: skip
    neither = cli("ack", KEY, "--by", "张三", "--config", config)
    unknown = cli("ack", "nope", "--contact", "x", "--by", "张三", "--config", config)
    for res, code in ((both, 2), (neither, 2), (unknown, 1)):
        assert res.exit_code == code, res.output
        assert res.stdout == ""
        (line,) = res.stderr.splitlines()
        assert line.startswith("warnd: ") and "Traceback" not in line
        assert "\u4e00" <= line[len("warnd: ")] <= "\u9fff", line  # Chinese first


# --- 6. log lines: the stage's level survives, timestamps carry the configured offset ------------


RESERVED_LOG_KEYS = {"level", "timestamp", "event", "logger", "exc_info"}


def test_6_no_log_call_passes_a_key_structlog_writes_itself() -> None:
    """``level=`` (and the other keys structlog fills in) would be overwritten on every line."""
    import ast

    root = Path(__file__).resolve().parents[1] / "warnd"
    clashes = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("debug", "info", "warning", "error", "exception", "msg")
            ):
                bad = RESERVED_LOG_KEYS & {k.arg for k in node.keywords if k.arg}
                if bad:
                    clashes.append(f"{path.relative_to(root)}:{node.lineno} {sorted(bad)}")
    assert clashes == []


def test_6_stage_fired_names_its_level_and_time_has_the_configured_offset(tmp_path: Path) -> None:
    import io
    from zoneinfo import ZoneInfo

    from warnd import logs

    out = io.StringIO()
    logs.configure(json=True, level="info", file=out, tz=ZoneInfo("Asia/Shanghai"))
    silent_county(tmp_path, until=1 * M)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    fired = [e for e in lines if e["event"] == "stage_fired"]
    assert [e["division_level"] for e in fired] == ["county", "township", "village"]
    assert all(e["level"] == "info" for e in fired)
    for e in lines:
        stamp = datetime.fromisoformat(e["timestamp"])
        assert e["timestamp"].endswith("+08:00") and stamp.utcoffset() == 8 * H, e["timestamp"]

    logs.configure(json=True, level="info", file=out, tz=ZoneInfo("UTC"))
    structlog_line = io.StringIO()
    logs.configure(json=True, level="info", file=structlog_line)  # zone kept from before
    import structlog

    structlog.get_logger("t").info("probe")
    assert json.loads(structlog_line.getvalue())["timestamp"].endswith("+00:00")


# --- 7. status --watch off a terminal prints a frame per interval ---------------------------------


def test_7_watch_into_a_pipe_prints_one_frame_per_interval(
    tmp_path: Path, monkeypatch: Any
) -> None:
    from warnd.cli import status

    sc = silent_county(tmp_path, until=10 * M)
    clock = tmp_path / "clock"
    clock.write_text((SENT + 10 * M).isoformat(), encoding="utf-8")
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:  # the clock file moves; nothing sleeps
        waits.append(seconds)
        clock.write_text((SENT + 10 * M + len(waits) * M).isoformat(), encoding="utf-8")

    monkeypatch.setattr(status, "SLEEP", fake_sleep)
    res = cli(
        "status", "--watch", "60", "--iterations", "3", "--config", str(sc.config()),
        "--clock-file", str(clock),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert waits == [60.0, 60.0]
    heads = [line for line in res.stdout.splitlines() if line.startswith("预警叫应进度")]
    assert heads == [f"预警叫应进度 status  08:{m}" for m in (25, 26, 27)]
    assert "\x1b[" not in res.stdout  # no cursor movement or colour codes in a pipe
