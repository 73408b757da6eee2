"""Crash-consistency soak, shortened for the suite: ``warnd serve`` killed at random points of a
county scenario and checked against ``warnd drill simulate`` (tests/serve_harness.py).

The suite runs one case with 3 kills (one in a fan-out, one in a tick, one while an answer is
posted), well under a minute. ``WARND_SOAK_SHORT=0`` runs the full soak here instead (the
figures in docs/hardening.md come from ``bench/soak.py``, the same code with more cases).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from serve_harness import soak_case

SHORT = os.environ.get("WARND_SOAK_SHORT", "1") != "0"


@pytest.mark.slow
async def test_killed_and_restarted_daemon_matches_the_drill_oracle(tmp_path: Path) -> None:
    cases, kills = ((631,), 3) if SHORT else (range(1, 11), 5)
    for seed in cases:
        figures = await soak_case(tmp_path / f"case-{seed}", seed, kills)
        print(f"\nsoak {figures}")
        assert figures["problems"] == []
        assert figures["kills"] == kills and figures["items_lost"] == 0
        assert figures["restarts"] == kills
        assert figures["acks_posted"] > 5 and figures["gateway_requests"] > 50
        assert figures["oracle_sensitive"]  # the comparison can fail
