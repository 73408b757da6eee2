"""``drill simulate``: every sentence of contracts §3, through the real engine in virtual time."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from drill_rig import SENT, Scenario, at, of
from factory import cap_xml, county_rows

from warnd.cli import main

H = timedelta(hours=1)
M = timedelta(minutes=1)
ID = "43312241600000_20250614080000"
SENDER = "433122_Meteorological_Observatory"


def firsts(report: dict[str, Any]) -> dict[str, datetime]:
    """Time of the first stage attempt per level."""
    out: dict[str, datetime] = {}
    for e in of(report, "notify", rung="stage", attempt=1):
        out.setdefault(e["level"], at(e))
    return out


@pytest.fixture
def sc(tmp_path: Path) -> Scenario:
    return Scenario(tmp_path)


async def test_stages_fire_at_onset_minus_lead(sc: Scenario) -> None:
    onset = SENT + 8 * H
    sc.message(cap_xml(ID, SENT, onset=onset))
    sc.responders = {"c-433122-a": "1m", "c-433122100-a": "1m", "c-433122100200-a": "1m"}
    r = await sc.run()
    assert firsts(r) == {"county": onset - 6 * H, "township": onset - 3 * H, "village": onset - H}
    assert r["summary"]["escalations"] == {}
    assert all(e["warning"] == ID for e in r["events"])


async def test_late_warning_fires_past_stages_at_arrival(sc: Scenario) -> None:
    onset = SENT + 2 * H  # county (6h) and township (3h) stages are already past
    sc.message(cap_xml(ID, SENT, onset=onset))
    r = await sc.run()
    assert firsts(r) == {"county": SENT, "township": SENT, "village": onset - H}


@pytest.mark.parametrize(
    ("kw", "reference"),
    [({"effective": SENT + 7 * H}, SENT + 7 * H), ({}, SENT)],
    ids=["no-onset-uses-effective", "no-onset-no-effective-uses-sent"],
)
async def test_reference_time_without_onset(
    sc: Scenario, kw: dict[str, Any], reference: datetime
) -> None:
    sc.message(cap_xml(ID, SENT, **kw))
    r = await sc.run()
    expect = {
        lvl: max(reference - lead, SENT)
        for lvl, lead in (("county", 6 * H), ("township", 3 * H), ("village", H))
    }
    assert firsts(r) == expect


async def test_expired_on_arrival_is_recorded_not_sent(sc: Scenario) -> None:
    sc.message(cap_xml(ID, SENT, onset=SENT + 8 * H, expires=SENT - M))
    r = await sc.run()
    skips = of(r, "skip")
    assert len(skips) == 1 and "expire" in skips[0]["reason"]
    assert of(r, "notify") == [] and r["summary"]["skipped"] == 1


async def test_below_min_severity_is_recorded_not_sent(sc: Scenario) -> None:
    sc.message(cap_xml(ID, SENT, onset=SENT + 8 * H, severity="Minor"))
    r = await sc.run()
    assert [e["code"] for e in of(r, "skip")] == ["below_threshold"]
    assert of(r, "notify") == []


async def test_duplicate_message_is_handled_once(sc: Scenario) -> None:
    data = cap_xml(ID, SENT, onset=SENT + 8 * H)
    sc.message(data)
    sc.message(data)
    sc.responders = {"c-433122-a": "1m"}
    r = await sc.run()
    assert r["summary"]["duplicates"] == 1
    assert len(of(r, "notify", level="county", rung="stage", attempt=1)) == 1


async def test_redials_then_backup_superior_duty(sc: Scenario) -> None:
    sc.message(cap_xml(ID, SENT, onset=SENT + 8 * H))
    r = await sc.run()
    v = "433122100200"
    start = SENT + 7 * H
    stage = of(r, "notify", division=v, rung="stage")
    assert [(e["attempt"], at(e)) for e in stage] == [
        (1, start),
        (2, start + 5 * M),
        (3, start + 10 * M),
    ]
    esc = of(r, "escalate", division=v)
    assert [(e["rung"], at(e)) for e in esc] == [
        ("backup", start + 15 * M),
        ("superior", start + 30 * M),
        ("duty", start + 45 * M),
    ]
    assert [e["contact_id"] for e in of(r, "notify", division=v, attempt=1)] == [
        "c-433122100200-a",
        "c-433122100200-b",
        "c-433122100-a",
        "c-433122-duty",
    ]
    unreached = of(r, "unreached", division=v)
    assert len(unreached) == 1 and at(unreached[0]) == start + 45 * M
    assert unreached[0]["contact_id"] is None
    # after the last rung the ladder ends: nothing more for that village
    assert max(at(e) for e in r["events"] if e["division"] == v) == start + 55 * M


async def test_ack_stops_escalation(sc: Scenario) -> None:
    sc.message(cap_xml(ID, SENT, onset=SENT + 8 * H))
    sc.responders = {"c-433122100200-b": "7m"}  # the backup answers
    r = await sc.run()
    v = "433122100200"
    acks = of(r, "ack", division=v)
    assert [(e["contact_id"], e["rung"]) for e in acks] == [("c-433122100200-b", "backup")]
    assert at(acks[0]) == SENT + 7 * H + 15 * M + 7 * M
    assert of(r, "escalate", division=v, rung="superior") == []
    assert of(r, "notify", division=v, rung="backup", attempt=3) == []  # answered after attempt 2


async def test_answer_only_counts_before_the_call_fails(sc: Scenario) -> None:
    sc.message(cap_xml(ID, SENT, onset=SENT + 8 * H))
    sc.responders = {"c-433122100200-a": "15m"}  # exactly when the call fails: too late
    r = await sc.run()
    assert of(r, "ack", division="433122100200") == []
    assert of(r, "escalate", division="433122100200", rung="backup")


async def test_every_a_person_is_called_to_the_end(tmp_path: Path) -> None:
    rows = county_rows(townships=1, villages=1)
    rows.append(
        [
            "c-433122100200-a2",
            "433122100200",
            "村0-0",
            "village",
            "A",
            "灾害信息员",
            "信息员",
            "13900000001",
            "",
        ]
    )
    sc = Scenario(tmp_path, rows)
    sc.message(cap_xml(ID, SENT, onset=SENT + 8 * H))
    sc.responders = {"c-433122100200-a": "1m"}
    r = await sc.run()
    a2 = of(r, "notify", contact_id="c-433122100200-a2")
    assert [e["attempt"] for e in a2] == [1, 2, 3]  # reached by a1, a2 still woken
    assert of(r, "escalate", division="433122100200") == []


async def test_update_moves_onset_of_unfired_stages(sc: Scenario) -> None:
    onset = SENT + 8 * H
    sc.message(cap_xml(ID, SENT, onset=onset))
    sent2 = SENT + 3 * H  # after the county stage (T-6h = +2h), before the township one
    new_onset = onset + 2 * H
    sc.message(
        cap_xml(
            "43312241600000_20250614110000",
            sent2,
            onset=new_onset,
            msg_type="Update",
            references=[(SENDER, ID, "2025-06-14T08:00:00+08:00")],
        )
    )
    sc.responders = {"c-433122-a": "1m"}
    r = await sc.run()
    assert firsts(r) == {
        "county": onset - 6 * H,
        "township": new_onset - 3 * H,
        "village": new_onset - H,
    }
    updates = of(r, "update")
    assert [e["contact_id"] for e in updates] == ["c-433122-a"]  # the notified get the update
    assert at(updates[0]) == sent2 and updates[0]["warning"] == ID


async def test_update_shrinks_area_of_unfired_stages(tmp_path: Path) -> None:
    sc = Scenario(tmp_path, county_rows(townships=2, villages=1))
    sc.message(cap_xml(ID, SENT, onset=SENT + 8 * H))
    sc.message(
        cap_xml(
            "u1",
            SENT + 3 * H,
            onset=SENT + 8 * H,
            msg_type="Update",
            geocodes=["433122101000"],
            references=[(SENDER, ID, SENT)],
        )
    )
    r = await sc.run()
    assert {e["division"] for e in of(r, "notify", level="township", rung="stage")} == {"433122101"}
    assert {e["division"] for e in of(r, "notify", level="village", rung="stage")} == {
        "433122101200"
    }


async def test_update_with_higher_severity_calls_notified_divisions_again(sc: Scenario) -> None:
    sc.message(cap_xml(ID, SENT, onset=SENT + 8 * H, severity="Moderate"))
    sc.message(
        cap_xml(
            "u1",
            SENT + 3 * H,
            onset=SENT + 8 * H,
            msg_type="Update",
            severity="Extreme",
            references=[(SENDER, ID, SENT)],
        )
    )
    sc.responders = {"c-433122-a": "1m"}
    r = await sc.run()
    county = of(r, "notify", division="433122", rung="stage", attempt=1)
    assert [at(e) for e in county] == [SENT + 2 * H, SENT + 3 * H]  # the re-ack starts at arrival
    assert len(of(r, "ack", division="433122")) == 2


async def test_cancel_lifts_and_stops_everything(sc: Scenario) -> None:
    sc.message(cap_xml(ID, SENT, onset=SENT + 8 * H))
    sc.message(
        cap_xml("c1", SENT + 5 * H + 2 * M, msg_type="Cancel", references=[(SENDER, ID, SENT)])
    )
    r = await sc.run()
    cancel_at = SENT + 5 * H + 2 * M
    lifts = of(r, "cancel")
    # notified so far: county A (then B, superior... ladder of the county) and township A
    assert {e["contact_id"] for e in lifts} >= {"c-433122-a", "c-433122100-a"}
    assert all(at(e) == cancel_at for e in lifts)
    assert [e for e in r["events"] if at(e) > cancel_at] == []
    assert of(r, "notify", level="village") == []
    assert r["summary"]["cancelled"] == 1


async def test_update_sent_wrong_in_reference_still_matches(sc: Scenario) -> None:
    sc.message(cap_xml(ID, SENT, onset=SENT + 8 * H))
    sc.message(
        cap_xml(
            "c1",
            SENT + H,
            msg_type="Cancel",
            references=[(SENDER, ID, "2025-06-14T09:99:00+08:00")],
        )
    )
    r = await sc.run()
    assert r["summary"]["cancelled"] == 1 and r["summary"]["warnings"] == 1


async def test_update_of_unknown_warning_is_a_new_warning(sc: Scenario) -> None:
    sc.message(
        cap_xml(
            "u9",
            SENT,
            onset=SENT + 8 * H,
            msg_type="Update",
            references=[(SENDER, "never-seen", SENT)],
        )
    )
    r = await sc.run()
    assert r["summary"]["warnings"] == 1
    assert {e["warning"] for e in of(r, "notify")} == {"u9"}


async def test_exercise_runs_the_chain_marked_as_drill(sc: Scenario) -> None:
    sc.message(cap_xml(ID, SENT, onset=SENT + 8 * H, status="Exercise"))
    r = await sc.run()
    assert r["summary"]["drill"] is True and of(r, "notify")


def test_cli_writes_the_report(tmp_path: Path) -> None:
    sc = Scenario(tmp_path)
    sc.message(cap_xml(ID, SENT, onset=SENT + 8 * H))
    (tmp_path / "r.csv").write_text("contact_id,ack_after\nc-433122-a,90s\n", encoding="utf-8")
    out = tmp_path / "out" / "report.json"
    res = CliRunner().invoke(
        main,
        [
            "drill",
            "simulate",
            "--feed",
            str(sc.feed),
            "--contacts",
            str(tmp_path / "contacts"),
            "--responders",
            str(tmp_path / "r.csv"),
            "--report",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text(encoding="utf-8"))
    first = report["events"][0]
    assert set(first) >= {"at", "type", "warning", "contact_id", "division", "level"}
    assert report["summary"]["persons_acknowledged"] == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [("who,when\nx,1m\n", "contact_id,ack_after"), ("contact_id,ack_after\nx,soon\n", ":2:")],
)
def test_cli_bad_responders_is_one_clear_line(tmp_path: Path, content: str, message: str) -> None:
    sc = Scenario(tmp_path)
    sc.message(cap_xml(ID, SENT, onset=SENT + 8 * H))
    (tmp_path / "r.csv").write_text(content, encoding="utf-8")
    res = CliRunner().invoke(
        main,
        [
            "drill",
            "simulate",
            "--feed",
            str(sc.feed),
            "--contacts",
            str(tmp_path / "contacts"),
            "--responders",
            str(tmp_path / "r.csv"),
            "--report",
            str(tmp_path / "x.json"),
        ],
    )
    assert res.exit_code == 2
    assert message in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()
