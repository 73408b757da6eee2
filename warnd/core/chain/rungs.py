"""The rungs of the escalation ladder (contracts §3), in one table that every other place reads.

A *rung* is one way of reaching a division: the stage call (its A persons), then the rungs a
policy's ``[escalation] ladder`` names, in its order. Each row of ``TABLE`` says

- **whom it calls**: the persons of ``rank`` (contracts §1: ``A``, ``B``, ``duty``) of the
  division that ``whose`` picks — the division itself (``own``), the nearest enclosing division
  that has A persons (``nearest_with_a``), or the county (``county``);
- **on whose behalf**: ``behalf`` is the sentence that names the unreached division in the
  message (empty: the message does not name it — the persons called are that division's own);
- whether entering it puts the division on its county's **not-woken list** (``not_woken``; the
  ladder lists the division even when the rung has nobody to call);
- its **texts**: ``zh`` (reports, ``status``, the wall), ``abbr`` (narrow columns), ``tag`` (the
  heading of the message and of duty-group posts) and the report column (``column``).

Readers: ``warnd.config.policy`` (the names a ladder may use), ``warnd.core.chain.ladder``
(``not_woken``), ``warnd.core.notice`` and ``warnd.edges.channels.groups`` (texts),
``warnd.desk.views`` and ``warnd.desk.report`` (order, rank, labels, columns),
``warnd.core.directory`` (the ranks a contacts row may have) and ``warnd.desk.audit``
(``for_rung``). A new rung is a new row here and nothing else. The table is
read when it is used (``TABLE`` through this module's functions), so ``using`` can show the
whole product another table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from warnd.core.division import parent_of

STAGE = "stage"


class Person(Protocol):
    @property
    def contact_id(self) -> str: ...


class Persons(Protocol):
    """The directory as the rung table sees it (``warnd.core.directory.Directory`` is one)."""

    def division(self, code: str) -> object | None: ...

    def persons(self, code: str, rank: str) -> Sequence[Person]: ...


#: whose persons a rung calls: (directory, division code) → a division code, or None: nobody
Whose = Callable[[Persons, str], str | None]


def own(_directory: Persons, code: str) -> str | None:
    """The division itself."""
    return code


def nearest_with_a(directory: Persons, code: str) -> str | None:
    """The nearest enclosing division that has A persons (a village's township, else its
    county; a township's county)."""
    parent = parent_of(code)
    while parent is not None:
        if directory.division(parent) is not None and directory.persons(parent, "A"):
            return parent
        parent = parent_of(parent)
    return None


def county(_directory: Persons, code: str) -> str | None:
    """The county the division lies in (its first 6 digits)."""
    return code[:6]


@dataclass(frozen=True, slots=True)
class Rung:
    """One rung: whom it calls, on whose behalf, what it does to the not-woken list, its texts."""

    name: str  # in [escalation] ladder, the call and event records, JSON output
    rank: str  # the persons it calls have this rank (contracts §1)...
    whose: Whose  # ...at the division this picks
    zh: str  # its name for people ("B角")
    abbr: str  # its name in a narrow column ("B")
    tag: str = ""  # the message heading's mark ("（B角）"; the stage call has none)
    behalf: str = ""  # names the unreached division: "{place}…"; empty: the message does not
    not_woken: bool = False  # entering it puts the division on its county's not-woken list

    @property
    def on_behalf(self) -> bool:
        """Whether the message names the division the call is made for."""
        return bool(self.behalf)

    @property
    def column(self) -> str:
        """The report's column of divisions escalated to this rung."""
        return f"升级{self.zh} to {self.name}"

    def behalf_text(self, place: str) -> str:
        return self.behalf.format(place=place)


#: The rungs, in the order reports list them. The first is the stage call; every other one
#: may be named in ``[escalation] ladder`` (contracts §2, §3).
TABLE: tuple[Rung, ...] = (
    Rung(STAGE, "A", own, zh="A角", abbr="A"),
    Rung("backup", "B", own, zh="B角", abbr="B", tag="（B角）"),
    Rung(
        "superior",
        "A",
        nearest_with_a,
        zh="上级",
        abbr="上",
        tag="（上级叫应）",
        behalf="{place}责任人未应答，请您立即联系督促转移避险。",
    ),
    Rung(
        "duty",
        "duty",
        county,
        zh="值班室",
        abbr="值",
        tag="（值班室）",
        behalf="{place}未叫醒，请值班员立即处置。",
        not_woken=True,
    ),
)

_index: tuple[tuple[Rung, ...], dict[str, Rung]] = ((), {})


def _by_name() -> dict[str, Rung]:
    global _index
    table = TABLE
    if _index[0] is not table:
        _index = (table, {r.name: r for r in table})
    return _index[1]


def table() -> tuple[Rung, ...]:
    """Every rung, stage first, in the table's order."""
    return TABLE


def find(name: str) -> Rung | None:
    return _by_name().get(name)


def get(name: str) -> Rung:
    """The rung called ``name``; ValueError for a name the table does not have."""
    rung = _by_name().get(name)
    if rung is None:
        raise ValueError(f"unknown rung {name!r}")
    return rung


def names() -> tuple[str, ...]:
    return tuple(r.name for r in TABLE)


def escalations() -> tuple[Rung, ...]:
    """The rungs a division can escalate to, all but the stage call (a report's columns)."""
    return tuple(r for r in TABLE if r.name != STAGE)


def ladder_names() -> tuple[str, ...]:
    """The rungs ``[escalation] ladder`` may name."""
    return tuple(r.name for r in escalations())


def order(name: str) -> int:
    """Sort key: the rung's place in the table (a name it does not have sorts last)."""
    for i, r in enumerate(TABLE):
        if r.name == name:
            return i
    return len(TABLE)


def rank_of(name: str) -> str:
    """The rank of the persons a call at this rung goes to; ``?`` for an unknown rung."""
    rung = find(name)
    return rung.rank if rung is not None else "?"


def zh(name: str) -> str:
    """The rung's name for people (the name itself for an unknown rung)."""
    rung = find(name)
    return rung.zh if rung is not None else name


def ranks() -> tuple[str, ...]:
    """The ranks some rung calls, in table order: what a contacts row's ``rank`` may be."""
    return tuple(dict.fromkeys(r.rank for r in TABLE))


def for_rung(directory: Persons, code: str, rung: str) -> tuple[str, ...]:
    """Contact ids to call for division ``code`` at ``rung`` (the ladder's ``People``)."""
    r = get(rung)
    where = r.whose(directory, code)
    if where is None:
        return ()
    return tuple(p.contact_id for p in directory.persons(where, r.rank))


@contextmanager
def using(rows: Sequence[Rung]) -> Iterator[None]:
    """Run with another table (a test of a rung the product does not have yet)."""
    global TABLE
    before, TABLE = TABLE, tuple(rows)
    try:
        yield
    finally:
        TABLE = before
