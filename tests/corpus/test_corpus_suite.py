"""The external CAP corpus suite: present, or skipped with one line.

The modules ``tests/corpus/test_*_corpus.py`` read ``../shared/cap-corpus`` (real CAP messages
from public repositories, with their own expected.json). Without the folder ``tests/conftest.py``
leaves them uncollected and this test says so; ``WARND_REQUIRE_CORPUS=1`` makes that an error.
"""

from __future__ import annotations

import json

import pytest
from conftest import MISSING
from samples import CORPUS


def test_the_corpus_suite_runs() -> None:
    if MISSING["CORPUS"] is not None:
        pytest.skip(
            f"{MISSING['CORPUS']}: the corpus suite (tests/corpus/) is skipped; the repository's"
            " own samples (tests/data) ran (WARND_REQUIRE_CORPUS=1 makes this an error)"
        )
    listed = {f["file"] for f in json.loads((CORPUS / "expected.json").read_text())["files"]}
    on_disk = {p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*") if p.is_file()}
    assert len(listed) >= 100 and listed <= on_disk
