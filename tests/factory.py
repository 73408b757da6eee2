"""Builders for test inputs: CAP messages and contacts directories written like real ones."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from xml.sax.saxutils import escape

HEADER = "contact_id,division_code,division_name,level,rank,role,name,phone,alt_phone\n"


def cap_xml(
    identifier: str,
    sent: datetime,
    *,
    sender: str = "433122_Meteorological_Observatory",
    onset: datetime | None = None,
    effective: datetime | None = None,
    expires: datetime | None = None,
    msg_type: str = "Alert",
    status: str = "Actual",
    severity: str = "Severe",
    geocodes: Sequence[str] = ("433122000000",),
    references: Iterable[tuple[str, str, datetime | str]] = (),
    headline: str = "泸溪县气象台发布暴雨橙色预警信号",
    event: str = "暴雨",
    bom: bool = False,
) -> bytes:
    """A CAP 1.2 alert shaped like the 12379 / CMA feeds (zh-CN info, CPEAS geocodes)."""

    def t(v: datetime) -> str:
        return v.isoformat(timespec="seconds")

    refs = " ".join(f"{s},{i},{t(v) if isinstance(v, datetime) else v}" for s, i, v in references)
    times = ""
    if effective is not None:
        times += f"<effective>{t(effective)}</effective>"
    if onset is not None:
        times += f"<onset>{t(onset)}</onset>"
    if expires is not None:
        times += f"<expires>{t(expires)}</expires>"
    codes = "".join(
        f"<geocode><valueName>CPEAS Geographic Code</valueName><value>{escape(c)}</value></geocode>"
        for c in geocodes
    )
    doc = f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{escape(identifier)}</identifier>
  <sender>{escape(sender)}</sender>
  <sent>{t(sent)}</sent>
  <status>{status}</status>
  <msgType>{msg_type}</msgType>
  <scope>Public</scope>
  {f"<references>{escape(refs)}</references>" if refs else ""}
  <info>
    <language>zh-CN</language>
    <category>Met</category>
    <event>{escape(event)}</event>
    <urgency>Expected</urgency>
    <severity>{severity}</severity>
    <certainty>Likely</certainty>
    <eventCode><valueName>CMA_EventCode</valueName><value>11B03</value></eventCode>
    {times}
    <senderName>泸溪县气象台</senderName>
    <headline>{escape(headline)}</headline>
    <description>预计未来6小时内将出现50毫米以上降水。</description>
    <area>
      <areaDesc>泸溪县</areaDesc>
      {codes}
    </area>
  </info>
</alert>
"""
    data = doc.encode("utf-8")
    return b"\xef\xbb\xbf" + data if bom else data


def write_contacts(folder: Path, rows: Iterable[Sequence[str]], name: str = "contacts.csv") -> Path:
    """``folder/name`` with ``rows``; rows of ten cells have the optional ``channels`` column."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    rows = list(rows)
    header = HEADER.rstrip("\n") + ",channels\n" if any(len(r) == 10 for r in rows) else HEADER
    lines = [header] + [",".join(r) + "\n" for r in rows]
    path.write_text("".join(lines), encoding="utf-8")
    return folder


def phone(n: int) -> str:
    """A valid CN mobile number, distinct for each n."""
    return f"1381{n:07d}"


def county_rows(
    county: str = "433122",
    townships: int = 2,
    villages: int = 2,
    *,
    b_roles: bool = True,
    duty: bool = True,
) -> list[list[str]]:
    """A small but complete county: A (and B) everywhere, a duty row, numbered contact ids.

    Contact ids: ``c-<code>-a``/``-b``/``-duty``; phones distinct.
    """
    rows: list[list[str]] = []
    n = 0

    def add(code: str, name: str, level: str, rank: str, who: str) -> None:
        nonlocal n
        n += 1
        suffix = {"A": "a", "B": "b", "duty": "duty"}[rank]
        rows.append(
            [f"c-{code}-{suffix}", code, name, level, rank, "防汛责任人", who, phone(n), ""]
        )

    add(county, "泸溪县", "county", "A", "县长")
    if b_roles:
        add(county, "泸溪县", "county", "B", "副县长")
    if duty:
        add(county, "泸溪县", "county", "duty", "县应急局值班室")
    for ti in range(townships):
        tcode = f"{county}{100 + ti:03d}"
        add(tcode, f"镇{ti}", "township", "A", f"镇长{ti}")
        if b_roles:
            add(tcode, f"镇{ti}", "township", "B", f"副镇长{ti}")
        for vi in range(villages):
            vcode = f"{tcode}{200 + vi:03d}"
            add(vcode, f"村{ti}-{vi}", "village", "A", f"村支书{ti}-{vi}")
            if b_roles:
                add(vcode, f"村{ti}-{vi}", "village", "B", f"村主任{ti}-{vi}")
    return rows
