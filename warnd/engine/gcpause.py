"""Pausing the cyclic garbage collector while a batch runs (a bulk step, a run of sends).

A province-wide batch allocates hundreds of thousands of short-lived, acyclic objects (rows,
states, requests), freed by reference counting; meanwhile the collector would run thousands of
times, each full pass walking the whole heap — the directory's million objects included — which
cost a third of the sender's CPU and a sixth of the engine's.

The collector is one switch for the whole process, and the engine's batches (on the store's
writer thread) and the sender (on the event loop) pause it at the same time: pauses are
counted, the collector is off while any is held, and it is turned back on by the last one to
end — if it was on when the first began, so that it is never left off after a batch.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_held = 0
_was_on = False


@contextmanager
def gc_paused() -> Iterator[None]:
    global _held, _was_on
    with _lock:
        if _held == 0:
            _was_on = gc.isenabled()
            gc.disable()
        _held += 1
    try:
        yield
    finally:
        with _lock:
            _held -= 1
            if _held == 0 and _was_on:
                gc.enable()
