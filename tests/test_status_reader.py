"""The duty desk's light read path: ``warnd.desk.views.reader`` and ``warnd.desk.views.names``.

``warnd status`` / ``warnd unreached`` read the store through the stdlib ``sqlite3`` or
``asyncpg`` (never SQLAlchemy, SQLModel, pydantic, Alembic or lxml, which cost half a second to
import) and look up only the names they show. Checked here on both backends: the commands'
imports in a fresh interpreter, the reader against the ORM (same rows, same aware UTC
timestamps), read-only connections, the schema check and its one-line errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import BACKENDS, drop_pg_database, fresh_pg_database, pg_url
from factory import cap_xml, county_rows
from scenario import T0, Scenario
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from warnd.cli import main
from warnd.core.errors import ContactsError, StoreError
from warnd.core.revision import HEAD
from warnd.desk import views
from warnd.desk.views.names import names
from warnd.desk.views.reader import bind, open_reader
from warnd.store import Store, async_url, schema
from warnd.store.tables import WarningRow

KEY = "43312241600000_20250614080000"
AT = T0 + 2 * timedelta(hours=1)
M = timedelta(minutes=1)
HEAVY = ("sqlalchemy", "sqlmodel", "pydantic", "alembic", "lxml", "aiosqlite", "warnd.engine")


@pytest.fixture(scope="module", params=BACKENDS)
def filled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenario]:
    """One warning without onset, 2 h of the chain: escalations and not-woken entries."""
    tmp = tmp_path_factory.mktemp("reader")
    url = None
    if request.param == "postgresql":
        url = asyncio.run(fresh_pg_database(pg_url()))
    sc = Scenario(
        tmp, url, rows=county_rows(townships=1, villages=2), responders={"c-433122-a": 3 * M}
    )

    async def fill() -> None:
        async with sc:
            await sc.arrive(cap_xml(KEY, T0))
            await sc.run_until(AT)

    asyncio.run(fill())
    sc.config()
    (tmp / "clock").write_text(AT.isoformat(), encoding="utf-8")
    yield sc
    if url is not None:
        asyncio.run(drop_pg_database(pg_url(), url))


_PROBE = """
import json, sys
from warnd.cli import main
for args in json.loads(sys.argv[1]):
    try:
        main(args, standalone_mode=False)
    except SystemExit as exc:
        assert not exc.code, (args, exc.code)
print("MODULES=" + json.dumps(sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)))
"""


def test_status_and_unreached_never_import_the_orm(filled: Scenario) -> None:
    """Run in a fresh interpreter: what the three commands imported, on this backend."""
    common = ["--config", str(filled.tmp / "warnd.toml"), "--clock-file", str(filled.tmp / "clock")]
    runs = [
        ["status", *common],
        ["status", KEY, "--names", *common],
        ["status", KEY, "--json", *common],
        ["unreached", *common],
    ]
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(runs), json.dumps([*HEAVY, "asyncpg"])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "43312210020" in out  # the commands did print their tables
    assert "村支书" in out  # and names from the contacts (--names; unreached by default)
    loaded = json.loads(out.rsplit("MODULES=", 1)[1])
    expected = ["asyncpg"] if filled.url.startswith("postgresql") else []
    assert loaded == expected


_CHANNELS = """
[channels.sms-cloud]
type = "tencent"
kinds = ["sms", "voice"]
secret_id = "AKIDexample"
secret_key_env = "WARND_TEST_TENCENT_KEY"
sms_sdk_app_id = "1400000000"
sms_sign_name = "防汛"
sms_template_id = "100"
voice_sdk_app_id = "1400000001"
voice_template_id = "200"

[channels.voice-cloud]
type = "aliyun"
kinds = ["sms"]
access_key_id = "LTAIexample"
access_key_secret_env = "WARND_TEST_ALIYUN_SECRET"
sms_sign_name = "防汛"
sms_template = "SMS_1"
"""


def test_status_with_channels_configured_never_imports_the_orm(filled: Scenario) -> None:
    """``[channels.*]`` are checked when the config loads (every channel module is imported):
    none of them reaches the store (channels.delivery → metrics used to import warnd.store)."""
    config = filled.tmp / "with-channels.toml"
    config.write_text((filled.tmp / "warnd.toml").read_text("utf-8") + _CHANNELS, "utf-8")
    common = ["--config", str(config), "--clock-file", str(filled.tmp / "clock")]
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps([["status", *common]]), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert KEY in out  # the command did print its table
    assert json.loads(out.rsplit("MODULES=", 1)[1]) == []


def test_reader_gives_the_orm_rows_and_timestamps(filled: Scenario) -> None:
    async def both() -> tuple[Any, ...]:
        store = await Store.open(filled.url, create=False)
        reader = await open_reader(filled.url)
        try:
            via_orm = await views.warnings(store, AT)
            via_reader = await views.warnings(reader, AT)
            w = await views.warning(reader, KEY[:20], AT)
            d_orm = await views.detail(store, w, AT)
            d_reader = await views.detail(reader, w, AT)
            nw = (await views.not_woken(store), await views.not_woken(reader))
            async with store.read() as s:
                row = (await s.execute(select(WarningRow))).scalars().one()
            raw = await reader.fetch(
                "SELECT arrived_at, drill FROM warning WHERE key = :k", {"k": KEY}
            )
            return via_orm, via_reader, d_orm, d_reader, nw, row, raw
        finally:
            await reader.close()
            await store.close()

    via_orm, via_reader, d_orm, d_reader, (nw_orm, nw_reader), row, raw = asyncio.run(both())
    assert via_reader == via_orm and len(via_reader) == 1
    assert via_reader[0].levels and via_reader[0].totals.divisions == 4
    assert d_reader == d_orm and d_reader.total == 4
    assert nw_reader == nw_orm and nw_reader  # villages escalated to the duty office's list
    stamp = views.Timestamps()(raw[0][0])
    assert stamp == row.arrived_at and stamp is not None and stamp.tzinfo == UTC
    assert bool(raw[0][1]) is row.drill is False  # SQLite 0/1, PostgreSQL a boolean


@contextlib.asynccontextmanager
async def orm_session(url: str) -> AsyncIterator[AsyncSession]:
    """A plain SQLAlchemy session (the ORM's own writes, to compare with)."""
    engine = create_async_engine(async_url(url))
    try:
        async with AsyncSession(engine) as session:
            yield session
    finally:
        await engine.dispose()


async def test_timestamps_parse_as_the_orm_does(store_url: str) -> None:
    """Whole seconds, microseconds and a non-UTC offset all come back as the same UTC instant."""
    instants = [
        datetime(2025, 6, 14, 0, 0, tzinfo=UTC),
        datetime(2025, 6, 14, 0, 0, 1, 250, tzinfo=UTC),
        datetime(2025, 6, 14, 8, 30, 5, 999999, tzinfo=timezone(timedelta(hours=8))),
    ]
    store = await Store.open(store_url)
    try:
        async with orm_session(store_url) as s, s.begin():
            for i, t in enumerate(instants):
                s.add(WarningRow(key=f"k{i}", sender="s", identifier=f"k{i}", drill=i == 1,
                                 arrived_at=t, updated_at=t, reference_at=t))  # fmt: skip
        async with store.read() as s:
            orm = (await s.execute(select(WarningRow).order_by(text("id")))).scalars().all()
    finally:
        await store.close()
    reader = await open_reader(store_url)
    try:
        rows = await reader.fetch(
            "SELECT arrived_at, reference_at, drill FROM warning WHERE key IN :keys ORDER BY id",
            {"keys": ["k0", "k1", "k2"]},
        )
    finally:
        await reader.close()
    ts = views.Timestamps()
    assert [ts(r[0]) for r in rows] == [w.arrived_at for w in orm] == instants
    assert all(ts(r[1]).tzinfo == UTC for r in rows)  # type: ignore[union-attr]
    assert [bool(r[2]) for r in rows] == [False, True, False]


async def test_the_reader_cannot_write(store_url: str) -> None:
    await (await Store.open(store_url)).close()
    reader = await open_reader(store_url)
    try:
        with pytest.raises(Exception, match=r"(?i)read.?only"):
            await reader.fetch("DELETE FROM alembic_version")
        assert (await reader.fetch("SELECT version_num FROM alembic_version"))[0][0] == HEAD
    finally:
        await reader.close()


async def test_schema_check_gives_the_stores_one_line_errors(store_url: str) -> None:
    if store_url.startswith("sqlite"):
        path = Path(store_url[len("sqlite:///") :])
        with pytest.raises(StoreError, match=r"no store at .*warnd db upgrade"):
            await open_reader(store_url)
        assert not path.exists()  # never created
        sqlite3.connect(path).close()  # an empty file: a database without tables
    with pytest.raises(StoreError, match="the store is empty: run `warnd db upgrade`"):
        await open_reader(store_url)  # a fresh PostgreSQL database has no tables either
    await (await Store.open(store_url)).close()
    async with orm_session(store_url) as s, s.begin():
        await s.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StoreError, match="9999 is newer than this warnd"):
        await open_reader(store_url)


def test_head_lives_in_one_place() -> None:
    assert schema.HEAD == schema.head() == HEAD


def test_an_unreachable_server_is_a_one_line_error(tmp_path: Path) -> None:
    cfg = tmp_path / "warnd.toml"
    cfg.write_text('[store]\nurl = "postgresql://postgres@127.0.0.1:1/none"\n', encoding="utf-8")
    for cmd in ("status", "unreached"):
        res = CliRunner().invoke(main, [cmd, "--config", str(cfg)])
        assert res.exit_code == 2, res.output
        assert res.output.startswith("warnd: 无法打开数据库 (cannot open store postgresql://")
        assert len(res.output.strip().splitlines()) == 1


def test_bind_expands_lists_and_leaves_literals_alone() -> None:
    sql = "SELECT ':not' FROM t WHERE a = :a AND b IN :bs AND c IN :none AND d = :a AND e::text"
    q, args = bind(sql, {"a": 1, "bs": [2, 3], "none": []}, lambda n: f"${n}")
    assert q == (
        "SELECT ':not' FROM t WHERE a = $1 AND b IN ($2, $3) AND c IN (NULL) AND d = $4 AND e::text"
    )
    assert args == [1, 2, 3, 1]
    q, args = bind("x IN :ids", {"ids": (7,)}, lambda _n: "?")
    assert (q, args) == ("x IN (?)", [7])
    with pytest.raises(KeyError, match=":missing"):
        bind("x = :missing", {}, lambda _n: "?")


def test_names_reads_only_the_ids_asked_for(tmp_path: Path) -> None:
    folder = tmp_path / "contacts"
    folder.mkdir()
    # column order is free, a BOM is accepted; the first row of an id wins, as in the directory
    (folder / "a.csv").write_bytes(
        "\ufeffname,phone,Contact_ID ,rank\n 张三 ,13812345678,c-1,A\n李四,13812345679,c-2,A\n"
        ",13812345670,c-3,B\n".encode()
    )
    (folder / "b.csv").write_text(
        'contact_id,name,role\nc-1,重复,x\nc-4,"王, 五","防汛, 责任人"\nc-5,"多\n行",y\n',
        encoding="utf-8",
    )
    (folder / "c.csv").write_text(  # blank lines before the header; a row of another width
        "\n,,\ncontact_id,name\r\nc-7,赵六,多一列\r\nc-8,钱七\r\n", encoding="utf-8"
    )
    (folder / "notes.txt").write_text("contact_id,name\nc-6,不是通讯录\n", encoding="utf-8")
    found = names(folder, ["c-1", "c-3", "c-4", "c-5", "c-6", "c-7", "c-8", "c-9"])
    assert found == {"c-1": "张三", "c-4": "王, 五", "c-5": "多\n行", "c-8": "钱七"}
    assert names(folder / "a.csv", {"c-2"}) == {"c-2": "李四"}
    assert names(tmp_path / "nowhere", []) == {}  # nothing asked: nothing read
    with pytest.raises(ContactsError, match="path not found"):
        names(tmp_path / "nowhere", ["c-1"])
