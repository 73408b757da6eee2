"""The CAP parser: the repository's own samples (tests/data/cap, facts in its expected.json) and
inline edge cases. The external corpus has its own suite (tests/corpus/test_cap_corpus.py)."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from samples import CAP, check_alert, data_of, entry, expected, facts, name, samples

from warnd.core.cap import MAX_BYTES, Alert, parse, parse_file, summary
from warnd.core.errors import CapError

SCHEMAS = Path(__file__).resolve().parents[1] / "warnd" / "schemas"
XSD_OF = {
    "urn:oasis:names:tc:emergency:cap:1.2": "CAP-v1.2.xsd",
    "urn:oasis:names:tc:emergency:cap:1.1": "CAP-v1.1.xsd",
}
RAINSTORM = CAP / "valid" / "luxi-rainstorm-alert.xml"


# --- the repository's samples ------------------------------------------------------------------


def test_every_sample_file_has_an_expectation_and_every_expectation_a_file() -> None:
    on_disk = {
        p.relative_to(CAP).as_posix() for p in CAP.rglob("*") if p.is_file() and p.suffix != ".json"
    }
    assert on_disk == set(expected())
    assert len(samples("valid")) >= 15 and len(samples("invalid")) >= 20


@pytest.mark.parametrize("path", samples("valid") + samples("lenient"), ids=name)
def test_valid_samples_are_what_the_schema_says_lenient_ones_are_not(path: Path) -> None:
    """Independent of warnd: lxml and the OASIS XSD agree with the sample's category."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.fromstring(path.read_bytes(), parser=parser)
    schema = etree.XMLSchema(etree.parse(str(SCHEMAS / XSD_OF[etree.QName(root).namespace])))
    assert schema.validate(root) == (entry(path)["category"] == "valid"), schema.error_log


@pytest.mark.parametrize("path", samples("valid"), ids=name)
def test_valid_sample_parses_with_the_expected_facts(path: Path) -> None:
    want = facts(path)
    alert = parse_file(path)
    check_alert(alert, want)
    assert alert.geocodes == tuple(want["divisions"])
    assert alert.unmatched_geocodes == tuple(want["unmatched"])
    assert alert.headline == want["headline"]
    codes = {value for i in alert.infos for _name, value in i.event_codes}
    assert codes == set(want["event_codes"])


@pytest.mark.parametrize("path", samples("valid"), ids=name)
def test_valid_sample_also_passes_strict(path: Path) -> None:
    assert parse_file(path, strict=True).identifier == facts(path)["identifier"]


@pytest.mark.parametrize("path", samples("lenient"), ids=name)
def test_lenient_sample_is_accepted_with_a_warning_and_refused_when_strict(path: Path) -> None:
    want = entry(path)
    alert = parse_file(path)
    assert alert.identifier == want["identifier"]
    assert any(want["warning"] in w for w in alert.warnings), alert.warnings
    with pytest.raises(CapError) as caught:
        parse_file(path, strict=True)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(str(path))


@pytest.mark.parametrize("path", samples("invalid"), ids=name)
def test_invalid_sample_is_refused_with_a_one_line_reason(path: Path) -> None:
    with pytest.raises(CapError) as caught:
        parse(data_of(path), source=str(path))
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(str(path))
    assert entry(path)["reason"] in text


def test_a_redelivered_message_has_the_key_of_the_first_and_others_do_not() -> None:
    groups: dict[tuple[str, str, datetime], list[str]] = defaultdict(list)
    for path in samples("valid"):
        want = facts(path)
        instant = datetime.fromisoformat(want["sent"]).astimezone(UTC)
        groups[(want["sender"], want["identifier"], instant)].append(parse_file(path).key)
    twice = [keys for keys in groups.values() if len(keys) > 1]
    assert len(twice) == 1 and len(twice[0]) == 2  # the redelivered rainstorm warning
    assert all(len(set(keys)) == 1 for keys in groups.values())
    assert len({keys[0] for keys in groups.values()}) == len(groups)


def test_chinese_profile_sample() -> None:
    alert = parse_file(RAINSTORM)
    want = facts(RAINSTORM)
    assert alert.sent.utcoffset() == timedelta(hours=8)
    assert alert.sent.isoformat() == want["sent"]
    codes = {(g.value, g.division) for a in alert.areas for g in a.geocodes}
    assert codes == {("433122000000", "433122")}
    assert alert.geocodes == ("433122",)
    assert alert.primary_info is not None and alert.primary_info.language == "zh-CN"
    assert alert.headline == alert.primary_info.headline == want["headline"]
    assert "暴雨橙色预警" in alert.headline
    data = summary(alert)
    assert data["sent"] == "2025-06-14T08:15:00+08:00"
    assert data["onset"] == "2025-06-14T14:00:00+08:00"
    assert data["severity"] == "Severe" and data["geocodes"] == ["433122"]
    assert json.loads(json.dumps(data, ensure_ascii=False)) == data


def test_update_reference_keeps_the_wrong_sent_verbatim() -> None:
    path = CAP / "valid" / "luxi-update-reference-own-sent.xml"
    alert = parse_file(path)
    assert alert.references[0].sent == facts(path)["references"][0]["sent"]  # although wrong
    assert alert.note is None  # <note></note>


# --- inline documents-----------------------------------------------------------------------

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

    from warnd.core import cap as cap_mod
    from warnd.core.errors import CapError

    base = datetime(2025, 6, 14, tzinfo=UTC)
    ok = cap_xml("id-1", base)
    for bad, what in (
        (ok.replace(b"2025-06-14T00:00:00+00:00", b"9999-12-31T23:59:59-14:00", 1), "year"),
        (ok.replace(b"2025-06-14T00:00:00+00:00", b"0001-01-01T00:00:00+14:00", 1), "year"),
        (ok.replace(b"<identifier>id-1<", b"<identifier>" + b"x" * 300 + b"<", 1), "256"),
    ):
        with pytest.raises(CapError, match=what):
            cap_mod.parse(bad)
