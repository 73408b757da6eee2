"""``warnd plan CAP_FILE --contacts PATH [--at TIME] --json`` (contracts §4)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result
from factory import cap_xml, county_rows, write_contacts
from inspect_rig import CONTRACT_KEYS
from samples import CAP

from warnd.cli import main

CST = ZoneInfo("Asia/Shanghai")
T = datetime(2025, 6, 14, 14, 0, tzinfo=CST)
SENT = T - timedelta(hours=9)
ISO_WITH_OFFSET = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d")
INSPECT_KEYS = set(CONTRACT_KEYS) - {"file", "ok"}  # a plan names the warning, not a file
VILLAGES = ["433122100200", "433122100201", "433122101200", "433122101201"]


@pytest.fixture(autouse=True)
def no_default_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run where no config/warnd.toml exists, so the defaults of contracts §2 apply."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


@pytest.fixture
def contacts(tmp_path: Path) -> Path:
    return write_contacts(tmp_path / "contacts", county_rows())


def write_cap(tmp_path: Path, name: str = "w.xml", **kw: Any) -> Path:
    kw.setdefault("onset", T)
    kw.setdefault("expires", T + timedelta(hours=12))
    path = tmp_path / name
    path.write_bytes(cap_xml(kw.pop("identifier", "w1"), SENT, **kw))
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["plan", *args])


def plan_json(cap_file: Path, contacts: Path, *extra: str) -> dict[str, Any]:
    result = run(str(cap_file), "--contacts", str(contacts), "--json", *extra)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    doc: dict[str, Any] = json.loads(lines[0])
    return doc


def at(value: datetime) -> str:
    return value.isoformat()


def assert_one_line_failure(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("warnd: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr


def test_county_warning_eight_hours_ahead(tmp_path: Path, contacts: Path) -> None:
    doc = plan_json(write_cap(tmp_path), contacts, "--at", at(T - timedelta(hours=8)))
    assert {"warning", "dispatch", "reason", "stages"} <= doc.keys()
    assert doc["warning"].keys() >= INSPECT_KEYS
    assert doc["warning"]["identifier"] == "w1"
    assert doc["warning"]["geocodes"] == ["433122"]
    assert (doc["dispatch"], doc["reason"]) == (True, None)
    assert [
        {k: s[k] for k in ("level", "due", "divisions", "recipients")} for s in doc["stages"]
    ] == [
        {
            "level": "county",
            "due": "2025-06-14T08:00:00+08:00",
            "divisions": ["433122"],
            "recipients": ["c-433122-a"],
        },
        {
            "level": "township",
            "due": "2025-06-14T11:00:00+08:00",
            "divisions": ["433122100", "433122101"],
            "recipients": ["c-433122100-a", "c-433122101-a"],
        },
        {
            "level": "village",
            "due": "2025-06-14T13:00:00+08:00",
            "divisions": VILLAGES,
            "recipients": [f"c-{v}-a" for v in VILLAGES],
        },
    ]
    assert [s["late"] for s in doc["stages"]] == [False, False, False]


def test_arriving_two_hours_before_onset(tmp_path: Path, contacts: Path) -> None:
    arrival = T - timedelta(hours=2)
    doc = plan_json(write_cap(tmp_path), contacts, "--at", at(arrival))
    assert [(s["level"], s["due"], s["late"]) for s in doc["stages"]] == [
        ("county", "2025-06-14T12:00:00+08:00", True),
        ("township", "2025-06-14T12:00:00+08:00", True),
        ("village", "2025-06-14T13:00:00+08:00", False),
    ]


def test_due_strings_are_iso_8601_with_an_offset(tmp_path: Path, contacts: Path) -> None:
    # a UTC arrival and an onset given in +08:00: every due is an aware ISO 8601 string
    for arrival in ("2025-06-14T04:00:00Z", "2025-06-14T00:00:00+00:00"):
        doc = plan_json(write_cap(tmp_path), contacts, "--at", arrival)
        dues = [s["due"] for s in doc["stages"]]
        assert all(ISO_WITH_OFFSET.fullmatch(d) for d in dues), dues
        parsed = [datetime.fromisoformat(d) for d in dues]
        arrived = datetime.fromisoformat(arrival.replace("Z", "+00:00"))
        assert all(p >= arrived for p in parsed)


def test_at_without_offset_is_read_in_the_configured_timezone(
    tmp_path: Path, contacts: Path
) -> None:
    cap_file = write_cap(tmp_path)
    with_offset = plan_json(cap_file, contacts, "--at", "2025-06-14T12:00:00+08:00")
    # no config: Asia/Shanghai, the default timezone
    naive = plan_json(cap_file, contacts, "--at", "2025-06-14T12:00:00")
    assert naive["stages"] == with_offset["stages"]
    # a config with timezone = "UTC": 12:00 is 20:00 in Shanghai, after onset: all at arrival
    config = tmp_path / "warnd.toml"
    config.write_text('timezone = "UTC"\n', encoding="utf-8")
    utc = plan_json(cap_file, contacts, "--at", "2025-06-14T12:00:00", "--config", str(config))
    assert [(s["due"], s["late"]) for s in utc["stages"]] == [
        ("2025-06-14T20:00:00+08:00", True)
    ] * 3


def test_default_arrival_is_now(tmp_path: Path, contacts: Path) -> None:
    onset = (datetime.now(CST) + timedelta(days=30)).replace(microsecond=0)
    cap_file = write_cap(tmp_path, onset=onset, expires=onset + timedelta(hours=6))
    doc = plan_json(cap_file, contacts)
    assert doc["dispatch"] is True
    assert [datetime.fromisoformat(s["due"]) for s in doc["stages"]] == [
        onset - timedelta(hours=h) for h in (6, 3, 1)
    ]


def test_config_policy_applies(tmp_path: Path, contacts: Path) -> None:
    config = tmp_path / "warnd.toml"
    config.write_text(
        '[[stages]]\nlevel = "township"\nlead = "2h"\n[trigger]\nmin_severity = "Extreme"\n',
        encoding="utf-8",
    )
    cap_file = write_cap(tmp_path)
    early = at(T - timedelta(hours=8))
    doc = plan_json(cap_file, contacts, "--at", early, "--config", str(config))
    assert doc["dispatch"] is False and "min_severity" in doc["reason"]
    extreme = write_cap(tmp_path, "x.xml", severity="Extreme")
    doc = plan_json(extreme, contacts, "--at", early, "--config", str(config))
    assert [(s["level"], s["due"]) for s in doc["stages"]] == [
        ("township", "2025-06-14T12:00:00+08:00")
    ]


def test_no_onset_uses_effective_then_sent(tmp_path: Path, contacts: Path) -> None:
    effective = T - timedelta(hours=2)  # 12:00: every stage due after SENT (05:00)
    cap_file = write_cap(tmp_path, onset=None, effective=effective)
    doc = plan_json(cap_file, contacts, "--at", at(SENT))
    assert doc["warning"]["onset"] is None
    assert [s["due"] for s in doc["stages"]] == [
        at(effective - timedelta(hours=h)) for h in (6, 3, 1)
    ]
    cap_file = write_cap(tmp_path, onset=None)
    doc = plan_json(cap_file, contacts, "--at", at(SENT))
    assert [s["due"] for s in doc["stages"]] == [at(SENT)] * 3


@pytest.mark.parametrize(
    ("kw", "arrival", "needle"),
    [
        ({"expires": T - timedelta(hours=1)}, T, "expire"),
        ({"severity": "Minor"}, SENT, "min_severity"),
    ],
    ids=["expired", "below-min-severity"],
)
def test_not_dispatched_with_a_reason(
    tmp_path: Path, contacts: Path, kw: dict[str, Any], arrival: datetime, needle: str
) -> None:
    doc = plan_json(write_cap(tmp_path, **kw), contacts, "--at", at(arrival))
    assert doc["dispatch"] is False
    assert needle in doc["reason"]
    assert doc["stages"] == []


def test_cancel_is_not_dispatched(tmp_path: Path, contacts: Path) -> None:
    sender = "433122_Meteorological_Observatory"
    cap_file = write_cap(
        tmp_path, identifier="w1-c", msg_type="Cancel", references=[(sender, "w1", SENT)]
    )
    doc = plan_json(cap_file, contacts, "--at", at(SENT))
    assert (doc["dispatch"], doc["stages"]) == (False, [])
    assert doc["reason"]
    assert doc["warning"]["references"] == [
        {"sender": sender, "identifier": "w1", "sent": SENT.isoformat()}
    ]


def test_township_code_overlaps_county_itself_and_its_villages(
    tmp_path: Path, contacts: Path
) -> None:
    cap_file = write_cap(tmp_path, geocodes=["433122101000"])
    doc = plan_json(cap_file, contacts, "--at", at(SENT))
    assert [(s["level"], s["divisions"]) for s in doc["stages"]] == [
        ("county", ["433122"]),
        ("township", ["433122101"]),
        ("village", VILLAGES[2:]),
    ]


def test_prefecture_code_covers_everything_under_it(tmp_path: Path) -> None:
    rows = county_rows("433122", 1, 1) + county_rows("433101", 1, 1) + county_rows("433001", 1, 1)
    contacts = write_contacts(tmp_path / "contacts", rows)
    doc = plan_json(write_cap(tmp_path, geocodes=["433100"]), contacts, "--at", at(SENT))
    assert [s["divisions"] for s in doc["stages"]] == [
        ["433101", "433122"],
        ["433101100", "433122100"],
        ["433101100200", "433122100200"],
    ]
    assert doc["unmatched"] == []


def test_unknown_geocodes_are_reported(tmp_path: Path, contacts: Path) -> None:
    cap_file = write_cap(tmp_path, geocodes=["433122000000", "HNKFQ01", "439999000000"])
    doc = plan_json(cap_file, contacts, "--at", at(SENT))
    assert doc["dispatch"] is True
    assert sorted(doc["unmatched"]) == ["439999", "HNKFQ01"]
    only_letters = write_cap(tmp_path, "l.xml", geocodes=["HNKFQ01"])
    doc = plan_json(only_letters, contacts, "--at", at(SENT))
    assert (doc["dispatch"], doc["stages"], doc["unmatched"]) == (False, [], ["HNKFQ01"])
    assert doc["reason"]


def test_a_warning_of_another_province_against_this_directory(
    tmp_path: Path, contacts: Path
) -> None:
    # Yichang (420502), CAP 1.1: a real shape, no division of this directory
    other = CAP / "valid" / "yichang-thunder-cap11.xml"
    doc = plan_json(other, contacts, "--at", "2025-07-08T15:05:00+08:00")
    assert doc["warning"]["geocodes"] == ["420502"]
    assert (doc["dispatch"], doc["stages"], doc["unmatched"]) == (False, [], ["420502"])
    assert "420502" in doc["reason"]


def test_the_repository_rainstorm_sample_plans_the_631_timetable(tmp_path: Path) -> None:
    """The Chinese-profile sample against the shipped Luxi directory, arriving at its sent."""
    shipped = Path(__file__).resolve().parents[1] / "contacts"
    sample = CAP / "valid" / "luxi-rainstorm-alert.xml"
    doc = plan_json(sample, shipped, "--at", "2025-06-14T08:15:00+08:00")
    assert doc["dispatch"] is True and doc["reference"]["kind"] == "onset"
    assert [(s["level"], s["due"], s["late"], len(s["divisions"])) for s in doc["stages"]] == [
        ("county", "2025-06-14T08:15:00+08:00", True, 1),
        ("township", "2025-06-14T11:00:00+08:00", False, 4),
        ("village", "2025-06-14T13:00:00+08:00", False, 12),
    ]


def test_multi_info_message_uses_the_highest_severity(tmp_path: Path, contacts: Path) -> None:
    doc_text = cap_xml("multi", SENT, onset=T, severity="Minor").decode()
    head, rest = doc_text.split("<info>", 1)
    body, tail = rest.split("</info>", 1)
    english = body.replace("zh-CN", "en-US").replace(">Minor<", ">Severe<")
    cap_file = tmp_path / "multi.xml"
    cap_file.write_text(f"{head}<info>{body}</info><info>{english}</info>{tail}", "utf-8")
    doc = plan_json(cap_file, contacts, "--at", at(SENT))
    assert doc["warning"]["severity"] == "Severe"
    assert doc["dispatch"] is True and len(doc["stages"]) == 3


def test_table_output(tmp_path: Path, contacts: Path) -> None:
    result = run(str(write_cap(tmp_path)), "--contacts", str(contacts), "--at", at(SENT))
    assert result.exit_code == 0, result.stderr
    assert "631 叫应计划" in result.stdout and "阶段" in result.stdout
    expired = write_cap(tmp_path, "e.xml", expires=SENT)
    result = run(str(expired), "--contacts", str(contacts), "--at", at(SENT))
    assert result.exit_code == 0 and "不调度" in result.stdout


@pytest.mark.parametrize("bad", ["yesterday", "2025-13-01T00:00:00+08:00", "14/06/2025 08:00"])
def test_bad_at_is_one_line_exit_2(tmp_path: Path, contacts: Path, bad: str) -> None:
    result = run(str(write_cap(tmp_path)), "--contacts", str(contacts), "--at", bad, "--json")
    assert_one_line_failure(result, "--at")


def test_missing_contacts_is_one_line_exit_2(tmp_path: Path) -> None:
    cap_file = write_cap(tmp_path)
    assert_one_line_failure(run(str(cap_file), "--at", at(SENT), "--json"), "contacts")
    gone = tmp_path / "nowhere"
    result = run(str(cap_file), "--contacts", str(gone), "--at", at(SENT), "--json")
    assert_one_line_failure(result, str(gone))


@pytest.mark.parametrize(
    "content",
    [
        b"<alert>broken",
        b"<html><body>502 Bad Gateway</body></html>",
        b"",
        (CAP / "invalid" / "doctype-external-entity.xml").read_bytes(),
        (CAP / "invalid" / "update-without-references.xml").read_bytes(),
    ],
    ids=["unclosed", "html", "empty", "xxe", "update-without-references"],
)
def test_malformed_cap_is_one_line_exit_2(tmp_path: Path, contacts: Path, content: bytes) -> None:
    cap_file = tmp_path / "bad.xml"
    cap_file.write_bytes(content)
    result = run(str(cap_file), "--contacts", str(contacts), "--at", at(SENT), "--json")
    assert_one_line_failure(result, str(cap_file))


def test_unreadable_cap_file_is_one_line_exit_2(tmp_path: Path, contacts: Path) -> None:
    missing = tmp_path / "missing.xml"
    result = run(str(missing), "--contacts", str(contacts), "--json")
    assert_one_line_failure(result, str(missing))
