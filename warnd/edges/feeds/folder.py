"""A spool folder feed: every settled ``*.xml`` file dropped into a folder is one message.

Producers (a sync job, an operator copying a file, ``scp``) write files non-atomically, so a
file is only read once it has stopped changing: its size and mtime are the same as at the
previous poll and its mtime is at least ``settle_s`` old. A file leaves the folder only after
``ingest`` has answered, so a crash or a store outage costs a re-ingest, never a lost warning.

Only regular files are read. Anything else with a ``*.xml`` name — a symbolic link (to a file
elsewhere, or to ``/etc/passwd``), a folder, a FIFO — is never opened but moved to
``rejected/`` at once with its reason, logged and counted like any rejected file: a warning
delivered that way must not be lost without a trace. Files are opened without following
links and without blocking, and checked again once open (a file swapped for a link between
the listing and the open is refused too).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from warnd.core.xmlsafe import MAX_BYTES
from warnd.edges.feeds import (
    FeedItem,
    FeedStatus,
    Ingest,
    IngestResult,
    Outcome,
    PollReport,
    StatusTracker,
    Tally,
    one_line,
)

log = structlog.get_logger("warnd.feeds.folder")

PROCESSED = "processed"
REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class _Candidate:
    name: str
    size: int
    mtime_ns: int
    refused: str | None = None  # not a regular file: why it is not read


def _not_regular(mode: int) -> str | None:
    """Why an entry of this mode is not read, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "符号链接 a symbolic link: not followed (copy the file into the folder instead)"
    if stat.S_ISDIR(mode):
        return "文件夹 a folder, not a file"
    return "不是普通文件 not a regular file (FIFO, socket or device)"


def _open_plain(path: str, flags: int) -> int:
    """``open``'s opener: never follow a link, never block on a FIFO."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)


def _wanted(name: str) -> bool:
    """``*.xml`` in any case, not hidden; ``a.xml.tmp``/``a.xml.part`` are still being written."""
    return not name.startswith(".") and name.lower().endswith(".xml")


def _free_name(folder: Path, name: str) -> Path:
    """``name`` in ``folder``, or ``stem.1.xml``, ``stem.2.xml``… if it is taken."""
    target = folder / name
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    n = 0
    while target.exists() or target.is_symlink():
        n += 1
        target = folder / (f"{stem}.{n}.{ext}" if dot else f"{stem}.{n}")
    return target


class FolderFeed:
    """Poll a folder; move each file to ``processed/`` or ``rejected/`` once ingested."""

    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        settle_s: float = 2.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.path = Path(path)
        self.settle_s = settle_s
        self._now = now
        self._previous: dict[str, tuple[int, int]] = {}
        self._tracker = StatusTracker(now)

    @property
    def status(self) -> FeedStatus:
        return self._tracker.status

    async def aclose(self) -> None:
        """Nothing to release: the folder is opened afresh on every poll."""

    async def poll(self, ingest: Ingest) -> PollReport:
        tally = Tally(self.name)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            candidates = self._scan()
        except OSError as exc:
            tally.fail(f"无法读取目录 cannot list folder {self.path}: {exc.strerror or exc}")
            log.warning("feed.list_failed", feed=self.name, path=str(self.path), error=str(exc))
            tally.answered = False
            return self._tracker.record(tally.report())
        tally.listed = len(candidates)

        for cand in candidates:
            if cand.refused is not None:  # at once: it will not become a file by waiting
                self._reject(self.path / cand.name, cand, cand.refused, tally)
        for cand in self._settled([c for c in candidates if c.refused is None]):
            await self._process(cand, ingest, tally)

        report = tally.report()
        if report.items or report.error:
            log.info(
                "feed.poll",
                feed=self.name,
                items=report.items,
                accepted=report.accepted,
                duplicates=report.duplicates,
                rejected=report.rejected,
                error=report.error,
            )
        return self._tracker.record(report)

    def _scan(self) -> list[_Candidate]:
        found: list[_Candidate] = []
        with os.scandir(self.path) as it:
            for entry in it:
                if not _wanted(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # vanished between listing and stat
                refused = _not_regular(st.st_mode)
                found.append(_Candidate(entry.name, st.st_size, st.st_mtime_ns, refused))
        return found

    def _settled(self, candidates: list[_Candidate]) -> list[_Candidate]:
        """Files that stopped changing, oldest first; remembers sizes for the next poll."""
        now_ns = int(self._now() * 1_000_000_000)
        settle_ns = int(self.settle_s * 1_000_000_000)
        ready: list[_Candidate] = []
        for cand in candidates:
            before = self._previous.get(cand.name)
            changed = before is not None and before != (cand.size, cand.mtime_ns)
            if not changed and now_ns - cand.mtime_ns >= settle_ns:
                ready.append(cand)
        self._previous = {c.name: (c.size, c.mtime_ns) for c in candidates}
        ready.sort(key=lambda c: (c.mtime_ns, c.name))
        return ready

    async def _process(self, cand: _Candidate, ingest: Ingest, tally: Tally) -> None:
        src = self.path / cand.name
        origin = f"{self.name}:{cand.name}"
        if cand.size > MAX_BYTES:
            self._reject(src, cand, f"文件过大 file larger than {MAX_BYTES} bytes", tally)
            return
        try:
            with open(src, "rb", opener=_open_plain) as fh:
                st = os.fstat(fh.fileno())
                refused = _not_regular(st.st_mode)
                data = fh.read(MAX_BYTES + 1) if refused is None else b""
        except FileNotFoundError:
            self._previous.pop(cand.name, None)
            return  # moved away by someone else: nothing to do
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # swapped for a link since the listing
                refused = _not_regular(stat.S_IFLNK)
            else:
                refused = f"无法读取文件 cannot read file: {exc.strerror or exc}"
        if refused is not None:
            self._reject(src, cand, refused, tally)
            return
        if (st.st_size, st.st_mtime_ns) != (cand.size, cand.mtime_ns) or len(data) > MAX_BYTES:
            return  # still being written after all: try again next poll

        try:
            result: IngestResult = await ingest(FeedItem(data=data, origin=origin))
        except Exception as exc:  # the store is down or ingest has a bug: keep the file
            tally.fail(f"入库失败 ingest failed for {origin}: {one_line(exc)}")
            log.warning("feed.ingest_failed", feed=self.name, origin=origin, error=str(exc))
            return

        tally.count(result.outcome)
        if result.outcome is Outcome.REJECTED:
            reason = one_line(result.reason or "rejected")
            log.warning("feed.item_rejected", feed=self.name, origin=origin, reason=reason)
            self._move(src, cand, REJECTED, reason, tally)
        else:
            self._move(src, cand, PROCESSED, None, tally)

    def _reject(self, src: Path, cand: _Candidate, reason: str, tally: Tally) -> None:
        """Refuse a file before ingest (too large, unreadable); counted as rejected."""
        tally.count(Outcome.REJECTED)
        origin = f"{self.name}:{cand.name}"
        log.warning("feed.item_rejected", feed=self.name, origin=origin, reason=reason)
        self._move(src, cand, REJECTED, reason, tally)

    def _move(
        self, src: Path, cand: _Candidate, where: str, reason: str | None, tally: Tally
    ) -> None:
        folder = self.path / where
        try:
            folder.mkdir(exist_ok=True)
            target = _free_name(folder, cand.name)
            os.replace(src, target)
            if reason is not None:
                (folder / f"{target.name}.reason.txt").write_text(reason + "\n", encoding="utf-8")
        except OSError as exc:
            tally.fail(f"无法移动文件 cannot move {cand.name} to {where}/: {exc.strerror or exc}")
            log.error("feed.move_failed", feed=self.name, file=cand.name, error=str(exc))
            return
        self._previous.pop(cand.name, None)
