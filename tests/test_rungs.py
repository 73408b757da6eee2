"""The rung table (warnd/core/chain/rungs.py): whom each rung calls, and a rung added in a test
only.

The second half adds two rungs the product does not have — ``deputy`` (a division's C person,
a rank no contacts file has today) and ``township_office`` (the township's duty office: calls
on the village's behalf and puts it on the not-woken list) — with their texts, to the table and
nowhere else, then runs them through every reader: the config, the contacts directory, the
ladder, the call text, the duty-group heading, the after-action report (JSON, CSV, terminal,
HTML), the duty desk's views and the audit.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from factory import write_contacts
from rich.console import Console

from warnd.config.policy import Policy, load_config
from warnd.core.chain import rungs
from warnd.core.chain.ladder import (
    CallDue,
    DivisionState,
    Record,
    Rules,
    SendAttempt,
    Start,
    next_due,
    step,
)
from warnd.core.directory import Directory, load
from warnd.core.errors import ConfigError
from warnd.core.notice import WarningFacts, call_text
from warnd.desk import audit, views
from warnd.desk.report import Facts, StageFact, build
from warnd.desk.report.html import render_html
from warnd.desk.report.text import render_csv, render_terminal, to_json
from warnd.edges.channels.groups import heading
from warnd.engine.people import DirectoryPeople, not_woken, on_behalf

T0 = datetime(2025, 6, 14, 8, 0, tzinfo=UTC)
_H = timedelta(hours=1)
TZ = ZoneInfo("Asia/Shanghai")
COUNTY, TOWN, VILLAGE, BARE = "433122", "433122101", "433122101201", "433122102201"


def row(cid: str, code: str, name: str, level: str, rank: str, n: int) -> list[str]:
    return [cid, code, name, level, rank, "防汛责任人", f"{name}{rank}", f"1381{n:07d}", ""]


def base_rows(*, bare_township_a: bool = True) -> list[list[str]]:
    """A county, a township with an A and a village under it; a second township (浦市镇) and
    its village: without ``bare_township_a`` the township has only a B."""
    return [
        row("county-a", COUNTY, "泸溪县", "county", "A", 1),
        row("county-duty", COUNTY, "泸溪县", "county", "duty", 2),
        row("town-a", TOWN, "武溪镇", "township", "A", 3),
        row("town-b", TOWN, "武溪镇", "township", "B", 4),
        row("vil-a", VILLAGE, "马王溪村", "village", "A", 5),
        row("vil-b", VILLAGE, "马王溪村", "village", "B", 6),
        row("bare-town", "433122102", "浦市镇", "township", "A" if bare_township_a else "B", 7),
        row("bare-a", BARE, "铁山村", "village", "A", 8),
    ]


@pytest.fixture
def directory(tmp_path: Path) -> Directory:
    d, problems = load(write_contacts(tmp_path / "contacts", base_rows(bare_township_a=False)))
    assert [p.kind for p in problems] == ["no_a"]
    return d


# ---- the shipped table ----------------------------------------------------------------------


def test_the_table_is_contracts_section_3() -> None:
    assert rungs.names() == ("stage", "backup", "superior", "duty")
    assert rungs.ladder_names() == Policy.default().ladder
    assert rungs.ranks() == ("A", "B", "duty")
    assert [r.name for r in rungs.table() if r.on_behalf] == ["superior", "duty"]
    assert [r.name for r in rungs.table() if r.not_woken] == ["duty"]
    assert [r.column for r in rungs.escalations()] == [
        "升级B角 to backup",
        "升级上级 to superior",
        "升级值班室 to duty",
    ]


def test_whom_each_rung_calls(directory: Directory) -> None:
    def who(code: str, rung: str) -> tuple[str, ...]:
        return rungs.for_rung(directory, code, rung)

    assert who(VILLAGE, "stage") == ("vil-a",)
    assert who(VILLAGE, "backup") == ("vil-b",)
    assert who(VILLAGE, "superior") == ("town-a",)  # its township has an A
    assert who(BARE, "superior") == ("county-a",)  # its township has none: the county
    assert who(TOWN, "superior") == ("county-a",)
    assert who(COUNTY, "superior") == ()  # no enclosing division in the directory
    assert who(VILLAGE, "duty") == who(TOWN, "duty") == who(COUNTY, "duty") == ("county-duty",)
    assert who(BARE, "backup") == ()
    with pytest.raises(ValueError, match="unknown rung 'boss'"):
        who(VILLAGE, "boss")


def test_an_unknown_rung_reads_as_itself() -> None:
    assert rungs.find("boss") is None
    assert (rungs.zh("boss"), rungs.rank_of("boss")) == ("boss", "?")
    assert rungs.order("boss") == len(rungs.table())


# ---- a rung the product does not have -----------------------------------------------------


def township(_directory: rungs.Persons, code: str) -> str | None:
    """The village's township (a township's own office is not a rung above it)."""
    return code[:9] if len(code) == 12 else None


DEPUTY = rungs.Rung("deputy", "C", rungs.own, zh="C角", abbr="C", tag="（C角）")
OFFICE = rungs.Rung(
    "township_office",
    "office",
    township,
    zh="乡镇值班",
    abbr="乡",
    tag="（乡镇值班）",
    behalf="{place}未应答，请乡镇值班员立即联系。",
    not_woken=True,
)
LADDER = ("backup", "deputy", "superior", "township_office", "duty")


def wider_table() -> tuple[rungs.Rung, ...]:
    """The shipped table with the two rungs written where they belong in it."""
    stage, backup, superior, duty = rungs.table()
    return (stage, backup, DEPUTY, superior, OFFICE, duty)


@pytest.fixture
def wider() -> Iterator[None]:
    with rungs.using(wider_table()):
        yield


def wider_contacts(tmp_path: Path) -> Path:
    rows = [
        *base_rows(),
        row("vil-c", VILLAGE, "马王溪村", "village", "C", 9),
        row("town-office", TOWN, "武溪镇", "township", "office", 10),
    ]
    return write_contacts(tmp_path / "wider", rows)


def test_config_and_contacts_accept_the_new_rungs_only_from_the_table(tmp_path: Path) -> None:
    config = tmp_path / "warnd.toml"
    config.write_text(f"[escalation]\nladder = {list(LADDER)!r}\n".replace("'", '"'))
    contacts = wider_contacts(tmp_path)
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    assert refused.value.field == "escalation.ladder[1]"
    _, problems = load(contacts)
    assert {p.kind for p in problems} == {"unknown_rank"}
    with rungs.using(wider_table()):
        assert load_config(config).policy.ladder == LADDER
        d, problems = load(contacts)
        assert problems == []
        assert [c.contact_id for c in d.persons(VILLAGE, "C")] == ["vil-c"]
    assert rungs.names() == ("stage", "backup", "superior", "duty")  # restored


def climb(d: Directory, ladder: tuple[str, ...]) -> tuple[DivisionState, list[Any]]:
    """The village where nobody answers, from its stage call to the end of ``ladder``."""

    people = DirectoryPeople(d)  # the engine's view of the directory
    rules = Rules(window=timedelta(minutes=5), attempts=1, ladder=ladder)
    div, cmds = step(DivisionState(VILLAGE, "village"), Start(), T0, rules, people)
    while (due := next_due(div)) is not None:
        for call in [c for c in div.calls if c.active and c.next_due_at == due]:
            div, out = step(div, CallDue(call.key), due, rules, people)
            cmds += out
    return div, cmds


def records(cmds: list[Any]) -> list[Record]:
    return [c for c in cmds if isinstance(c, Record)]


def events_of(recorded: list[Record]) -> list[dict[str, Any]]:
    """The records as the engine stores them (contracts §4 events), 5 minutes a rung."""
    out, at = [], T0
    for r in recorded:
        if r.type == "escalate":
            at += timedelta(minutes=5)
        item = {"at": at.isoformat(), "type": r.type, "warning": "W", "contact_id": r.contact_id}
        out.append(item | {"division": VILLAGE, "level": "village", **dict(r.data)})
    return out


def test_a_rung_added_to_the_table_is_handled_everywhere(wider: None, tmp_path: Path) -> None:
    d, problems = load(wider_contacts(tmp_path))
    assert problems == []

    # the ladder calls each rung's persons, lists the village at the office, not again at duty
    div, cmds = climb(d, LADDER)
    assert div.rung == "ended" and div.unreached_at == T0 + timedelta(minutes=20)
    assert [(s.rung, s.contact_id) for s in cmds if isinstance(s, SendAttempt)] == [
        ("stage", "vil-a"),
        ("backup", "vil-b"),
        ("deputy", "vil-c"),
        ("superior", "town-a"),
        ("township_office", "town-office"),
        ("duty", "county-duty"),
    ]
    assert [(r.type, dict(r.data).get("rung")) for r in records(cmds) if r.type != "notify"] == [
        ("escalate", "backup"),
        ("escalate", "deputy"),
        ("escalate", "superior"),
        ("escalate", "township_office"),
        ("unreached", "township_office"),
        ("escalate", "duty"),
    ]

    # the engine names the village in the office's message; an officer's ack there resolves it
    assert [r for r in LADDER if on_behalf(r)] == ["superior", "township_office", "duty"]
    assert [r for r in LADDER if not_woken(r)] == ["township_office", "duty"]

    # texts: the message heading, the on-behalf sentence, the duty-group post
    facts = WarningFacts("W", "暴雨橙色预警", "Severe", T0, "onset", False)

    def text(rung: str) -> str:
        return call_text(
            facts,
            division_name="武溪镇",
            rung=rung,
            attempt=1,
            reply_code="1234",
            link=None,
            tz=TZ,
            on_behalf_of="马王溪村",
        )

    assert text("deputy").startswith("【预警叫应（C角）】") and "马王溪村" not in text("deputy")
    assert "【预警叫应（乡镇值班）】" in text("township_office")
    assert "马王溪村未应答，请乡镇值班员立即联系。" in text("township_office")
    assert heading("call", "deputy", 2) == "第2次呼叫（C角）（前次未应答）"

    # the after-action report: escalations, columns, labels, ranks
    report = build(
        events_of(records(cmds)),
        {"W": Facts("W", onset=T0 + _H, stages=(StageFact("village", _H),))},
        source="drill",
        origin="test",
        tz=TZ,
    )
    w = to_json(report)["warnings"][0]
    assert w["divisions"][0]["escalations"] == list(LADDER)
    assert w["levels"][0]["escalations"] == dict.fromkeys(LADDER, 1)
    assert {(u["rung"], u["rank"]) for u in w["unanswered"]} >= {
        ("deputy", "C"),
        ("township_office", "office"),
    }
    rows = list(csv.reader(io.StringIO(render_csv(report)[1:])))
    header = next(r for r in rows if r[:2] == ["预警 warning", "层级 level"])
    levels = dict(zip(header, rows[rows.index(header) + 1], strict=True))
    assert levels["升级C角 to deputy"] == levels["升级乡镇值班 to township_office"] == "1"
    assert "升级 B角/C角/上级/乡镇值班/值班室" in render_html(report)
    out = io.StringIO()
    render_terminal(report, Console(file=out, width=200, color_system=None))
    assert "升级B/C/上/乡/值" in out.getvalue() and "1/1/1/1/1" in out.getvalue()
    assert "B角 C角 上级 乡镇值班 值班室" in out.getvalue()

    # the duty desk's views: order, rank, and the rung that lists a village nobody called at
    assert views.escalations_of(["stage", "deputy"], not_woken=True) == (
        "deputy",
        "township_office",
    )
    assert views.escalations_of(["deputy", "duty"], not_woken=True) == ("deputy", "duty")
    assert sorted(["duty", "township_office", "deputy", "stage"], key=rungs.order) == [
        "stage",
        "deputy",
        "township_office",
        "duty",
    ]
    assert rungs.rank_of("township_office") == "office"

    # the audit counts every rung that has somebody to call
    policy = Policy(Policy.default().stages, Policy.default().ack, LADDER, "Moderate")
    posts, _ = audit.audit(d, policy)
    village = next(p for p in posts if p.code == VILLAGE)
    assert village.rungs == ("stage", *LADDER)


def test_the_shipped_report_columns_are_unchanged(tmp_path: Path) -> None:
    d, _ = load(write_contacts(tmp_path / "c", base_rows()))
    div, cmds = climb(d, Policy.default().ladder)
    assert div.unreached_at == T0 + timedelta(minutes=15)
    report = build(
        events_of(records(cmds)),
        {"W": Facts("W", onset=T0 + _H, stages=(StageFact("village", _H),))},
        source="drill",
        origin="test",
        tz=TZ,
    )
    text = render_csv(report)
    assert "升级B角 to backup,升级上级 to superior,升级值班室 to duty,未叫醒 not woken" in text
    assert "升级 B角/上级/值班室" in render_html(report)
    out = io.StringIO()
    render_terminal(report, Console(file=out, width=200, color_system=None))
    assert "升级B/上/值" in out.getvalue() and "1/1/1" in out.getvalue()
