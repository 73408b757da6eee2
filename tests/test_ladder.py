"""The ladder's rules (contracts §3, "Calls", "Reached", "Escalation ladder"), pure and fast."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from ladder_rig import FULL, RULES, People, W, run, sends

from warnd.core.chain.ladder import (
    ENDED,
    Acked,
    CallDue,
    DivisionState,
    Record,
    Rules,
    Start,
    Stop,
    next_due,
)

T0 = datetime(2025, 6, 14, 8, 0, tzinfo=UTC)


def records(cmds: list[object], kind: str) -> list[Record]:
    return [c for c in cmds if isinstance(c, Record) and c.type == kind]


def fail_call(
    div: DivisionState, key: str, start: datetime, rules: Rules = RULES, people: People = FULL
) -> tuple[DivisionState, list[object]]:
    """Let one call run out: attempts 2..n, then the failure one window after the last."""
    cmds: list[object] = []
    for k in range(1, rules.attempts + 1):
        div, out = run(div, CallDue(key), start + k * rules.window, people, rules)
        cmds += out
    return div, cmds


def test_start_calls_every_a_person_with_attempt_one() -> None:
    people = People({("v1", "stage"): ("a1", "a2")})
    div, cmds = run(DivisionState("v1", "village"), Start(), T0, people)
    assert sends(cmds) == [("a1", 1, "stage"), ("a2", 1, "stage")]
    assert [r.contact_id for r in records(cmds, "notify")] == ["a1", "a2"]
    assert next_due(div) == T0 + W
    assert div.round == 1 and div.rung == "stage"


def test_attempt_k_at_start_plus_k_minus_1_windows_then_fails() -> None:
    div, _ = run(DivisionState("v1", "village"), Start(), T0)
    key = div.calls[0].key
    div, c2 = run(div, CallDue(key), T0 + W)
    div, c3 = run(div, CallDue(key), T0 + 2 * W)
    assert sends(c2) == [("a1", 2, "stage")] and sends(c3) == [("a1", 3, "stage")]
    assert div.call(key).next_due_at == T0 + 3 * W  # the call fails at start + attempts*window
    div, c4 = run(div, CallDue(key), T0 + 3 * W)
    assert div.call(key).state == "failed"
    assert div.call(key).ended_at == T0 + 3 * W
    # ... and the division moves to the backup rung
    assert [r.data for r in records(c4, "escalate")] == [(("rung", "backup"),)]
    assert sends(c4) == [("b1", 1, "backup")]


def test_early_timer_is_ignored() -> None:
    div, _ = run(DivisionState("v1", "village"), Start(), T0)
    key = div.calls[0].key
    same, cmds = run(div, CallDue(key), T0 + W - timedelta(seconds=1))
    assert same == div and cmds == []


def test_ack_ends_the_call_and_reaches_the_division() -> None:
    div, _ = run(DivisionState("v1", "village"), Start(), T0)
    key = div.calls[0].key
    div, cmds = run(div, Acked(key, "ivr"), T0 + timedelta(minutes=2))
    assert div.reached and div.reached_by == "a1" and div.reached_source == "ivr"
    assert div.call(key).state == "acked" and next_due(div) is None
    assert [r.contact_id for r in records(cmds, "ack")] == ["a1"]
    later, more = run(div, CallDue(key), T0 + W)
    assert more == [] and later == div


def test_duplicate_ack_is_idempotent() -> None:
    div, _ = run(DivisionState("v1", "village"), Start(), T0)
    key = div.calls[0].key
    div, _ = run(div, Acked(key, "sms"), T0 + W)
    again, cmds = run(div, Acked(key, "sms"), T0 + 2 * W)
    assert cmds == [] and again == div


def test_every_a_call_runs_to_its_end_even_when_reached() -> None:
    people = People({("v1", "stage"): ("a1", "a2"), ("v1", "backup"): ("b1",)})
    div, _ = run(DivisionState("v1", "village"), Start(), T0, people)
    k1, k2 = div.calls[0].key, div.calls[1].key
    div, _ = run(div, Acked(k1, "ivr"), T0 + timedelta(minutes=1), people)
    div, cmds = fail_call(div, k2, T0, people=people)
    assert sends(cmds) == [("a2", 2, "stage"), ("a2", 3, "stage")]
    assert div.call(k2).state == "failed"
    assert records(cmds, "escalate") == []  # reached: no escalation


def test_full_ladder_backup_superior_duty_then_ends() -> None:
    div, _ = run(DivisionState("v1", "village"), Start(), T0)
    div, c = fail_call(div, div.calls[0].key, T0)
    assert sends(c)[-1] == ("b1", 1, "backup")
    t1 = T0 + 3 * W
    div, c = fail_call(div, "1:backup:b1", t1)
    assert sends(c)[-1] == ("t1", 1, "superior")
    t2 = t1 + 3 * W
    div, c = fail_call(div, "1:superior:t1", t2)
    assert [r.data for r in records(c, "escalate")] == [(("rung", "duty"),)]
    assert len(records(c, "unreached")) == 1 and div.unreached_at == t2 + 3 * W
    assert sends(c)[-1] == ("d1", 1, "duty")
    t3 = t2 + 3 * W
    div, c = fail_call(div, "1:duty:d1", t3)
    assert div.rung == ENDED and next_due(div) is None
    assert records(c, "escalate") == [] and not div.reached


def test_rung_with_nobody_is_skipped_at_once() -> None:
    people = People({("v1", "stage"): ("a1",), ("v1", "superior"): ("t1",)})
    div, _ = run(DivisionState("v1", "village"), Start(), T0, people)
    div, cmds = fail_call(div, div.calls[0].key, T0, people=people)
    assert [r.data for r in records(cmds, "escalate")] == [(("rung", "superior"),)]
    assert sends(cmds)[-1] == ("t1", 1, "superior")
    assert div.rung == "superior" and div.rung_started_at == T0 + 3 * W


def test_division_without_a_persons_escalates_at_start() -> None:
    people = People({("v1", "backup"): ("b1",)})
    div, cmds = run(DivisionState("v1", "village"), Start(), T0, people)
    assert sends(cmds) == [("b1", 1, "backup")] and div.rung == "backup"


def test_duty_rung_lists_the_division_even_with_no_duty_person() -> None:
    people = People({("v1", "stage"): ("a1",)})
    div, _ = run(DivisionState("v1", "village"), Start(), T0, people)
    div, cmds = fail_call(div, div.calls[0].key, T0, people=people)
    assert len(records(cmds, "unreached")) == 1
    assert div.rung == ENDED and div.unreached_at is not None


def test_reaching_stops_later_rungs_but_not_a_calls() -> None:
    people = People({("v1", "stage"): ("a1",), ("v1", "backup"): ("b1", "b2")})
    div, _ = run(DivisionState("v1", "village"), Start(), T0, people)
    div, _ = fail_call(div, div.calls[0].key, T0, people=people)
    div, _ = run(div, Acked("1:backup:b1", "sms"), T0 + 16 * timedelta(minutes=1), people)
    assert div.reached and div.call("1:backup:b2").state == "cancelled"


def test_late_ack_after_failure_still_reaches_and_stops_escalation() -> None:
    div, _ = run(DivisionState("v1", "village"), Start(), T0)
    div, _ = fail_call(div, "1:stage:a1", T0)
    assert div.rung == "backup"
    div, cmds = run(div, Acked("1:stage:a1", "officer"), T0 + 16 * timedelta(minutes=1))
    ack = records(cmds, "ack")[0]
    assert ("late", True) in ack.data
    assert div.reached and div.call("1:backup:b1").state == "cancelled" and next_due(div) is None


def test_stop_cancels_everything_and_later_events_do_nothing() -> None:
    div, _ = run(DivisionState("v1", "village"), Start(), T0)
    div, _ = run(div, Stop(), T0 + timedelta(minutes=1))
    assert div.stopped and all(c.state == "cancelled" for c in div.calls)
    for ev in (CallDue("1:stage:a1"), Start()):
        same, cmds = run(div, ev, T0 + W)
        assert cmds == [] and same == div


def test_restart_begins_a_new_round_and_requires_a_new_ack() -> None:
    div, _ = run(DivisionState("v1", "village"), Start(), T0)
    div, _ = run(div, Acked("1:stage:a1", "ivr"), T0 + timedelta(minutes=1))
    div, cmds = run(div, Start(), T0 + timedelta(hours=1))
    assert div.round == 2 and not div.reached
    assert sends(cmds) == [("a1", 1, "stage")] and div.call("2:stage:a1").active


@pytest.mark.parametrize(
    ("ladder", "expected"),
    [
        ((), []),
        (("duty",), ["duty"]),
        (
            ("superior", "backup"),
            [
                "superior",
                "backup",
            ],
        ),
    ],
)
def test_ladder_order_follows_policy(ladder: tuple[str, ...], expected: list[str]) -> None:
    rules = Rules(W, 1, ladder)
    div, _ = run(DivisionState("v1", "village"), Start(), T0, FULL, rules)
    rungs: list[str] = []
    t = T0
    for _ in range(4):
        active = [c for c in div.calls if c.active]
        if not active:
            break
        t = t + W
        div, cmds = run(div, CallDue(active[0].key), t, FULL, rules)
        rungs += [dict(r.data)["rung"] for r in records(cmds, "escalate")]  # type: ignore[misc]
    assert rungs == expected
    assert div.rung == ENDED
