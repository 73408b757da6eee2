"""When each level's divisions were reached, against the level's 631 deadline (the status wall).

``warnd status`` counts divisions reached; the duty room's wall also tells *in time* from
*late* — the rule of the after-action report (``warnd.desk.report``: reached no later than the
level's deadline, ``warnd.core.deadline``) — and the divisions the chain is still calling. One
grouped query over ``division``: a row per distinct ``reached_at`` of a level (answers cluster
on a few instants; a province warning gives some thousands of rows, not 26,000), compared with
the deadline here, so that the SQL stays the same on both backends (no timestamp parameters).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from warnd.desk.views import Timestamps, WarningView
from warnd.desk.views.reader import Source, source

if TYPE_CHECKING:
    from warnd.store import Store


class Reach(NamedTuple):
    """Divisions of one level of one warning, by how they stand against the deadline."""

    in_time: int = 0  # reached no later than the level's 631 deadline (or no deadline known)
    late: int = 0  # reached after it
    calling: int = 0  # not reached, not stopped, not on the not-woken list: still being called


async def reach(where: Source | Store, ws: Sequence[WarningView]) -> dict[tuple[int, str], Reach]:
    """(warning id, level) → ``Reach`` for the warnings ``ws`` (as ``views.warnings`` gives
    them: the deadlines come from their stages)."""
    if not ws:
        return {}
    deadline = {
        (w.id, lv.level): lv.stage.deadline for w in ws for lv in w.levels if lv.stage is not None
    }
    q = (
        "SELECT warning_id, level, reached_at, count(*),"
        " sum(CASE WHEN reached_at IS NULL AND NOT stopped"
        " AND (unreached_at IS NULL OR resolved_at IS NOT NULL) THEN 1 ELSE 0 END)"
        " FROM division WHERE warning_id IN :ids GROUP BY warning_id, level, reached_at"
    )
    ts = Timestamps()
    tally: dict[tuple[int, str], list[int]] = {}
    for r in await source(where).fetch(q, {"ids": [w.id for w in ws]}):
        k = (int(r[0]), r[1])
        counts = tally.setdefault(k, [0, 0, 0])
        at = ts(r[2])
        if at is None:
            counts[2] += int(r[4] or 0)
            continue
        due = deadline.get(k)
        counts[0 if due is None or at <= due else 1] += int(r[3])
    return {k: Reach(*v) for k, v in tally.items()}
