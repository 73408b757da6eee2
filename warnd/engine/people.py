"""The ladder's view of the directory: who to call for a division at each rung."""

from __future__ import annotations

from warnd import division as div_codes
from warnd.chain.ladder import STAGE
from warnd.directory import Directory


class DirectoryPeople:
    """``chain.ladder.People`` over the contacts directory (contracts §3, the ladder)."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    def superior_of(self, code: str) -> str | None:
        """The nearest enclosing division that has A persons (the township of a village…)."""
        parent = div_codes.parent_of(code)
        while parent is not None:
            if self.directory.division(parent) is not None and self.directory.persons(parent, "A"):
                return parent
            parent = div_codes.parent_of(parent)
        return None

    def for_rung(self, code: str, rung: str) -> tuple[str, ...]:
        d = self.directory
        if rung == STAGE:
            return tuple(c.contact_id for c in d.persons(code, "A"))
        if rung == "backup":
            return tuple(c.contact_id for c in d.persons(code, "B"))
        if rung == "superior":
            sup = self.superior_of(code)
            return tuple(c.contact_id for c in d.persons(sup, "A")) if sup else ()
        if rung == "duty":
            county = code[:6]
            return tuple(c.contact_id for c in d.persons(county, "duty"))
        raise ValueError(f"unknown rung {rung!r}")
