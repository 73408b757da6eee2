"""The pure 631 planner (contracts §3 "Stages"): who is called at which stage, and when."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from factory import HEADER, cap_xml, county_rows, phone, write_contacts

from warnd.config.policy import Policy
from warnd.core import cap
from warnd.core.chain.plan import Plan, decide, plan, reference_time, stage_due
from warnd.core.directory import Directory, load

CST = ZoneInfo("Asia/Shanghai")
T = datetime(2025, 6, 14, 14, 0, tzinfo=CST)  # onset of the rainstorm
SENT = T - timedelta(hours=9)
POLICY = Policy.default()

# county_rows(): 泸溪县 433122 with townships 433122100, 433122101, two villages each
COUNTY_A = ("c-433122-a",)
TOWNSHIPS = ("433122100", "433122101")
TOWNSHIP_A = ("c-433122100-a", "c-433122101-a")
VILLAGES = ("433122100200", "433122100201", "433122101200", "433122101201")
VILLAGE_A = tuple(f"c-{v}-a" for v in VILLAGES)


def directory_of(tmp_path: Path, *rows: list[list[str]]) -> Directory:
    write_contacts(tmp_path / "contacts", [r for part in rows for r in part])
    d, problems = load(tmp_path / "contacts")
    assert problems == []
    return d


@pytest.fixture
def luxi(tmp_path: Path) -> Directory:
    return directory_of(tmp_path, county_rows())


def alert(
    identifier: str = "w1",
    *,
    onset: datetime | None = T,
    expires: datetime | None = T + timedelta(hours=12),
    **kw: Any,
) -> cap.Alert:
    """A 泸溪县 rainstorm warning (Severe, geocode 433122000000) sent at SENT, onset T."""
    return cap.parse(cap_xml(identifier, SENT, onset=onset, expires=expires, **kw))


def stages(p: Plan) -> list[tuple[str, datetime, bool, tuple[str, ...], tuple[str, ...]]]:
    return [(s.level, s.due, s.late, s.divisions, s.recipients) for s in p.stages]


def test_county_warning_eight_hours_ahead_plans_the_631_timetable(luxi: Directory) -> None:
    p = plan(alert(), luxi, POLICY, T - timedelta(hours=8))
    assert p.dispatch and p.decision.reason is None
    assert (p.reference, p.reference_kind) == (T, "onset")
    assert stages(p) == [
        ("county", T - timedelta(hours=6), False, ("433122",), COUNTY_A),
        ("township", T - timedelta(hours=3), False, TOWNSHIPS, TOWNSHIP_A),
        ("village", T - timedelta(hours=1), False, VILLAGES, VILLAGE_A),
    ]
    assert [s.lead for s in p.stages] == [s.lead for s in POLICY.stages]
    assert p.unmatched == ()


def test_recipients_are_a_persons_only_in_division_then_file_order(tmp_path: Path) -> None:
    rows = county_rows()
    # a second A person (灾害信息员) in one village, listed after everybody else
    extra = ["c-extra-a2", "433122101201", "村1-1", "village", "A", "灾害信息员", "田七"]
    rows.append([*extra, phone(900), ""])
    d = directory_of(tmp_path, rows)
    p = plan(alert(), d, POLICY, T - timedelta(hours=8))
    village = p.stages[2]
    assert village.recipients == (*VILLAGE_A, "c-extra-a2")
    every = {r for s in p.stages for r in s.recipients}
    b_and_duty = {r[0] for r in rows if r[4] in ("B", "duty")}
    assert b_and_duty and not every & b_and_duty


def test_arriving_two_hours_before_onset_fires_passed_stages_at_arrival(luxi: Directory) -> None:
    arrival = T - timedelta(hours=2)
    p = plan(alert(), luxi, POLICY, arrival)
    assert stages(p) == [
        ("county", arrival, True, ("433122",), COUNTY_A),
        ("township", arrival, True, TOWNSHIPS, TOWNSHIP_A),
        ("village", T - timedelta(hours=1), False, VILLAGES, VILLAGE_A),
    ]


def test_stage_due_boundaries() -> None:
    lead = timedelta(hours=6)
    assert stage_due(T, lead, T - timedelta(hours=7)) == (T - lead, False)
    assert stage_due(T, lead, T - lead) == (T - lead, False)  # exactly on time: not late
    late = T - lead + timedelta(seconds=1)
    assert stage_due(T, lead, late) == (late, True)
    # an arrival given in UTC is shown in the warning's own offset, same instant
    due, was_late = stage_due(T, lead, late.astimezone(UTC))
    assert (due, was_late, due.utcoffset()) == (late, True, timedelta(hours=8))


def test_no_onset_uses_effective_then_sent(luxi: Directory) -> None:
    effective = T - timedelta(hours=2)
    a = alert(onset=None, effective=effective)
    assert reference_time(a) == (effective, "effective")
    p = plan(a, luxi, POLICY, SENT)
    assert p.reference_kind == "effective"
    assert [s.due for s in p.stages] == [effective - timedelta(hours=h) for h in (6, 3, 1)]

    b = alert(onset=None, effective=None)
    assert reference_time(b) == (SENT, "sent")
    p = plan(b, luxi, POLICY, SENT)
    assert p.reference_kind == "sent"
    assert [(s.due, s.late) for s in p.stages] == [(SENT, True)] * 3  # all passed: at arrival


def test_expired_on_arrival_is_not_dispatched(luxi: Directory) -> None:
    expires = T + timedelta(hours=1)
    for arrival in (expires, expires + timedelta(minutes=1)):
        p = plan(alert(expires=expires), luxi, POLICY, arrival)
        assert not p.dispatch and p.stages == ()
        assert p.decision.code == "expired"
        assert p.decision.reason is not None and "expire" in p.decision.reason
    assert plan(alert(expires=expires), luxi, POLICY, expires - timedelta(seconds=1)).dispatch


def test_below_min_severity_is_not_dispatched(luxi: Directory) -> None:
    p = plan(alert(severity="Minor"), luxi, POLICY, T - timedelta(hours=8))
    assert not p.dispatch and p.stages == ()
    assert p.decision.code == "below_threshold"
    assert p.decision.reason is not None and "min_severity" in p.decision.reason
    assert plan(alert(severity="Moderate"), luxi, POLICY, T - timedelta(hours=8)).dispatch
    severe_only = Policy(POLICY.stages, POLICY.ack, POLICY.ladder, "Severe")
    assert not plan(alert(severity="Moderate"), luxi, severe_only, SENT).dispatch
    assert plan(alert(severity="Extreme"), luxi, severe_only, SENT).dispatch


def test_cancel_is_not_dispatched(luxi: Directory) -> None:
    sender = "433122_Meteorological_Observatory"
    a = alert("w1-cancel", msg_type="Cancel", references=[(sender, "w1", SENT)])
    p = plan(a, luxi, POLICY, T - timedelta(hours=8))
    assert (p.dispatch, p.decision.code, p.stages) == (False, "cancel", ())
    assert p.decision.reason


def test_update_and_drills_are_dispatched(luxi: Directory) -> None:
    sender = "433122_Meteorological_Observatory"
    update = alert("w2", msg_type="Update", references=[(sender, "w1", SENT)])
    assert decide(update, POLICY, SENT).dispatch
    for status in ("Exercise", "Test"):
        assert plan(alert(status=status), luxi, POLICY, SENT).dispatch
    assert decide(alert(status="Draft"), POLICY, SENT).code == "not_a_warning"


def test_township_warning_overlaps_its_county_itself_and_its_villages(luxi: Directory) -> None:
    p = plan(alert(geocodes=("433122101000",)), luxi, POLICY, T - timedelta(hours=8))
    assert [(s.level, s.divisions, s.recipients) for s in p.stages] == [
        ("county", ("433122",), COUNTY_A),
        ("township", ("433122101",), ("c-433122101-a",)),
        ("village", VILLAGES[2:], VILLAGE_A[2:]),
    ]


def test_village_warning_overlaps_its_ancestors(luxi: Directory) -> None:
    p = plan(alert(geocodes=("433122100201",)), luxi, POLICY, T - timedelta(hours=8))
    assert [s.divisions for s in p.stages] == [("433122",), ("433122100",), ("433122100201",)]


def test_prefecture_code_covers_everything_under_it(tmp_path: Path) -> None:
    d = directory_of(
        tmp_path,
        county_rows("433122", 1, 1),
        county_rows("433101", 2, 1),
        county_rows("433001", 1, 1),  # 4330: another prefecture
    )
    p = plan(alert(geocodes=("433100",)), d, POLICY, T - timedelta(hours=8))
    assert [(s.level, s.divisions) for s in p.stages] == [
        ("county", ("433101", "433122")),
        ("township", ("433101100", "433101101", "433122100")),
        ("village", ("433101100200", "433101101200", "433122100200")),
    ]
    assert not any("433001" in r for s in p.stages for r in s.recipients)
    # the 12-digit padded spelling means the same prefecture
    padded = plan(alert(geocodes=("433100000000",)), d, POLICY, T - timedelta(hours=8))
    assert stages(padded) == stages(p)


def test_unknown_and_letter_geocodes_are_reported_never_a_crash(luxi: Directory) -> None:
    codes = ("433122000000", "HN-KFQ-01", "43312X000000", "439999000000")
    p = plan(alert(geocodes=codes), luxi, POLICY, T - timedelta(hours=8))
    assert p.dispatch
    assert [s.divisions for s in p.stages] == [("433122",), TOWNSHIPS, VILLAGES]
    assert set(p.unmatched) == {"HN-KFQ-01", "43312X000000", "439999"}


def test_only_unknown_geocodes_dispatch_nothing_with_a_reason(luxi: Directory) -> None:
    letters = plan(alert(geocodes=("HN-KFQ-01",)), luxi, POLICY, SENT)
    assert (letters.dispatch, letters.decision.code, letters.stages) == (False, "no_area", ())
    assert letters.unmatched == ("HN-KFQ-01",)
    elsewhere = plan(alert(geocodes=("110101000000",)), luxi, POLICY, SENT)
    assert (elsewhere.dispatch, elsewhere.decision.code) == (False, "no_division")
    assert elsewhere.unmatched == ("110101",)
    assert elsewhere.decision.reason is not None and "110101" in elsewhere.decision.reason


def multi_info(*severities: str) -> bytes:
    """One message, one info block per severity (zh-CN first, then en-US copies)."""
    doc = cap_xml("multi", SENT, onset=T, expires=T + timedelta(hours=12)).decode()
    head, rest = doc.split("<info>", 1)
    body, tail = rest.split("</info>", 1)
    blocks = []
    for i, severity in enumerate(severities):
        block = body.replace("<severity>Severe</severity>", f"<severity>{severity}</severity>")
        if i:
            block = block.replace("<language>zh-CN</language>", "<language>en-US</language>")
        blocks.append(f"<info>{block}</info>")
    return (head + "".join(blocks) + tail).encode()


def test_multi_info_message_uses_the_highest_severity(luxi: Directory) -> None:
    a = cap.parse(multi_info("Minor", "Severe", "Moderate"))
    assert len(a.infos) == 3 and a.severity == "Severe"
    severe_only = Policy(POLICY.stages, POLICY.ack, POLICY.ladder, "Severe")
    p = plan(a, luxi, severe_only, T - timedelta(hours=8))
    assert p.dispatch and [s.divisions for s in p.stages] == [("433122",), TOWNSHIPS, VILLAGES]
    low = cap.parse(multi_info("Minor", "Minor"))
    assert not plan(low, luxi, POLICY, T - timedelta(hours=8)).dispatch


def test_stages_follow_the_policy_timetable(luxi: Directory) -> None:
    from warnd.config.policy import StagePolicy

    custom = Policy(
        (StagePolicy("township", timedelta(minutes=90)), StagePolicy("village", timedelta(0))),
        POLICY.ack,
        POLICY.ladder,
        POLICY.min_severity,
    )
    p = plan(alert(), luxi, custom, T - timedelta(hours=8))
    assert [(s.level, s.due) for s in p.stages] == [
        ("township", T - timedelta(minutes=90)),
        ("village", T),
    ]


def test_a_division_without_rows_at_one_level_leaves_that_stage_empty(tmp_path: Path) -> None:
    # a directory that holds only the county row and its duty office (no townships, villages)
    path = tmp_path / "c.csv"
    path.write_text(
        HEADER
        + f"k-a,433122,泸溪县,county,A,指挥长,张三,{phone(1)},\n"
        + "k-duty,433122,泸溪县,county,duty,值班室,值班员,0743-4221234,\n",
        encoding="utf-8",
    )
    d, problems = load(path)
    assert problems == []
    p = plan(alert(), d, POLICY, T - timedelta(hours=8))
    assert [(s.level, s.divisions, s.recipients) for s in p.stages] == [
        ("county", ("433122",), ("k-a",)),
        ("township", (), ()),
        ("village", (), ()),
    ]
