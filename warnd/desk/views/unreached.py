"""The query behind ``warnd unreached``: the duty office's not-woken list across warnings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from warnd.core.chain import rungs
from warnd.desk.views import NotWoken, Timestamps, ToCall
from warnd.desk.views.reader import Source, source

if TYPE_CHECKING:
    from warnd.store import Store


def _where(include_all: bool, county: str | None) -> tuple[str, dict[str, Any]]:
    """The entries' filter: unresolved ones of active warnings unless ``include_all``."""
    where = " WHERE d.unreached_at IS NOT NULL"
    params: dict[str, Any] = {}
    if not include_all:
        where += " AND d.resolved_at IS NULL AND w.state = 'active'"
    if county:
        where += " AND d.code LIKE :county"
        if not county.isdigit():
            raise ValueError(f"a division code is digits: {county!r}")
        params["county"] = county + "%"
    return where, params


async def not_woken_counts(
    store: Source | Store, *, include_all: bool = False, county: str | None = None
) -> tuple[int, int]:
    """How many entries ``not_woken`` lists: (real, drill)."""
    where, params = _where(include_all, county)
    q = "SELECT w.drill, count(*) FROM division d JOIN warning w ON w.id = d.warning_id"
    rows = await source(store).fetch(q + where + " GROUP BY w.drill", params)
    by = {bool(r[0]): int(r[1]) for r in rows}
    return by.get(False, 0), by.get(True, 0)


async def not_woken(
    store: Source | Store,
    *,
    include_all: bool = False,
    county: str | None = None,
    limit: int | None = None,
) -> list[NotWoken]:
    """Entries oldest first, real ones before drills, each with the numbers to call.

    The numbers are those the ladder rang for the division — its A and B, the superior's A, the
    county duty office — as kept with each call. By default only unresolved entries of active
    warnings; ``include_all`` adds resolved ones and those of lifted warnings. ``county``: only
    divisions whose code starts with it (a county duty office's own list). ``limit``: only the
    first entries (``not_woken_counts`` says how many there are).
    """
    ts = Timestamps()
    q = (
        "SELECT d.id, w.key, w.headline, w.drill, w.state, d.code, d.name, d.level,"
        " d.unreached_at, d.reached_at, d.reached_by, d.reached_source, d.resolved_at,"
        " d.resolved_by, d.resolved_note"
        " FROM division d JOIN warning w ON w.id = d.warning_id"
    )
    where, params = _where(include_all, county)
    q += where + " ORDER BY w.drill, d.unreached_at, d.id"
    if limit is not None:
        q += " LIMIT :limit"
        params["limit"] = limit
    calls: dict[int, list[Any]] = {}
    s = source(store)
    rows = await s.fetch(q, params)
    ids = [int(r[0]) for r in rows]
    cq = (
        "SELECT division_id, contact_id, rung, phone, state, acked_at FROM call"
        " WHERE division_id IN :ids ORDER BY id"
    )
    for i in range(0, len(ids), 500):
        for c in await s.fetch(cq, {"ids": ids[i : i + 500]}):
            calls.setdefault(int(c[0]), []).append(c)
    out = []
    for r in rows:
        people: dict[tuple[str, str], ToCall] = {}
        for c in calls.get(int(r[0]), []):  # the latest round of a person at a rung wins
            people[(c[1], c[2])] = ToCall(c[1], c[2], rungs.rank_of(c[2]), c[3], c[4], ts(c[5]))
        since = ts(r[8])
        assert since is not None
        out.append(
            NotWoken(
                r[1],
                r[2],
                bool(r[3]),
                r[4],
                r[5],
                r[6],
                r[7],
                since,
                ts(r[9]),
                r[10],
                r[11],
                ts(r[12]),
                r[13],
                r[14],
                tuple(sorted(people.values(), key=lambda p: rungs.order(p.rung))),
            )
        )
    return out
