"""The bundling rule (contracts §8), pure: which waiting attempts are brought forward, which
attempts go out together, and the ladder's two bundling events (``Early``, ``StartOne``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from ladder_rig import FULL, People, run, sends

from warnd.core.chain.bundle import Made, Waiting, groups, pull
from warnd.core.chain.ladder import CallDue, DivisionState, Early, Start, StartOne, Stop, next_due

T = datetime(2025, 6, 14, 8, 0, tzinfo=UTC)
M = timedelta(minutes=1)
SPAN = 2 * M


@pytest.mark.parametrize(
    ("made", "waiting", "span", "pulled"),
    [
        # due within [t, t + span] on another warning: brought forward
        ([Made("p", 1)], [Waiting("p", 2, T + M, "a")], SPAN, ["a"]),
        ([Made("p", 1)], [Waiting("p", 2, T + SPAN, "a")], SPAN, ["a"]),  # the edge: in
        ([Made("p", 1)], [Waiting("p", 2, T, "a")], SPAN, ["a"]),  # due now too
        # later than the span: keeps its own time
        ([Made("p", 1)], [Waiting("p", 2, T + SPAN + timedelta(seconds=1), "a")], SPAN, []),
        # the same warning: keeps its own time (bundling is across warnings)
        ([Made("p", 1)], [Waiting("p", 1, T + M, "a")], SPAN, []),
        # another person: nothing of theirs is made now
        ([Made("p", 1)], [Waiting("q", 2, T + M, "a")], SPAN, []),
        # off
        ([Made("p", 1)], [Waiting("p", 2, T + M, "a")], timedelta(0), []),
        # several: order kept; the person's warnings at t all count
        (
            [Made("p", 1), Made("p", 2), Made("q", 3)],
            [
                Waiting("p", 3, T + M, "a"),
                Waiting("p", 2, T + M, "b"),
                Waiting("q", 1, T + SPAN, "c"),
                Waiting("q", 3, T + M, "d"),
            ],
            SPAN,
            ["a", "c"],
        ),
    ],
)
def test_pull(made: list[Made], waiting: list[Waiting], span: timedelta, pulled: list[str]) -> None:
    assert [w.ref for w in pull(made, waiting, T, span)] == pulled


@pytest.mark.parametrize(
    ("made", "expected"),
    [
        ([], []),
        ([Made("p", 1)], []),
        ([Made("p", 1), Made("p", 1)], []),  # one warning: each its own message
        ([Made("p", 1), Made("p", 2)], [[0, 1]]),
        ([Made("p", 1), Made("q", 1), Made("p", 2), Made("q", 2)], [[0, 2], [1, 3]]),
        # the lead is the lowest attempt (a call's first), the earliest among equals
        ([Made("p", 1, 3), Made("p", 2, 1), Made("p", 3, 1)], [[1, 0, 2]]),
        # the same warning twice and another: all of the person's attempts go together
        ([Made("p", 1), Made("p", 1), Made("p", 2)], [[0, 1, 2]]),
        ([Made("q", 1), Made("p", 1), Made("p", 2)], [[1, 2]]),
    ],
)
def test_groups(made: list[Made], expected: list[list[int]]) -> None:
    assert groups(made) == expected


# ---- the ladder's events ---------------------------------------------------------------


def started() -> DivisionState:
    div, _ = run(DivisionState("v1", "village"), Start(), T)
    return div


def test_early_makes_the_next_attempt_now_and_times_the_next_from_it() -> None:
    div = started()
    key = div.calls[0].key
    div, out = run(div, Early(key, T + 6 * M), T + 4 * M)
    assert sends(out) == [("a1", 2, "stage")]
    assert div.calls[0].next_due_at == T + 9 * M
    # a stale timer at its old time does nothing; the next attempt is at t + window
    div, out = run(div, CallDue(key), T + 5 * M)
    assert out == []
    div, out = run(div, CallDue(key), T + 9 * M)
    assert sends(out) == [("a1", 3, "stage")]


@pytest.mark.parametrize(
    ("until", "ended", "attempts_made", "sent"),
    [
        (T + 4 * M, False, 1, False),  # not due by the span's end
        (T + 6 * M, True, 1, False),  # answered or cancelled
        (T + 6 * M, False, 3, False),  # no attempt left: its next timer is the failure
        (T + 6 * M, False, 1, True),
    ],
)
def test_early_only_brings_forward_an_attempt_due_in_the_span(
    until: datetime, ended: bool, attempts_made: int, sent: bool
) -> None:
    div = started()
    call = div.calls[0]._replace(attempts_made=attempts_made)
    div = div._replace(calls=(call,))
    if ended:
        div, _ = run(div, Stop(), T + M)
    div, out = run(div, Early(call.key, until), T + 4 * M)
    assert bool(sends(out)) is sent


def test_start_one_calls_one_person_before_the_stage_and_the_stage_the_rest() -> None:
    people = People({("v1", "stage"): ("a1", "a2"), ("v1", "backup"): ("b1",)})
    div = DivisionState("v1", "village")
    div, out = run(div, StartOne("a2"), T, people)
    assert sends(out) == [("a2", 1, "stage")]
    assert div.round == 1 and div.rung_started_at is None and next_due(div) == T + 5 * M
    div, out = run(div, StartOne("a2"), T, people)  # twice: once
    assert out == []
    div, out = run(div, StartOne("x"), T, people)  # not one of its A persons
    assert out == []
    div, out = run(div, Start(), T + M, people)  # the stage fires: everyone else
    assert sends(out) == [("a1", 1, "stage")]
    assert div.round == 1 and div.rung_started_at == T + M
    div, out = run(div, StartOne("a1"), T + M, people)  # started: nothing ahead any more
    assert out == []


def test_start_one_then_the_stage_finds_nobody_else_and_escalates_when_the_call_fails() -> None:
    div, out = run(DivisionState("v1", "village"), StartOne("a1"), T)
    assert sends(out) == [("a1", 1, "stage")]
    div, out = run(div, Start(), T + M)
    assert out == [] and div.rung == "stage" and div.rung_started_at == T + M
    key = div.calls[0].key
    for k in (1, 2):
        div, out = run(div, CallDue(key), T + k * 5 * M)
        assert sends(out) == [("a1", k + 1, "stage")]
    div, out = run(div, CallDue(key), T + 15 * M)  # fails one window after the last attempt
    assert sends(out) == [("b1", 1, "backup")]


def test_an_early_call_that_fails_before_its_stage_does_not_escalate() -> None:
    div, _ = run(DivisionState("v1", "village"), StartOne("a1"), T)
    key = div.calls[0].key
    for k in (1, 2, 3):
        div, out = run(div, CallDue(key), T + k * 5 * M)
    assert sends(out) == [] and div.rung == "stage"


def test_start_one_after_a_stop_or_a_real_start_does_nothing() -> None:
    _div, out = run(started(), StartOne("a1"), T + M)
    assert out == []
    stopped, _ = run(DivisionState("v1", "village"), Stop(), T)
    _div, out = run(stopped, StartOne("a1"), T, FULL)
    assert out == []


def test_an_early_call_failed_before_its_stage_escalates_when_the_stage_fires() -> None:
    """An update put the stage off past the early call's end: the stage finds nobody else to
    call and the division moves on at once."""
    div, _ = run(DivisionState("v1", "village"), StartOne("a1"), T)
    key = div.calls[0].key
    for k in (1, 2, 3):
        div, _ = run(div, CallDue(key), T + k * 5 * M)
    div, out = run(div, Start(), T + 20 * M)
    assert sends(out) == [("b1", 1, "backup")] and div.rung == "backup"
