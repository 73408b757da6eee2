"""The commands' progress bar: on stderr, only on a terminal, and only once the work is slow.

Small jobs (a county's contacts, a short drill, one warning's report) finish in well under a
second and should print nothing but their result; the bar is for province-scale work, and
never appears in logs or pipes. One bar serves every command; what it says beside the bar is
a ``Describe`` function: ``rows`` (lines read), ``percent`` or ``drill_time`` (virtual time).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from warnd.core.duration import format_duration

#: what the bar says of ``done`` out of ``total``
Describe = Callable[[float, float], str]


def rows(done: float, total: float) -> str:
    return f"{done}/{total} 行"


def percent(done: float, total: float) -> str:
    share = min(100.0, max(0.0, done / total * 100)) if total > 0 else 0.0
    return f"{share:>3.0f}%"


def drill_time(done: float, total: float) -> str:
    shown = format_duration(timedelta(seconds=int(done)))
    about = format_duration(timedelta(seconds=int(total)))
    return f"演练时间 {shown} / 约 {about}"


class DelayedBar:
    """A progress bar that appears once the work has taken ``after`` seconds; ``console``
    None (not a terminal): it never appears. Call it as ``progress(done, total)``."""

    def __init__(
        self,
        label: str,
        console: Console | None,
        *,
        describe: Describe = percent,
        after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._label, self._console, self._describe = label, console, describe
        self._after, self._clock = after, clock
        self._start = clock()
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self.total: float = 1.0  # the last total given (a caller may report against it)

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def __call__(self, done: float, total: float) -> None:
        self.total = total
        if self._console is None:
            return
        if self._bar is None:
            if self._clock() - self._start < self._after:
                return
            self._bar = Progress(
                TextColumn(self._label),
                BarColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=self._console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("", total=total if total > 0 else 1)
        assert self._task is not None
        self._bar.update(
            self._task,
            completed=done,
            total=total if total > 0 else 1,
            description=self._describe(done, total),
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def for_stream(
    label: str,
    stream: TextIO,
    *,
    describe: Describe = percent,
    after: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> DelayedBar:
    """A bar on ``stream`` (stderr) when it is a terminal; one that never appears otherwise."""
    console = Console(file=stream, stderr=True) if stream.isatty() else None
    return DelayedBar(label, console, describe=describe, after=after, clock=clock)
