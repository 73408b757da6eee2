"""Clocks: protocols outside the chain (hook freshness) read real time even in a sped-up drill."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from warnd.core.clock import ManualClock, ScaledClock, wall_now

T0 = datetime(2025, 6, 14, 0, 0, tzinfo=UTC)
WALL = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def test_wall_now_of_a_scaled_clock_is_real_time() -> None:
    real = [100.0]
    clock = ScaledClock(T0, 60, real=lambda: real[0], wall_start=WALL)
    clock.begin()
    real[0] += 10  # ten real seconds
    assert clock.now() == T0 + timedelta(minutes=10)  # drill time ran 60× faster
    assert wall_now(clock) == WALL + timedelta(seconds=10)


def test_wall_now_of_other_clocks_is_their_own_time() -> None:
    clock = ManualClock(T0)
    assert wall_now(clock) == T0


def test_manual_clock_never_runs_backwards() -> None:
    clock = ManualClock(T0)
    with pytest.raises(ValueError):
        clock.advance(timedelta(seconds=-1))
    with pytest.raises(ValueError):
        clock.set(T0 - timedelta(seconds=1))
