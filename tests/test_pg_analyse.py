"""When the PostgreSQL store refreshes the planner's statistics of a table it fills (a pure rule).

A province fan-out and its escalation insert ~200,000 rows into each hot table within minutes;
statistics planned for the empty table turn index lookups into scans, and every ``ANALYZE``
costs the server 0.3–0.9 s at that size (docs/performance.md). The rule keeps the statistics
within 1.5 × of the table's size with a number of analyses that grows with the logarithm of
the rows, not linearly.
"""

from __future__ import annotations

import itertools

from warnd.store.postgres import ANALYZE_AFTER, analyse_due


def _analyses(batches: list[int]) -> list[int]:
    """Row counts at which a table filled by ``batches`` is analysed (as the store counts)."""
    grown = known = total = 0
    at = []
    for n in batches:
        total += n
        grown += n
        if analyse_due(grown, known):
            known += grown
            grown = 0
            at.append(total)
    return at


def test_small_tables_wait_for_the_minimum() -> None:
    assert not analyse_due(ANALYZE_AFTER - 1, 0)
    assert analyse_due(ANALYZE_AFTER, 0)
    assert not analyse_due(ANALYZE_AFTER - 1, 2 * ANALYZE_AFTER)


def test_a_province_costs_few_analyses_and_the_statistics_stay_close() -> None:
    at = _analyses([1_000] * 200)  # 200,000 rows in batches of 1,000
    assert at[0] == ANALYZE_AFTER
    assert len(at) <= 10  # a fixed step of 5,000 rows would be 40
    for before, after in itertools.pairwise(at):
        # never more than half again, or the minimum (one batch late at most)
        assert after <= max(before * 1.5, before + ANALYZE_AFTER) + 1_000
    assert 200_000 - at[-1] <= at[-1] // 2 + 1_000
