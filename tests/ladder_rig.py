"""The ladder's table-test rig: a people table, the rules, and one step (shared by the
ladder's and bundling's table tests)."""

from __future__ import annotations

from datetime import datetime, timedelta

from warnd.core.chain.ladder import (
    DivisionState,
    Rules,
    SendAttempt,
    step,
)

W = timedelta(minutes=5)


RULES = Rules(window=W, attempts=3, ladder=("backup", "superior", "duty"))


class People:
    def __init__(self, table: dict[tuple[str, str], tuple[str, ...]]) -> None:
        self.table = table

    def for_rung(self, code: str, rung: str) -> tuple[str, ...]:
        return self.table.get((code, rung), ())


FULL = People(
    {
        ("v1", "stage"): ("a1",),
        ("v1", "backup"): ("b1",),
        ("v1", "superior"): ("t1",),
        ("v1", "duty"): ("d1",),
    }
)


def sends(cmds: list[object]) -> list[tuple[str, int, str]]:
    return [(c.contact_id, c.attempt, c.rung) for c in cmds if isinstance(c, SendAttempt)]


def run(
    div: DivisionState, event: object, at: datetime, people: People = FULL, rules: Rules = RULES
) -> tuple[DivisionState, list[object]]:
    return step(div, event, at, rules, people)  # type: ignore[arg-type]
