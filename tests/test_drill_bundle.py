"""``drill simulate`` with bundling (contracts §8): a person's attempts on several warnings due
together go out as one message; each call keeps its own ``notify`` event (all of one message
carry the same ``bundle`` id), its own ``ack``, and its own ladder."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from drill_rig import SENT, Scenario, at, of
from factory import cap_xml

from warnd.config.policy import AckPolicy, Policy

H = timedelta(hours=1)
M = timedelta(minutes=1)
W = 5 * M
IDS = (
    "43312241600000_20250614080000",
    "43312241600000_20250614080001",
    "43312241600000_20250614080002",
)
VILLAGE_A, VILLAGE_B = "c-433122100200-a", "c-433122100200-b"
TOWNSHIP_A, COUNTY_A = "c-433122100-a", "c-433122-a"


def bundled(span: timedelta = 2 * M) -> Policy:
    p = Policy.default()
    return replace(p, ack=AckPolicy(p.ack.window, p.ack.attempts, span))


def messages(report: dict[str, Any]) -> dict[tuple[datetime, str], list[dict[str, Any]]]:
    """The notify events per (time, person): what one message would carry."""
    out: dict[tuple[datetime, str], list[dict[str, Any]]] = defaultdict(list)
    for e in of(report, "notify"):
        out[(at(e), e["contact_id"])].append(e)
    return out


def three_warnings(sc: Scenario) -> None:
    """W1 fires every stage at once; W2's and W3's village stages are due 1 and 2 minutes
    later (their county and township stages fire at once too)."""
    sc.message(cap_xml(IDS[0], SENT, headline="暴雨橙色预警"))
    sc.message(cap_xml(IDS[1], SENT, onset=SENT + H + M, headline="山洪灾害气象风险预警"))
    sc.message(cap_xml(IDS[2], SENT, onset=SENT + H + 2 * M, headline="地质灾害气象风险预警"))


@pytest.fixture
def sc(tmp_path: Path) -> Scenario:
    return Scenario(tmp_path)


async def test_two_warnings_at_once_one_message_per_round_and_one_answer_for_both(
    sc: Scenario,
) -> None:
    sc.message(cap_xml(IDS[0], SENT))
    sc.message(cap_xml(IDS[1], SENT, headline="山洪灾害气象风险预警"))
    sc.responders = {COUNTY_A: "1m", TOWNSHIP_A: "2m", VILLAGE_A: "3m"}
    r = await sc.run(bundled())
    for (_t, _who), msg in messages(r).items():
        assert {e["warning"] for e in msg} == set(IDS[:2])
        assert len({e.get("bundle") for e in msg}) == 1 and msg[0].get("bundle")
    # one answer per person acknowledged both calls, each with its own ack event
    acks = of(r, "ack")
    assert sorted((e["contact_id"], e["warning"]) for e in acks) == sorted(
        (c, w) for c in (COUNTY_A, TOWNSHIP_A, VILLAGE_A) for w in IDS[:2]
    )
    assert {at(e) - SENT for e in acks if e["contact_id"] == VILLAGE_A} == {3 * M}
    assert of(r, "escalate") == []
    assert r["summary"]["attempts"] == 6 and r["summary"]["acknowledgements"] == 6


async def test_a_later_warning_bundles_the_redials_due_in_the_window(sc: Scenario) -> None:
    sc.message(cap_xml(IDS[0], SENT))
    sc.message(cap_xml(IDS[1], SENT + M, headline="山洪灾害气象风险预警"))
    r = await sc.run(bundled())
    village = sorted(
        (at(e) - SENT, e["warning"], e["attempt"], e.get("bundle") is not None)
        for e in of(r, "notify", contact_id=VILLAGE_A)
    )
    # the first attempts went out on their own (nothing else was due within 2 minutes); W2's
    # second attempt, due at 6m, went with W1's at 5m, and from then on they fall due together
    assert village == [
        (0 * M, IDS[0], 1, False),
        (1 * M, IDS[1], 1, False),
        (5 * M, IDS[0], 2, True),
        (5 * M, IDS[1], 2, True),
        (10 * M, IDS[0], 3, True),
        (10 * M, IDS[1], 3, True),
    ]
    # each call failed one window after its last attempt and escalated on its own ladder, to
    # the same backup at the same instant: one message
    esc = of(r, "escalate", rung="backup", level="village")
    assert sorted((at(e) - SENT, e["warning"]) for e in esc) == [(15 * M, IDS[0]), (15 * M, IDS[1])]
    backup = of(r, "notify", contact_id=VILLAGE_B, attempt=1)
    assert len(backup) == 2 and len({e["bundle"] for e in backup}) == 1
    assert {at(e) - SENT for e in backup} == {15 * M}


async def test_three_warnings_stage_due_in_the_window_starts_with_the_others(
    sc: Scenario,
) -> None:
    three_warnings(sc)
    sc.responders = {VILLAGE_A: "1m"}
    r = await sc.run(bundled())
    first = of(r, "notify", contact_id=VILLAGE_A)
    # W2's and W3's village stages (due at 1m and 2m) called the village's A person at 0 with
    # W1: one message, three calls; the stages called nobody again when they fired
    assert sorted((at(e) - SENT, e["warning"]) for e in first) == [(0 * M, w) for w in IDS]
    assert len({e["bundle"] for e in first}) == 1
    acks = of(r, "ack", contact_id=VILLAGE_A)
    assert sorted(e["warning"] for e in acks) == sorted(IDS)
    assert {at(e) - SENT for e in acks} == {M}
    # the village was reached on every warning: no escalation there
    assert of(r, "escalate", level="village") == []


async def test_three_warnings_nobody_answers_one_message_per_round_escalation_per_call(
    sc: Scenario,
) -> None:
    three_warnings(sc)
    r = await sc.run(bundled())
    msgs = messages(r)
    for (_t, _who), msg in msgs.items():
        assert {e["warning"] for e in msg} == set(IDS)  # every round: one message
        assert len({e["bundle"] for e in msg}) == 1
    village = sorted({t - SENT for (t, who) in msgs if who == VILLAGE_A})
    assert village == [0 * M, 5 * M, 10 * M]
    # every call escalated on its own ladder: backup, superior, duty, per warning and division
    for rung in ("backup", "superior", "duty"):
        esc = of(r, "escalate", rung=rung, level="village")
        assert sorted(e["warning"] for e in esc) == sorted(IDS)
        assert len({at(e) for e in esc}) == 1
    assert {e["warning"] for e in of(r, "unreached", level="village")} == set(IDS)
    # bundle ids name one message each: as many as (time, person) pairs
    assert len({e["bundle"] for e in of(r, "notify")}) == len(msgs)


async def test_bundle_off_is_unchanged(sc: Scenario) -> None:
    three_warnings(sc)
    sc.responders = {VILLAGE_A: "1m"}
    r = await sc.run()
    assert all("bundle" not in e for e in r["events"])
    first = sorted((at(e) - SENT, e["warning"]) for e in of(r, "notify", contact_id=VILLAGE_A))
    assert first == [(0 * M, IDS[0]), (M, IDS[1]), (2 * M, IDS[2])]
    # one answer acknowledges one call: the responder answered each of its own calls
    acks = of(r, "ack", contact_id=VILLAGE_A)
    assert sorted((at(e) - SENT, e["warning"]) for e in acks) == [
        (M, IDS[0]),
        (2 * M, IDS[1]),
        (3 * M, IDS[2]),
    ]


async def test_drill_and_real_warnings_never_share_a_message(sc: Scenario) -> None:
    sc.message(cap_xml(IDS[0], SENT))
    sc.message(cap_xml(IDS[1], SENT, status="Exercise"))
    r = await sc.run(bundled())
    assert all("bundle" not in e for e in of(r, "notify"))


def test_cli_drill_report_and_status_mark_the_bundled_attempts(tmp_path: Path) -> None:
    """``drill simulate`` under a config with ``[ack] bundle``; ``warnd report`` of its file
    counts the bundled attempts (JSON ``bundled``; a line on the terminal)."""
    import json

    from click.testing import CliRunner

    from warnd.cli import main

    sc = Scenario(tmp_path)
    three_warnings(sc)
    (tmp_path / "r.csv").write_text(f"contact_id,ack_after\n{VILLAGE_A},1m\n", encoding="utf-8")
    cfg = tmp_path / "warnd.toml"
    cfg.write_text('[ack]\nwindow = "5m"\nbundle = "2m"\n', encoding="utf-8")
    out = tmp_path / "drill.json"
    args = ["drill", "simulate", "--feed", str(sc.feed), "--contacts", str(tmp_path / "contacts")]
    args += ["--responders", str(tmp_path / "r.csv"), "--report", str(out), "--config", str(cfg)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    events = json.loads(out.read_text(encoding="utf-8"))["events"]
    assert {e["type"] for e in events if "bundle" in e} == {"notify"}
    rep = CliRunner().invoke(
        main, ["report", str(out), "--contacts", str(tmp_path / "contacts"), "--json"]
    )
    assert rep.exit_code == 0, rep.output
    village = [
        lv for lv in json.loads(rep.output)["warnings"][0]["levels"] if lv["level"] == "village"
    ]
    assert village[0]["bundled"] >= 1
    term = CliRunner().invoke(main, ["report", str(out), "--contacts", str(tmp_path / "contacts")])
    assert term.exit_code == 0 and "合并发送" in term.output


async def test_update_notices_go_together_and_keep_their_severity(sc: Scenario) -> None:
    sender = "433122_Meteorological_Observatory"
    sc.message(cap_xml(IDS[0], SENT))
    sc.message(cap_xml(IDS[1], SENT, headline="山洪灾害气象风险预警"))
    for i, w in enumerate(IDS[:2]):
        sc.message(cap_xml(f"{w}u{i}", SENT + M, msg_type="Update", references=[(sender, w, SENT)]))
    sc.responders = {COUNTY_A: "3m", TOWNSHIP_A: "3m", VILLAGE_A: "3m"}
    r = await sc.run(bundled())
    updates = of(r, "update")
    assert len(updates) == 6 and {e["severity"] for e in updates} == {"Severe"}
    assert all("bundle" not in e for e in updates)
