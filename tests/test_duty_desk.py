"""The duty desk tells one truth, in the duty officer's words (issue 13's numbered items).

Each test names its item. The store is filled by the real engine on a manual clock
(tests/scenario.py); the commands run as a duty officer types them (``--clock-file``: the
commands' clock, no sleeping).
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from factory import cap_xml, county_rows
from scenario import Scenario

from warnd.cli import main

H, M = timedelta(hours=1), timedelta(minutes=1)
SENT = datetime.fromisoformat("2025-07-04T08:15:00+08:00")
KEY = "43312241600005_20250704081500"


@pytest.fixture(autouse=True)
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run where no config/warnd.toml exists: a command without --config gets the defaults."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


def cli(*args: str, sleep: Any = None) -> Result:
    """The command; ``sleep``: what ``--watch`` waits with (``warnd.cli.status.watch_sleep``)."""
    return CliRunner().invoke(main, list(args), obj={"sleep": sleep} if sleep else None)


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
    assert f"代表 村0-0（村级 {village}），预警 {KEY}" in line
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

    from warnd.edges import logs

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

    sc = silent_county(tmp_path, until=10 * M)
    clock = tmp_path / "clock"
    clock.write_text((SENT + 10 * M).isoformat(), encoding="utf-8")
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:  # the clock file moves; nothing sleeps
        waits.append(seconds)
        clock.write_text((SENT + 10 * M + len(waits) * M).isoformat(), encoding="utf-8")

    res = cli(
        "status", "--watch", "60", "--iterations", "3", "--config", str(sc.config()),
        "--clock-file", str(clock), sleep=fake_sleep,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert waits == [60.0, 60.0]
    heads = [line for line in res.stdout.splitlines() if line.startswith("预警叫应进度")]
    assert heads == [f"预警叫应进度 status  08:{m}" for m in (25, 26, 27)]
    assert "\x1b[" not in res.stdout  # no cursor movement or colour codes in a pipe


# --- 5. names, numbers as dialled, durations in days and hours, Chinese first ---------------------

REPO = Path(__file__).resolve().parents[1]


def test_5_numbers_as_a_duty_officer_dials_them() -> None:
    from warnd.desk.views import display

    assert display.phone("+867434222110") == "0743-4222110"  # 泸溪 county duty office
    assert display.phone("+861012345678") == "010-12345678"  # Beijing: a 2-digit area code
    assert display.phone("+8613944541628") == "13944541628"  # a mobile: its 11 digits
    assert display.phone("+14155550100") == "+1 415-555-0100"  # a foreign number as such


def test_5_landlines_split_their_area_code_as_phonenumbers_does() -> None:
    """The display's own area-code rule (no 0.15 s phonenumbers import on the 1 s path) agrees
    with phonenumbers on numbers of 2- and 3-digit area codes."""
    import random

    import phonenumbers

    from warnd.core.phone import normalise
    from warnd.desk.views import display

    rng = random.Random(13)
    areas = ["10", "20", "21", "23", "27", "29", "311", "371", "551", "731", "743", "755", "991"]
    checked = 0
    for area in areas:
        for digits in (7, 8):
            number = normalise("0" + area + "".join(rng.choice("23456789") for _ in range(digits)))
            if number is None:
                continue  # not a valid length for that area
            parsed = phonenumbers.parse(number)
            cut = phonenumbers.length_of_geographical_area_code(parsed)
            national = str(parsed.national_number)
            assert display.phone(number) == f"0{national[:cut]}-{national[cut:]}", number
            checked += 1
    assert checked >= len(areas)
    assert display.phone("+864001234567") == "400-123-4567"


def test_5_durations_in_days_and_hours_and_never_a_negative_ago() -> None:
    from warnd.desk.views import display

    assert display.span(12981 * H + 9 * M) == "540天21小时"
    assert display.span(5 * H + 7 * M) == "5小时07分"
    assert display.span(25 * M + timedelta(seconds=59)) == "25分"
    assert display.relative(-(12981 * H + 9 * M)) == "已过 540天21小时"
    assert display.relative(90 * M) == "还有 1小时30分"
    assert display.ago(-28 * M, drill=True) == "演练时间"
    assert display.ago(-28 * M) == "刚刚"
    assert display.ago(3 * H) == "3小时00分前"
    assert display.before_onset(-12 * M) == "发生后 12分"


def test_5_status_shows_names_and_dialled_numbers_of_the_shipped_directory(
    tmp_path: Path,
) -> None:
    rows = [
        line.split(",")
        for line in (REPO / "contacts" / "433122-luxi.csv").read_text("utf-8").splitlines()[1:]
    ]
    sc = Scenario(tmp_path, rows=rows, start=SENT)

    async def fill() -> None:
        async with sc:
            await sc.arrive(cap_xml(KEY, SENT, geocodes=("433122101201",)))  # 马王溪村
            await sc.run_until(SENT + 50 * M)  # nobody answers: the duty office is being called

    asyncio.run(fill())
    config = str(sc.config())
    res = cli("status", KEY, "--config", config, "--clock-file", clock_file(tmp_path, SENT + H))
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "瞿学文" in out and "c-433122101201-a1" not in out  # the village A by name
    assert "0743-4222110" in out and "+867434222110" not in out  # the duty office's landline
    assert "13736911882" in out and "+8613736911882" not in out
    later = clock_file(tmp_path, SENT + 12981 * H + 9 * M)
    title = cli("status", KEY, "--config", config, "--clock-file", later).stdout
    assert "（已过 540天21小时）" in title and "12981h" not in title


def test_5_operator_errors_are_chinese_first(tmp_path: Path) -> None:
    sc = silent_county(tmp_path, until=10 * M)
    config = str(sc.config())
    responders = tmp_path / "bad.csv"
    responders.write_text("who,when\n", encoding="utf-8")
    runs = [
        ("status", "--watch", "--json", "--config", config),
        ("status", "--pending", "--config", config),
        ("unreached", "--county", "43x", "--config", config),
        ("report", str(tmp_path / "missing.json"), "--config", config),
        ("report", KEY, "--format", "csv", "--json", "--config", config),
        ("plan", str(REPO / "examples/feed/43312241600000_20250614081500.xml"), "--at", "x"),
        ("drill", "simulate", "--feed", str(tmp_path / "none"), "--contacts", str(sc.contacts),
         "--responders", str(responders), "--report", str(tmp_path / "r.json")),
        ("drill", "simulate", "--feed", str(REPO / "examples/feed"), "--contacts",
         str(sc.contacts), "--responders", str(responders), "--report", str(tmp_path / "r.json")),
    ]  # fmt: skip
    for args in runs:
        res = cli(*args)
        assert res.exit_code == 2, (args, res.output)
        (line,) = res.stderr.splitlines()
        assert line.startswith("warnd: ") and "Traceback" not in line
        assert chinese_first(line[len("warnd: ") :]), (args, line)


def chinese_first(message: str) -> bool:
    """The message (after the file it names, if any: ``/path/f.csv:1: ...``) starts in Chinese."""
    text = re.sub(r"^/\S*?(:\d+)?: (\S+: )?", "", message)
    return "\u4e00" <= text[:1] <= "\u9fff"


# --- 8. drill simulate: responders and contacts are checked; --feed a b; --json everywhere -------


def drill_args(tmp: Path, contacts: Path, responders: str, *feeds: str) -> list[str]:
    csv_file = tmp / "responders.csv"
    csv_file.write_text(responders, encoding="utf-8")
    out = ["drill", "simulate", "--feed", *feeds, "--contacts", str(contacts)]
    return [*out, "--responders", str(csv_file), "--report", str(tmp / "drill.json")]


def test_8_a_responder_not_in_the_directory_is_an_error(tmp_path: Path) -> None:
    sc = Scenario(tmp_path, rows=county_rows(townships=1, villages=1))
    (tmp_path / "w.xml").write_bytes(cap_xml(KEY, SENT))
    rows = "contact_id,ack_after\nc-433122-a,2m\nc-433122-z,3m\n"
    res = cli(*drill_args(tmp_path, sc.contacts, rows, str(tmp_path / "w.xml")))
    assert res.exit_code == 2 and res.stdout == ""
    (line,) = res.stderr.splitlines()
    assert "responders.csv:3: contact_id: 通讯录中没有此联系人" in line and "c-433122-z" in line
    assert not (tmp_path / "drill.json").exists()


def test_8_a_broken_contacts_folder_is_an_error_not_a_warning(tmp_path: Path) -> None:
    sc = Scenario(tmp_path, rows=county_rows(townships=1, villages=1))
    with (sc.contacts / "contacts.csv").open("a", encoding="utf-8") as f:
        f.write("c-433122-x,433122,泸溪县,county,A,防汛责任人,某人,12345,\n")  # a bad number
    (tmp_path / "w.xml").write_bytes(cap_xml(KEY, SENT))
    res = cli(*drill_args(tmp_path, sc.contacts, "contact_id,ack_after\n", str(tmp_path / "w.xml")))
    assert res.exit_code == 2 and res.stdout == ""
    (line,) = res.stderr.splitlines()
    assert line.startswith("warnd: 通讯录有 1 个问题") and "warnd contacts check" in line
    assert not (tmp_path / "drill.json").exists()


def test_8_several_feeds_after_one_flag_and_json_output(tmp_path: Path) -> None:
    sc = Scenario(tmp_path, rows=county_rows(townships=1, villages=1))
    first, update = tmp_path / "a.xml", tmp_path / "b.xml"
    first.write_bytes(cap_xml(KEY, SENT, onset=SENT + 7 * H))
    sender = "433122_Meteorological_Observatory"
    update.write_bytes(
        cap_xml(
            "43312241600006_20250704091500",
            SENT + H,
            onset=SENT + 8 * H,
            msg_type="Update",
            references=[(sender, KEY, SENT)],
        )
    )
    rows = "contact_id,ack_after\nc-433122-a,2m\n"
    one_flag = cli(*drill_args(tmp_path, sc.contacts, rows, str(first), str(update)), "--json")
    assert one_flag.exit_code == 0, one_flag.output
    out = json.loads(one_flag.stdout)
    assert out["report"] == str(tmp_path / "drill.json")
    assert out["summary"]["messages"] == {"accepted": 2} and out["summary"]["warnings"] == 1
    args = drill_args(tmp_path, sc.contacts, rows, str(first))
    repeated = cli(*args[:4], "--feed", str(update), *args[4:], "--json")
    assert repeated.exit_code == 0, repeated.output
    assert json.loads(repeated.stdout)["summary"]["messages"] == out["summary"]["messages"]


def test_8_json_on_report_and_db_upgrade(tmp_path: Path) -> None:
    sc = silent_county(tmp_path, until=10 * M)
    config = str(sc.config())
    assert ok_json("report", KEY, "--config", config)["warnings"][0]["key"] == KEY
    assert ok_json("db", "upgrade", "--config", config)["current"] is True
    assert ok_json("db", "status", "--config", config)["current"] is True
