"""The 631 clock: T, and by when each level must be reached — one rule for every command.

T (``reference_time``) is the warning's onset, else its effective time, else its sent time
(docs/contracts.md §3). The chain plans its stages from it (``warnd.core.chain.plan``), the store
keeps it with the warning, and ``warnd status``, ``warnd report`` (a stored warning, or a
``drill simulate`` file, which carries the same facts) judge by it: a warning without an onset
has the same deadlines everywhere.

A level must be reached before the next, narrower level of the timetable is warned: with the
default 6h/3h/1h timetable the county by T − 3h, the townships by T − 1h, and the last level
(the villages) by the onset T itself. So a level's *budget* — the time its chain has from its
stage to its deadline — is its lead minus the lead of the next stage (the last stage: its whole
lead, to onset): county 3h, township 2h, village 1h.

``warnd status`` and ``warnd report`` place the deadlines on a warning's clock (``deadlines``);
``warnd contacts audit`` compares a post's worst-case ladder with its level's budget
(``windows``). Both come from ``windows``, so the three commands cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import NamedTuple


def reference_time(
    onset: datetime | None, effective: datetime | None, sent: datetime
) -> tuple[datetime, str]:
    """T of the 631 timetable and what it is: onset, else effective, else sent."""
    if onset is not None:
        return onset, "onset"
    if effective is not None:
        return effective, "effective"
    return sent, "sent"


class Window(NamedTuple):
    """A level's stretch of the timetable: fired at T − ``lead``, reached by T − ``until``."""

    level: str
    lead: timedelta
    until: timedelta  # the next stage's lead; 0 (the onset) for the last stage
    next_level: str | None  # the level of that next stage; None for the last stage

    @property
    def budget(self) -> timedelta:
        """How long the level's chain has, from its stage to its deadline."""
        return self.lead - self.until


def windows(stages: Iterable[tuple[str, timedelta]]) -> dict[str, Window]:
    """Each level's window, from ``(level, lead)`` pairs in any order.

    The stages are taken in firing order (longest lead first); each is followed by the next
    one. A level with more than one stage keeps the window of its last one (the latest
    deadline).
    """
    ordered = sorted(stages, key=lambda s: -s[1])
    out: dict[str, Window] = {}
    for i, (level, lead) in enumerate(ordered):
        following = ordered[i + 1] if i + 1 < len(ordered) else None
        window = Window(
            level,
            lead,
            following[1] if following else timedelta(0),
            following[0] if following else None,
        )
        seen = out.get(level)
        if seen is None or window.until < seen.until:
            out[level] = window
    return out


def deadlines(
    onset: datetime | None, stages: Iterable[tuple[str, timedelta]]
) -> dict[str, datetime]:
    """The 631 deadline of each level on a warning's clock: T − the next stage's lead, the last
    level T. No T: no deadlines."""
    if onset is None:
        return {}
    return {level: onset - w.until for level, w in windows(stages).items()}
