"""The CAP samples the tests read: the repository's own (``tests/data``) and the external corpus.

``tests/data/cap`` holds CAP messages written for this project (Chinese profile: zh-CN and
en-US info blocks, CPEAS 12-digit geocodes, CMA event codes, 12379 identifiers) and the hostile
and broken shapes the parser must refuse; ``expected.json`` beside them says, per file, what a
parser must read or why it must refuse (facts written by hand from the XML, not by warnd).
``tests/data/feeds`` holds Atom/RSS/EDXL-DE index samples. Every test of the suite runs on
these, so a fresh clone passes on its own.

The external corpus (``../shared/cap-corpus``: real messages from public repositories) is an
extra suite, ``tests/corpus/``, run when the folder exists (``WARND_REQUIRE_CORPUS=1`` makes a
missing one an error).
"""

from __future__ import annotations

import gzip
import json
import os
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
CAP = DATA / "cap"
FEEDS = DATA / "feeds"
CORPUS = Path(os.environ.get("WARND_CAP_CORPUS") or TESTS.parents[1] / "shared" / "cap-corpus")


@cache
def expected() -> dict[str, dict[str, Any]]:
    """``expected.json`` of the repository's samples, by path relative to ``tests/data/cap``."""
    doc = json.loads((CAP / "expected.json").read_text(encoding="utf-8"))
    return {f["file"]: f for f in doc["files"]}


def samples(category: str) -> list[Path]:
    """The sample files of one category (valid, lenient, invalid), sorted by name."""
    return sorted(CAP / f for f, e in expected().items() if e["category"] == category)


def entry(path: Path) -> dict[str, Any]:
    return expected()[path.relative_to(CAP).as_posix()]


def facts(path: Path) -> dict[str, Any]:
    """The facts of a valid sample's (only) alert."""
    alerts: list[dict[str, Any]] = entry(path)["alerts"]
    return alerts[0]


def data_of(path: Path) -> bytes:
    """A sample's bytes as a feed would deliver them (``.gz`` samples are stored compressed)."""
    raw = path.read_bytes()
    return gzip.decompress(raw) if path.suffix == ".gz" else raw


def materialise(path: Path, folder: Path) -> Path:
    """The sample as a plain file in ``folder`` (a compressed one decompressed), for commands."""
    if path.suffix != ".gz":
        return path
    out = folder / path.stem
    out.write_bytes(data_of(path))
    return out


def name(path: Path) -> str:
    return path.name


def check_alert(alert: Any, want: dict[str, Any]) -> None:
    """Assert that a parsed ``warnd.core.cap.Alert`` says what ``want`` (expected.json facts) says.

    The keys are those of the corpus's expected.json, so the same check serves both.
    """
    assert alert.version == want["cap_version"]
    assert (alert.identifier, alert.sender) == (want["identifier"], want["sender"])
    assert (alert.status, alert.msg_type, alert.scope) == (
        want["status"],
        want["msgType"],
        want["scope"],
    )
    sent = datetime.fromisoformat(want["sent"])
    assert alert.sent == sent and alert.sent.utcoffset() == sent.utcoffset()
    assert len(alert.infos) == want["info_count"]
    assert alert.severity == want["max_severity"]
    assert [i.language for i in alert.infos] == [lang or "en-US" for lang in want["languages"]]
    assert {i.event for i in alert.infos} == set(want["events"])
    assert len(alert.areas) == want["areas"]
    empty = want.get("empty_polygons", 0)
    assert sum(len(a.polygons) for a in alert.areas) == want["polygons"] - empty
    assert sum(len(a.circles) for a in alert.areas) == want["circles"]
    assert sum(len(a.geocodes) for a in alert.areas) == want["geocode_count"]
    assert [(r.sender, r.identifier, r.sent) for r in alert.references] == [
        (r["sender"], r["identifier"], r["sent"]) for r in want["references"] or []
    ]
    for key in ("onset", "expires"):
        got = {getattr(i, key) for i in alert.infos} - {None}
        assert got == {datetime.fromisoformat(v) for v in want[key]}
    assert alert.signed == want["signed"]
    # the schema passed, so whatever warning there is must not be a schema complaint
    assert not [w for w in alert.warnings if "schema" in w]
