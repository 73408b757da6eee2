"""``warnd inspect`` on saved QWeather responses (contracts §9) and ``warnd feeds check``.

``feeds check`` runs as a real subprocess against the loopback fakes of the three sources
(tests/source_fakes.py) and a spool folder; it must report and change nothing.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from factory import cap_xml, county_rows, write_contacts
from source_fakes import CST, DATA, RSS_PATH, CmaDoc, SourceFake, elsewhere, nmc_json, qweather_json

from warnd.cli import main

QW = DATA / "qweather"
CONTRACT = ("identifier", "sender", "sent", "status", "msg_type", "references", "severity")
CONTRACT += ("onset", "expires", "effective", "geocodes", "areas")


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


# -- inspect on QWeather files -------------------------------------------------------------------


def test_inspect_qweather_alert_has_the_contract_keys() -> None:
    res = run("inspect", str(QW / "luxi-alert.json"), "--json")
    assert res.exit_code == 0, res.output
    (line,) = lines(res.output)
    assert all(k in line for k in ("file", "ok", *CONTRACT))
    assert line["ok"] is True and line["identifier"] == "202506140815105837988676"
    assert line["sent"] == "2025-06-14T08:15:00+08:00" and line["msg_type"] == "Alert"
    assert line["severity"] == "Severe" and line["references"] == []
    assert (line["onset"], line["expires"], line["effective"]) == (
        "2025-06-14T14:00:00+08:00",
        "2025-06-15T08:15:00+08:00",
        "2025-06-14T08:15:00+08:00",
    )
    assert line["geocodes"] == [] and line["areas"] == 0  # no point given
    assert line["dedup_key"] == "泸溪县气象台|暴雨|Severe|Alert|real|2025-06-14T00:15:00+00:00"


def test_update_and_cancel_references_name_superseded_ids() -> None:
    res = run("inspect", str(QW / "luxi-update.json"), str(QW / "luxi-cancel.json"), "--json")
    update, cancel = lines(res.output)
    assert update["msg_type"] == "Update" and update["severity"] == "Extreme"
    assert [r["identifier"] for r in update["references"]] == ["202506140815105837988676"]
    assert cancel["msg_type"] == "Cancel"
    assert [r["identifier"] for r in cancel["references"]] == ["202506141100208812736651"]


def test_empty_alerts_prints_nothing_and_exits_0() -> None:
    res = run("inspect", str(QW / "empty.json"), "--json")
    assert (res.exit_code, res.output) == (0, "")


def test_dedup_key_of_the_cap_copy_is_the_same() -> None:
    cap_line = lines(run("inspect", str(DATA / "wmo" / "luxi-rainstorm.xml"), "--json").output)[0]
    qw_line = lines(run("inspect", str(QW / "luxi-alert.json"), "--json").output)[0]
    assert cap_line["dedup_key"] == qw_line["dedup_key"]


def test_gzip_saved_bom_and_garbage(tmp_path: Path) -> None:
    raw = (QW / "luxi-alert.json").read_bytes()
    (tmp_path / "a.json.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + raw)
    (tmp_path / "html.json").write_bytes(b"{<html>")
    res = run(
        "inspect", *(str(tmp_path / n) for n in ("a.json.gz", "bom.json", "html.json")), "--json"
    )
    a, bom, html = lines(res.output)
    assert a["ok"] and bom["ok"] and a["identifier"] == bom["identifier"]
    assert html["ok"] is False and "not a QWeather JSON response" in html["error"]
    assert res.exit_code == 1


def test_odd_file_one_line_per_alert_and_errors_in_one_line() -> None:
    res = run("inspect", str(QW / "odd.json"), "--json")
    out = lines(res.output)
    assert res.exit_code == 1 and len(out) == 6
    assert [o["ok"] for o in out] == [False, True, False, False, False, True]
    assert all("\n" not in o.get("error", "") for o in out)


def test_point_gives_the_configured_division_codes(tmp_path: Path) -> None:
    cfg = tmp_path / "warnd.toml"
    cfg.write_text(
        '[[feeds]]\nname = "qw"\ntype = "qweather"\nhost = "https://q.invalid"\nkid = "K1"\n'
        'project = "P1"\nkey_file = "k.pem"\npoints = [\n'
        '  { code = "433122", lat = 28.22, lon = 110.22, name = "泸溪县" },\n'
        '  { code = "433122101", lat = 28.29, lon = 110.18, name = "浦市镇" },\n]\n',
        encoding="utf-8",
    )
    file = str(QW / "luxi-alert.json")
    for point, codes in (("浦市镇", ["433122101"]), ("28.22,110.22", ["433122"])):
        res = run("inspect", file, "--json", "--config", str(cfg), "--point", point)
        assert lines(res.output)[0]["geocodes"] == codes
    res = run("inspect", file, "--json", "--config", str(cfg), "--point", "nowhere")
    assert res.exit_code == 2 and "no such point" in res.output


# -- feeds check ---------------------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[SourceFake]:
    srv = SourceFake()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def write_config(tmp: Path, fake: SourceFake, key: Ed25519PrivateKey) -> Path:
    (tmp / "qw.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    write_contacts(tmp / "contacts", county_rows(townships=1, villages=1))
    spool = tmp / "spool"
    spool.mkdir()
    (spool / "a.xml").write_bytes(cap_xml("43312241600000_20250614081500", datetime.now(CST)))
    (spool / "b.xml").write_bytes(b"<not-cap/>")
    text = f"""
[store]
url = "sqlite:///{tmp / "never.db"}"
[contacts]
path = "{tmp / "contacts"}"
[[feeds]]
name = "spool"
path = "{spool}"
[[feeds]]
name = "cma"
url = "{fake.base}{RSS_PATH}"
priority = 1
[[feeds]]
name = "qweather"
type = "qweather"
host = "{fake.base}"
kid = "{fake.account.kid}"
project = "{fake.account.project}"
key_file = "{tmp / "qw.pem"}"
points = [{{ code = "433122", lat = 28.22, lon = 110.22 }}]
[[feeds]]
name = "nmc"
type = "nmc"
url = "{fake.base}/rest/findAlarm"
"""
    path = tmp / "warnd.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def cli(*args: str) -> tuple[int, str, str]:
    code = "from warnd.cli import main; main()"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_feeds_check_reports_every_source_and_changes_nothing(
    tmp_path: Path, fake: SourceFake
) -> None:
    key = Ed25519PrivateKey.generate()
    fake.account.public_key = key.public_key()
    t = datetime(2025, 6, 14, 8, 15, tzinfo=CST)
    ours = CmaDoc(
        "43312241600000_20250614081500", t, "Luxi_Meteorological_Observatory", "433122000000"
    )
    fake.publish(ours, *elsewhere(40, t - timedelta(days=1)))
    fake.point(28.22, 110.22, qweather_json("luxi-alert.json"))
    fake.nmc = nmc_json()
    config = write_config(tmp_path, fake, key)

    rc, out, _err = await cli("feeds", "check", "--config", str(config), "--json")
    by = {r["feed"]: r for r in lines(out)}
    assert list(by) == ["cma", "spool", "qweather", "nmc"]  # most trusted first
    cma = by["cma"]
    assert (cma["listed"], cma["skipped"], cma["items"], cma["accepted"]) == (41, 40, 1, 1)
    assert (
        cma["newest"] == f"{ours.identifier} (2025-06-14T08:15:00+08:00)" and cma["error"] is None
    )
    assert fake.downloads() == 1
    qw = by["qweather"]
    assert (qw["listed"], qw["accepted"], qw["error"]) == (1, 1, None)
    assert qw["newest"].startswith("202506140815105837988676")
    nmc = by["nmc"]
    assert (nmc["role"], nmc["listed"], nmc["skipped"]) == ("check", 4, 3)  # only Luxi's is ours
    spool = by["spool"]
    assert (spool["listed"], spool["accepted"], spool["rejected"]) == (2, 1, 1)
    assert "not a CAP alert" in spool["error"] and rc == 1  # a source had an error
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == ["a.xml", "b.xml"]
    assert not (tmp_path / "never.db").exists()  # nothing stored, nothing dispatched

    (tmp_path / "spool" / "b.xml").unlink()
    fake.fail["/weatheralert/v1/current/28.22/110.22"] = [401]
    rc, out, _ = await cli("feeds", "check", "--config", str(config), "--json")
    qw = {r["feed"]: r for r in lines(out)}["qweather"]
    assert rc == 1 and "401" in qw["error"]
    fake.fail.clear()
    rc, out, _ = await cli("feeds", "check", "--config", str(config))
    assert rc == 0 and "预警来源检查" in out and "cma" in out
