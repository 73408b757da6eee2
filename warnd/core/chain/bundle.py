"""Bundling (contracts §8): one message for a person's attempts on several warnings, pure.

With ``[ack] bundle`` > 0, when an attempt to a person is made at *t*, every other attempt to
that person due within ``[t, t + bundle]`` on another warning is made at *t* too and all go out
in one message. Two rules, data and a time in, decisions out (the engine feeds them rows and
carries the decisions out, ``warnd.engine.bundles``):

- ``pull``: which waiting attempts (a running call's next attempt, or a person's first attempt
  of a stage not yet fired) are brought forward to *t*, given the attempts made at *t*;
- ``groups``: which attempts made at *t* go out together (one group per person whose attempts
  span two warnings or more; the first attempt of a group is its lead: the message sent).

Each call keeps its own ladder (``warnd.core.chain.ladder``): a bundled attempt is an ordinary
attempt made at *t*, and what falls due together again is bundled again.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple


class Made(NamedTuple):
    """An attempt made at *t*: to whom, on which warning, which attempt of its call."""

    contact_id: str
    warning: int | str  # its id (or key)
    attempt: int = 1


class Waiting(NamedTuple):
    """An attempt not yet due: to whom, on which warning, when; ``ref`` is the caller's."""

    contact_id: str
    warning: int
    due_at: datetime
    ref: Hashable


def pull(
    made: Iterable[Made], waiting: Iterable[Waiting], now: datetime, span: timedelta
) -> list[Waiting]:
    """The waiting attempts brought forward to ``now``: due by ``now + span``, to a person with
    an attempt made at ``now``, on a warning other than that person's attempts at ``now``
    (attempts on the same warning keep their own times). Order kept; none when ``span`` is 0."""
    if span <= timedelta(0):
        return []
    mine: dict[str, set[int | str]] = {}
    for m in made:
        mine.setdefault(m.contact_id, set()).add(m.warning)
    until = now + span
    out = []
    for w in waiting:
        warnings = mine.get(w.contact_id)
        if warnings is not None and w.warning not in warnings and w.due_at <= until:
            out.append(w)
    return out


def groups(made: Sequence[Made]) -> list[list[int]]:
    """Indexes of the attempts that go out as one message (the first: the lead, the message
    sent), groups in order of their first attempt.

    A person's attempts at one instant form one group when they span two warnings or more;
    a person whose attempts are all on one warning gets no group (each its own message). The
    lead is the attempt with the lowest number (a call's first attempt, when there is one),
    the earliest made among equals; the others follow in the order they were made."""
    by_person: dict[str, list[int]] = {}
    for i, m in enumerate(made):
        by_person.setdefault(m.contact_id, []).append(i)
    out = []
    for idx in by_person.values():
        if len(idx) > 1 and len({made[i].warning for i in idx}) > 1:  # two warnings or more
            lead = min(idx, key=lambda i: (made[i].attempt, i))
            out.append([lead, *(i for i in idx if i != lead)])
    out.sort(key=lambda g: min(g))
    return out
