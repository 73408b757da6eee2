"""The ladder's view of the directory: who to call for a division at each rung.

Whom each rung calls is the rung table's (``warnd.core.chain.rungs``, contracts §3): a new rung is a
row there, not a branch here.
"""

from __future__ import annotations

from warnd.core.chain import rungs
from warnd.core.directory import Directory


class DirectoryPeople:
    """``chain.ladder.People`` over the contacts directory (contracts §3, the ladder)."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    def for_rung(self, code: str, rung: str) -> tuple[str, ...]:
        """Contact ids to call for division ``code`` at ``rung`` (ValueError: unknown rung)."""
        return rungs.for_rung(self.directory, code, rung)


def on_behalf(rung: str | None) -> bool:
    """Whether a call at ``rung`` names the unreached division in its message."""
    r = rungs.find(rung) if rung else None
    return r is not None and r.on_behalf


def not_woken(rung: str | None) -> bool:
    """Whether ``rung`` puts its division on the county's not-woken list (an officer's ack
    there resolves the division)."""
    r = rungs.find(rung) if rung else None
    return r is not None and r.not_woken
