"""Deployment as docs/deployment.md describes it: the service's config, and duty officers who
are not the daemon's user (issue 13, item 9).

The second test plays three real Unix users (it needs root to switch between them): the
daemon's user ``warnd`` (its store in a 0750 state folder, files created under the unit's
``UMask=0027``), a duty officer in the group ``warnd``, and ``sudo -u warnd`` for the officer's
``warnd ack``. It runs the documented commands in child processes with those ids, while the
daemon holds the store open (``-wal``/``-shm`` present) and after it has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from factory import cap_xml, county_rows
from scenario import Scenario

from warnd.cli import main
from warnd.config.policy import load_config

REPO = Path(__file__).resolve().parents[1]
SERVICE_CONFIG = REPO / "systemd" / "warnd.toml"


def test_the_service_config_has_absolute_paths_and_passes_the_audit() -> None:
    raw = tomllib.loads(SERVICE_CONFIG.read_text(encoding="utf-8"))
    config = load_config(SERVICE_CONFIG)
    assert {"listen", "hooks", "feeds", "channels"} <= raw.keys()  # what `warnd serve` needs
    assert config.channels and config.listen.public_url == "https://warnd.example.gov.cn"
    paths = [
        config.store_url.removeprefix("sqlite:///"),
        str(config.contacts_path),
        raw["hooks"]["secret_file"],
        *(f["path"] for f in raw["feeds"] if "path" in f),
        *(c["path"] for c in raw["channels"].values() if "path" in c),
    ]
    assert all(Path(p).is_absolute() for p in paths), paths
    assert config.store_url == "sqlite:////var/lib/warnd/warnd.db"
    # the same 631 policy as the quick-start config, which passes its own audit
    quick = load_config(REPO / "config" / "warnd.toml")
    assert config.policy == quick.policy
    res = CliRunner().invoke(
        main, ["contacts", "audit", str(REPO / "contacts"), "--config", str(SERVICE_CONFIG)]
    )
    assert res.exit_code == 0, res.output


# --- duty officers who are not the daemon's user -------------------------------------------------

DAEMON, WARND_GROUP, OFFICER = 64101, 64100, 64102  # ids no account on a test machine uses
KEY = "43312241600005_20250704081500"
SENT = datetime.fromisoformat("2025-07-04T08:15:00+08:00")


@dataclass(frozen=True)
class User:
    """A Unix identity: what ``systemd`` gives the daemon, or a duty officer's login."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    umask: int


WARND_USER = User(DAEMON, WARND_GROUP, (WARND_GROUP,), 0o027)  # the unit: UMask=0027
OFFICER_USER = User(OFFICER, OFFICER, (WARND_GROUP,), 0o022)  # a login in the group warnd


def as_user(user: User, fn: Callable[[], Any]) -> Any:
    """``fn()`` in a child process that has dropped root for ``user`` (no capabilities left).

    Forked, not exec'd: the interpreter of a test machine may live where other users cannot
    run it (a pyenv under /root); every module the commands need is imported beforehand.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read)
        code = 0
        try:
            os.setgroups(list(user.groups))
            os.setgid(user.gid)
            os.setuid(user.uid)
            os.umask(user.umask)
            out = {"ok": fn()}
        except BaseException as exc:  # reported to the parent, which fails the test
            out, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
        with os.fdopen(write, "w", encoding="utf-8") as pipe:
            json.dump(out, pipe, default=str)
        os._exit(code)
    os.close(write)
    with os.fdopen(read, encoding="utf-8") as pipe:
        out = json.load(pipe)
    os.waitpid(pid, 0)
    assert "error" not in out, out["error"]
    return out["ok"]


def warnd(user: User, *args: str) -> dict[str, Any]:
    """A ``warnd`` command as ``user``: its exit code, stdout and stderr."""

    def run() -> dict[str, Any]:
        res = CliRunner().invoke(main, list(args))
        return {"code": res.exit_code, "stdout": res.stdout, "stderr": res.stderr}

    return as_user(user, run)  # type: ignore[no-any-return]


def files(state: Path) -> dict[str, list[int]]:
    return {
        p.name: [p.stat().st_uid, p.stat().st_gid, p.stat().st_mode & 0o777]
        for p in state.iterdir()
    }


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder every test user can reach (pytest's own temporary folders are root's, 0700)."""
    if os.geteuid() != 0:
        pytest.skip("acting as the daemon's user and as a duty officer needs root (setuid)")

    def readable() -> bool:
        try:
            return bool((REPO / "warnd" / "__init__.py").read_bytes())
        except OSError:
            return False

    if not as_user(OFFICER_USER, readable):  # as /opt/warnd is in production
        pytest.skip(f"the checkout {REPO} is not readable by other users (a 0700 folder above it)")
    path = Path(tempfile.mkdtemp(prefix="warnd-deploy-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_duty_officers_read_the_store_and_ack_through_the_daemons_user(base: Path) -> None:
    state = base / "lib"  # /var/lib/warnd: StateDirectoryMode=0750, owned warnd:warnd
    state.mkdir(mode=0o750)
    os.chown(state, DAEMON, WARND_GROUP)
    work = base / "work"  # the contacts (0750/0640 root:warnd under /etc/warnd in production)
    work.mkdir()
    os.chown(work, DAEMON, WARND_GROUP)
    url = f"sqlite:///{state / 'warnd.db'}"
    config = base / "warnd.toml"  # /etc/warnd/warnd.toml: 0640 root:warnd
    config.write_text(
        f'[store]\nurl = "{url}"\n[contacts]\npath = "{work / "contacts"}"\n', encoding="utf-8"
    )
    os.chown(config, 0, WARND_GROUP)
    config.chmod(0o640)
    clock = base / "clock"
    clock.write_text((SENT + timedelta(minutes=55)).isoformat(), encoding="utf-8")
    desk, seen = ["--config", str(config)], ["--clock-file", str(clock)]
    warm_up(base / "warm")  # every module the commands import, loaded before any fork

    # the daemon: fills its store, then holds it open until told to stop
    go, stop = os.pipe(), os.pipe()
    daemon = os.fork()
    if daemon == 0:
        os.close(go[0])
        os.close(stop[1])

        def hold() -> None:
            sc = Scenario(work, url, rows=county_rows(townships=1, villages=1), start=SENT)

            async def fill() -> None:
                async with sc:
                    await sc.arrive(cap_xml(KEY, SENT))
                    await sc.run_until(SENT + timedelta(minutes=50))  # nobody answers
                    os.write(go[1], b"ready")
                    os.read(stop[0], 1)

            asyncio.run(fill())

        status = 0
        try:
            os.setgroups([WARND_GROUP])
            os.setgid(WARND_GROUP)
            os.setuid(DAEMON)
            os.umask(0o027)
            hold()
        except BaseException as exc:  # said through the pipe instead of "ready"
            os.write(go[1], f"{type(exc).__name__}: {exc}".encode()[:4000])
            status = 1
        os._exit(status)
    os.close(go[1])
    os.close(stop[0])
    try:
        said = os.read(go[0], 4096)
        assert said == b"ready", said.decode(errors="replace")
        # the daemon is up: its store, -wal and -shm are the daemon's, group-readable, no more
        owned = files(state)
        assert {"warnd.db", "warnd.db-wal", "warnd.db-shm"} <= owned.keys()
        assert all(v == [DAEMON, WARND_GROUP, 0o640] for v in owned.values()), owned

        up = warnd(OFFICER_USER, "status", KEY, "--json", *desk, *seen)
        assert up["code"] == 0, up
        doc = json.loads(up["stdout"])
        village = next(d for d in doc["divisions"] if d["code"] == "433122100200")
        assert village["not_woken_at"] is not None
        assert village["persons"][0]["name"] == "村支书0-0"
        listed = warnd(OFFICER_USER, "unreached", "--json", *desk, *seen)
        assert listed["code"] == 0, listed
        assert "433122100200" in {e["division"] for e in json.loads(listed["stdout"])["entries"]}

        # the officer cannot write the daemon's store: one line that says what to do instead
        ack = ("ack", KEY, "--division", "433122100200", "--by", "张三", *desk)
        refused = warnd(OFFICER_USER, *ack)
        assert refused["code"] == 2 and refused["stdout"] == "", refused
        (line,) = refused["stderr"].splitlines()
        assert line.startswith("warnd: 无法写入数据库") and "sudo -u warnd warnd ack" in line
        # sudo -u warnd: the same command as the daemon's user records it
        done = warnd(WARND_USER, *ack)
        assert done["code"] == 0, done
        assert "未叫醒条目已处置" in done["stdout"]
        assert all(v[0] == DAEMON for v in files(state).values())
    finally:
        with contextlib.suppress(BrokenPipeError):  # a daemon that died has said why above
            os.write(stop[1], b"x")
        os.close(stop[1])
        os.close(go[0])
        _pid, status = os.waitpid(daemon, 0)
    assert status == 0

    # the daemon has stopped and closed its store: no -wal, no -shm, and the officer may not
    # create them in the 0750 folder; status and unreached still read it, creating nothing
    assert set(files(state)) == {"warnd.db"}
    down = warnd(OFFICER_USER, "unreached", "--json", *desk, *seen)
    assert down["code"] == 0, down
    entries = {e["division"] for e in json.loads(down["stdout"])["entries"]}
    assert "433122100200" not in entries and "433122100" in entries  # the ack is there
    text = warnd(OFFICER_USER, "status", KEY, *desk, *seen)
    assert text["code"] == 0, text
    assert "镇长0" in text["stdout"] and "13810000" in text["stdout"]
    # the report opens the store for writing (its schema check): as the daemon's user too
    report = warnd(OFFICER_USER, "report", KEY, "--json", *desk)
    assert report["code"] == 2 and "sudo -u warnd warnd" in report["stderr"], report
    report = warnd(WARND_USER, "report", KEY, "--json", *desk)
    assert report["code"] == 0 and json.loads(report["stdout"])["warnings"][0]["key"] == KEY
    assert set(files(state)) == {"warnd.db"}
    # the daemon's user writes while the daemon is down; officers see it at once
    again = warnd(WARND_USER, "ack", KEY, "--division", "433122100", "--by", "李四", *desk)
    assert again["code"] == 0, again
    after = json.loads(warnd(OFFICER_USER, "unreached", "--json", *desk, *seen)["stdout"])
    assert "433122100" not in {e["division"] for e in after["entries"]}
    assert all(v[0] == DAEMON for v in files(state).values())


def warm_up(folder: Path) -> None:
    """Run every command of the test once as root on a throwaway store (imports, caches)."""
    folder.mkdir()
    sc = Scenario(folder, rows=county_rows(townships=1, villages=1), start=SENT)

    async def fill() -> None:
        async with sc:
            await sc.arrive(cap_xml(KEY, SENT))
            await sc.run_until(SENT + timedelta(minutes=50))

    asyncio.run(fill())
    cfg = ["--config", str(sc.config())]
    for args in (
        ("status", KEY, "--json"),
        ("status", KEY),
        ("unreached", "--json"),
        ("ack", KEY, "--division", "433122100200", "--by", "x"),
    ):
        assert CliRunner().invoke(main, [*args, *cfg]).exit_code == 0


def test_duty_officers_on_postgresql_read_through_a_read_only_role(tmp_path: Path) -> None:
    """The PostgreSQL way (docs/deployment.md): a login role with read access only."""
    import asyncpg
    from conftest import drop_pg_database, fresh_pg_database, pg_url

    base = pg_url()
    url = asyncio.run(fresh_pg_database(base))
    role = f"warnd_duty_{os.getpid()}"
    sc = Scenario(tmp_path, url, rows=county_rows(townships=1, villages=1), start=SENT)

    async def setup() -> None:
        async with sc:
            await sc.arrive(cap_xml(KEY, SENT))
            await sc.run_until(SENT + timedelta(minutes=50))
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'CREATE ROLE "{role}" LOGIN')
            await conn.execute(f'GRANT pg_read_all_data TO "{role}"')
        finally:
            await conn.close()

    async def teardown() -> None:
        await drop_pg_database(base, url)
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await conn.close()

    asyncio.run(setup())
    try:
        _user, rest = url.split("://", 1)[1].split("@", 1)
        duty_url = f"postgresql://{role}@{rest}"
        cfg = tmp_path / "duty.toml"
        cfg.write_text(
            f'[store]\nurl = "{duty_url}"\n[contacts]\npath = "{sc.contacts}"\n', encoding="utf-8"
        )
        clock = tmp_path / "clock"
        clock.write_text((SENT + timedelta(minutes=55)).isoformat(), encoding="utf-8")
        args = ["--config", str(cfg)]
        seen = ["--clock-file", str(clock)]
        status = CliRunner().invoke(main, ["status", KEY, "--json", *args, *seen])
        assert status.exit_code == 0, status.output
        assert json.loads(status.stdout)["warning"]["key"] == KEY
        listed = CliRunner().invoke(main, ["unreached", "--json", *args, *seen])
        assert listed.exit_code == 0 and json.loads(listed.stdout)["entries"]
        ack = ["ack", KEY, "--division", "433122100200", "--by", "张三", *args]
        refused = CliRunner().invoke(main, ack)
        assert refused.exit_code == 2 and refused.stdout == ""
        (line,) = refused.stderr.splitlines()
        assert line.startswith("warnd: 无法写入数据库") and "sudo -u warnd" in line
    finally:
        asyncio.run(teardown())
