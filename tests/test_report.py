"""``warnd report``: the after-action report of a stored warning and of a drill file.

The scenario (tests/scenario.py, the real engine over a real store, run to its end): 泸溪县,
2 townships × 2 villages with A and B everywhere; a warning with onset T0+8h (stages at +2h,
+5h, +7h). Answers: county A after 2 min, township 100 A after 7 min (each of its calls),
township 101 B after 4 min, village 100200 A after 3 min; nobody else. Village 101201 A's
number is refused by the gateway. Worked out by hand:

- county 1/1 in time (10:02, deadline 13:00); townships 2/2 (13:07, 13:19; deadline 15:00);
  villages 2/4 (15:03, and 15:37 through the township head; deadline 16:00), two on the
  not-woken list at 15:45;
- time to acknowledge: 120 s (county); 420, 240 (townships); 180, 420 (villages);
- redials 0 / 3 / 21, escalations village B 3, superior 3, duty 2, township B 1.

The same scenario through ``warnd drill simulate`` must give the same figures: one code.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import BACKENDS, chromium, drop_pg_database, fresh_pg_database, pg_url
from factory import cap_xml, county_rows
from scenario import T0, Scenario

from warnd.cli import main
from warnd.cli.progress import for_stream

H, M = timedelta(hours=1), timedelta(minutes=1)
KEY = "43312241600000_20250614080000"
ROOT = Path(__file__).resolve().parents[1]
RESPONDERS: dict[str, timedelta | None] = {
    "c-433122-a": 2 * M,
    "c-433122100-a": 7 * M,
    "c-433122101-b": 4 * M,
    "c-433122100200-a": 3 * M,
}


class Filled:
    def __init__(self, sc: Scenario, feed: Path) -> None:
        self.sc, self.feed = sc, feed
        self.config = sc.config()

    def run(self, *args: str) -> Any:
        return CliRunner().invoke(main, [*args, "--config", str(self.config)])


@pytest.fixture(scope="module", params=BACKENDS)
def filled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Filled]:
    tmp = tmp_path_factory.mktemp("report")
    url = asyncio.run(fresh_pg_database(pg_url())) if request.param == "postgresql" else None
    sc = Scenario(
        tmp,
        url,
        rows=county_rows(townships=2, villages=2),
        responders=RESPONDERS,
        failing={"c-433122101201-a"},
    )
    data = cap_xml(KEY, T0, onset=T0 + 8 * H)
    feed = tmp / "feed"
    feed.mkdir()
    (feed / "1.xml").write_bytes(data)

    async def run() -> None:
        async with sc:
            await sc.arrive(data)
            await sc.run_until(None)

    asyncio.run(run())
    yield Filled(sc, feed)
    if url is not None:
        asyncio.run(drop_pg_database(pg_url(), url))


def report_json(f: Filled, target: str = KEY, *extra: str) -> dict[str, Any]:
    res = f.run("report", target, "--format", "json", *extra)
    assert res.exit_code == 0, res.output
    return json.loads(res.output[res.output.index("{") :])


def levels(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {lv["level"]: lv for lv in r["warnings"][0]["levels"]}


def test_report_json_per_level(filled: Filled) -> None:
    r = report_json(filled, KEY[:20])  # a unique prefix
    assert r["source"] == "store" and r["drill"] is False
    w = r["warnings"][0]
    assert w["key"] == KEY and w["onset"] == "2025-06-14T16:00:00+08:00"
    lv = levels(r)
    got = {
        name: (x["divisions"], x["reached"], x["reached_in_time"], x["persons"])
        for name, x in lv.items()
    }
    assert got == {"county": (1, 1, 1, 1), "township": (2, 2, 2, 2), "village": (4, 2, 2, 4)}
    assert [lv[n]["persons_acknowledged"] for n in ("county", "township", "village")] == [1, 1, 1]
    assert lv["village"]["ack_rate"] == 0.25
    assert lv["county"]["time_to_ack_s"] == {"count": 1, "p50": 120, "p90": 120, "max": 120}
    assert lv["township"]["time_to_ack_s"] == {"count": 2, "p50": 240, "p90": 420, "max": 420}
    assert lv["village"]["time_to_ack_s"]["count"] == 2
    assert [lv[n]["redials"] for n in ("county", "township", "village")] == [0, 3, 21]
    assert [lv[n]["attempts"] for n in ("county", "township", "village")] == [1, 6, 33]
    assert lv["village"]["escalations"] == {"backup": 3, "superior": 3, "duty": 2}
    assert lv["township"]["escalations"] == {"backup": 1}
    assert lv["village"]["not_woken"] == 2
    assert lv["village"]["due"] == "2025-06-14T15:00:00+08:00"
    divisions = {d["code"]: d for d in w["divisions"]}
    v = divisions["433122100201"]
    assert v["reached_rung"] == "superior" and v["reached_by"] == "c-433122100-a"
    assert v["in_time"] is True and v["before_onset_s"] == 23 * 60  # reached 15:37
    assert divisions["433122101200"]["in_time"] is False
    assert divisions["433122101200"]["not_woken_at"] == "2025-06-14T15:45:00+08:00"
    silent = {(u["division"], u["rung"], u["phone"]) for u in w["unanswered"]}
    assert len(w["unanswered"]) == 11
    assert ("433122101200", "duty", "+8613810000003") in silent
    assert ("433122101", "stage", "+8613810000010") in silent
    assert not any(u["division"] == "433122" for u in w["unanswered"])
    chans = {c["channel"]: c for c in w["channels"]}
    assert chans["gateway"]["sent"] == 37 and chans["-"]["failed"] == 3


def test_report_csv_opens_in_excel(filled: Filled, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    res = filled.run("report", KEY, "--format", "csv", "--out", str(out))
    assert res.exit_code == 0, res.output
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM: Excel reads it as UTF-8
    text = raw[3:].decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    titles = [r[0] for r in rows if r and r[0].startswith("【")]
    assert titles == [
        "【预警 warning】",
        "【各级叫应 levels】",
        "【渠道 channels】",
        "【未应答 unanswered】",
        "【区划 divisions】",
    ]

    def section(title: str) -> list[dict[str, str]]:
        start = next(i for i, r in enumerate(rows) if r and r[0] == title) + 1
        block = []
        for r in rows[start + 1 :]:
            if not any(r):
                break
            block.append(dict(zip(rows[start], r, strict=True)))
        return block

    lv = {r["层级 level"]: r for r in section("【各级叫应 levels】")}
    assert lv["village"]["按时叫应 in time"] == "2" and lv["village"]["区划 divisions"] == "4"
    assert lv["township"]["重拨 redials"] == "3" and lv["village"]["未叫醒 not woken"] == "2"
    assert lv["county"]["中位用时(分) p50 min"] == "2.0"
    silent = section("【未应答 unanswered】")
    assert len(silent) == 11 and all(r["电话 phone"].startswith("+86138") for r in silent)
    divisions = {r["区划代码 code"]: r for r in section("【区划 divisions】")}
    assert len(divisions) == 7
    late = divisions["433122101201"]
    assert late["按时 in time"] == "否" and late["叫应时间 reached at"] == ""
    assert "+8613810000014" in late["未应答人员 unanswered"]
    assert divisions["433122100201"]["距发生 before onset (min)"] == "23"


def _numbers(svg: str, attr: str) -> list[int]:
    return [int(x) for x in re.findall(rf'{attr}="(\d+)"', svg)]


def test_report_html_is_self_contained_with_both_charts(filled: Filled, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    res = filled.run("report", KEY, "--format", "html", "--out", str(out))
    assert res.exit_code == 0, res.output
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched
    hist = re.search(r'<svg class="chart ack-histogram".*?</svg>', page, re.S)
    timeline = re.search(r'<svg class="chart reach-timeline".*?</svg>', page, re.S)
    assert hist and timeline
    bars = re.findall(r'data-level="(\w+)" data-bin="(\d+)" data-count="(\d+)"', hist.group(0))
    assert sorted((lv, int(b), int(n)) for lv, b, n in bars) == [
        ("county", 2, 1),
        ("township", 4, 1),
        ("township", 7, 1),
        ("village", 3, 1),
        ("village", 7, 1),
    ]
    reach = dict(re.findall(r'class="reach" data-level="(\w+)" data-reached="(\d+)"', page))
    assert reach == {"county": "1", "township": "2", "village": "2"}
    assert len(re.findall(r'class="due"', timeline.group(0))) == 3
    assert len(re.findall(r'class="deadline"', timeline.group(0))) == 3
    assert 'class="onset"' in timeline.group(0)
    assert "+8613810000012" in page and "未应答人员" in page and "【演练】" not in page


def test_drill_file_gives_the_same_report_as_the_store(filled: Filled, tmp_path: Path) -> None:
    responders = tmp_path / "responders.csv"
    responders.write_text(
        "contact_id,ack_after\n"
        + "".join(f"{k},{int(v.total_seconds())}s\n" for k, v in RESPONDERS.items() if v),
        encoding="utf-8",
    )
    drill = tmp_path / "drill.json"
    res = CliRunner().invoke(
        main,
        [
            "drill",
            "simulate",
            "--feed",
            str(filled.feed),
            "--contacts",
            str(filled.sc.contacts),
            "--responders",
            str(responders),
            "--report",
            str(drill),
            "--config",  # the store's policy (not the repository's config/warnd.toml)
            str(filled.config),
        ],
    )
    assert res.exit_code == 0, res.output
    from_drill = report_json(filled, str(drill), "--contacts", str(filled.sc.contacts))
    from_store = report_json(filled)
    assert from_drill["source"] == "drill" and from_drill["drill"] is True
    d, s = from_drill["warnings"][0], from_store["warnings"][0]
    assert (d["onset"], d["onset_kind"]) == (s["onset"], s["onset_kind"])  # the file's facts
    assert d["levels"] == s["levels"]
    same = ("code", "level", "reached_at", "in_time", "redials", "escalations", "not_woken_at")
    assert [{k: x[k] for k in same} for x in d["divisions"]] == [
        {k: x[k] for k in same} for x in s["divisions"]
    ]
    assert [(u["division"], u["rung"], u["contact_id"], u["name"]) for u in d["unanswered"]] == [
        (u["division"], u["rung"], u["contact_id"], u["name"]) for u in s["unanswered"]
    ]
    assert [u["phone"] for u in d["unanswered"]] == [u["phone"] for u in s["unanswered"]]
    html = filled.run("report", str(drill), "--format", "html")
    assert html.exit_code == 0 and "【演练】" in html.output and "reach-timeline" in html.output
    # a file without the warnings' facts (an older one): the onset is estimated, the same
    data = json.loads(drill.read_text(encoding="utf-8"))
    del data["warnings"]
    drill.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    guess = report_json(filled, str(drill), "--contacts", str(filled.sc.contacts))["warnings"][0]
    assert (guess["onset"], guess["onset_kind"]) == (s["onset"], "estimated")
    # with the store's facts in the file the onset is taken, not estimated
    data["warnings"] = asyncio.run(_facts(filled.sc.url))
    drill.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    exact = report_json(filled, str(drill), "--contacts", str(filled.sc.contacts))["warnings"][0]
    assert exact["onset_kind"] == "onset" and exact["levels"] == s["levels"]


async def _facts(url: str) -> list[dict[str, Any]]:
    from zoneinfo import ZoneInfo

    from warnd.desk.report.load import drill_facts
    from warnd.store import Store

    store = await Store.open(url, create=False)
    try:
        return await drill_facts(store, ZoneInfo("Asia/Shanghai"))
    finally:
        await store.close()


def test_report_terminal(filled: Filled) -> None:
    res = filled.run("report", KEY)
    assert res.exit_code == 0, res.output
    for word in ("各级叫应", "按时/区划", "应答用时分布", "渠道", "未应答人员", "13810000012"):
        assert word in res.output
    assert "+8613810000012" not in res.output  # dialled as a duty officer dials it


def test_bad_drill_files_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"events": [{"type": "notify"}]}', encoding="utf-8")
    res = CliRunner().invoke(main, ["report", str(bad)])
    assert res.exit_code == 2 and "events[0]" in res.output
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    res = CliRunner().invoke(main, ["report", str(broken)])
    assert res.exit_code == 2 and "invalid JSON" in res.output
    assert len(res.output.strip().splitlines()) == 1


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal_and_only_after_a_second() -> None:
    now = [0.0]
    bar = for_stream("生成报告", _Tty(), clock=lambda: now[0])
    bar(10, 100)
    assert not bar.shown  # quick reports print nothing extra
    now[0] = 1.5
    bar(50, 100)
    assert bar.shown
    bar.close()
    piped = for_stream("生成报告", io.StringIO(), clock=lambda: now[0] + 10)
    piped(50, 100)
    assert not piped.shown


# ---- the screenshot check -----------------------------------------------------------------


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB(A) rows of an 8-bit, non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = bpp = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows = zlib.decompress(idat), width * bpp, []
    prev = bytearray(stride)
    for y in range(height):
        f, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def count_colour(rows: list[bytes], width: int, rgb: tuple[int, int, int], bpp: int) -> int:
    target = bytes(rgb)
    return sum(1 for row in rows for x in range(width) if row[x * bpp : x * bpp + 3] == target)


def test_html_report_renders_with_its_charts_in_headless_chromium(tmp_path: Path) -> None:
    binary = chromium()  # skips without Chromium, unless WARND_REQUIRE_CHROMIUM=1 (CI)
    # the page of a drill file: no store needed, the same renderer as for a stored warning
    sc = Scenario(tmp_path, rows=county_rows(townships=2, villages=2))
    (tmp_path / "feed").mkdir()
    (tmp_path / "feed" / "1.xml").write_bytes(cap_xml(KEY, T0, onset=T0 + 8 * H))
    (tmp_path / "responders.csv").write_text(
        "contact_id,ack_after\n" + "".join(f"{k},{v}\n" for k, v in _RESP.items()),
        encoding="utf-8",
    )
    drill, page = tmp_path / "drill.json", tmp_path / "report.html"
    args = ["drill", "simulate", "--feed", str(tmp_path / "feed"), "--contacts"]
    args += [str(sc.contacts), "--responders", str(tmp_path / "responders.csv")]
    assert CliRunner().invoke(main, [*args, "--report", str(drill)]).exit_code == 0
    res = CliRunner().invoke(main, ["report", str(drill), "--format", "html", "--out", str(page)])
    assert res.exit_code == 0, res.output
    png = tmp_path / "report.png"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "screenshot_report.py"),
            str(page),
            str(png),
            "--width",
            "1280",
            "--height",
            "900",
            "--chromium",
            binary,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    width, height, rows = png_pixels(png.read_bytes())
    assert (width, height) == (1280, 900)
    bpp = len(rows[0]) // width
    # the bars and lines in the level colours, and the onset line: the charts were drawn
    blue = count_colour(rows, width, (0x1F, 0x5F, 0xA8), bpp)
    orange = count_colour(rows, width, (0xE0, 0x7B, 0x00), bpp)
    green = count_colour(rows, width, (0x2E, 0x9E, 0x44), bpp)
    red = count_colour(rows, width, (0xC0, 0x17, 0x2A), bpp)
    assert blue > 500 and orange > 500 and green > 500 and red > 100, (blue, orange, green, red)


_RESP = {"c-433122-a": "2m", "c-433122100-a": "7m", "c-433122101-b": "4m"}
_RESP["c-433122100200-a"] = "3m"


def test_skipped_and_cancelled_warnings_are_reported_not_crashed(tmp_path: Path) -> None:
    sc = Scenario(tmp_path, rows=county_rows(townships=1, villages=1))
    minor, lifted = "43312241600000_20250614000001", "43312241600000_20250614000002"
    sender = "433122_Meteorological_Observatory"

    async def run() -> None:
        async with sc:
            await sc.arrive(cap_xml(minor, T0, severity="Minor", status="Exercise"))
            await sc.arrive(cap_xml(lifted, T0))  # no onset: every stage now
            await sc.run_until(T0 + 7 * M)
            await sc.arrive(
                cap_xml(
                    "43312241600000_20250614000003",
                    T0 + 7 * M,
                    msg_type="Cancel",
                    references=[(sender, lifted, T0)],
                )
            )
            await sc.run_until(None)

    asyncio.run(run())
    f = Filled(sc, tmp_path)
    r = report_json(f, minor)
    w = r["warnings"][0]
    assert r["drill"] is True and w["drill"] is True
    assert w["skipped"] == "below min_severity (低于触发级别): Minor < Moderate"
    assert w["levels"] == [] and w["unanswered"] == []
    for fmt in ("terminal", "csv", "html"):
        res = f.run("report", minor, "--format", fmt)
        assert res.exit_code == 0, res.output
        assert "【演练】" in res.output
        assert "低于触发级别" in res.output
    gone = report_json(f, lifted)["warnings"][0]
    assert gone["state"] == "cancelled" and gone["lifts"] == 3  # county, township, village A
    assert {lv["level"]: lv["attempts"] for lv in gone["levels"]} == {
        "county": 2,
        "township": 2,
        "village": 2,
    }  # attempts 1 and 2 (at +5 min), then the lift at +7 min stopped everything
    out = tmp_path / "r.txt"
    res = f.run("report", lifted, "--out", str(out))
    assert res.exit_code == 0 and "各级叫应" in out.read_text(encoding="utf-8")


def test_onset_estimated_from_stage_times_when_a_drill_file_has_no_facts() -> None:
    from warnd.desk.report import estimate_facts

    leads = {"county": 6 * H, "township": 3 * H, "village": H}
    onset = T0 + 2 * H  # arrived at T0: county and township fired on arrival, village on time

    def notify(level: str, at: Any, attempt: int = 1) -> dict[str, Any]:
        return {"type": "notify", "rung": "stage", "attempt": attempt, "level": level,
                "at": at.isoformat()}  # fmt: skip

    events = [
        notify("county", T0),
        notify("township", T0),
        notify("county", T0 + 5 * M, 2),
        notify("village", onset - H),
    ]
    f = estimate_facts("w", events, leads)
    assert f.onset == onset and f.onset_kind == "estimated"
    due = {s.level: s.due_at for s in f.stages}
    assert due == {"county": T0, "township": T0, "village": onset - H}
    assert estimate_facts("w", [], leads).onset is None
