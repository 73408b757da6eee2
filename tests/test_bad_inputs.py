"""Bad contacts and bad config through the command line, and bad contacts reloads in a running
daemon (contracts §1, §2).

Every malformed input of the contacts directory and of the config file yields one line naming
the file, the line and the field, and a non-zero exit (the cases are those of
``tests/test_directory.py`` and ``tests/test_policy.py``, here through ``warnd`` itself). A
running daemon whose contacts reload fails (SIGHUP or ``reload_directory()``: a folder gone,
a header missing a column, not UTF-8, no CSV at all) keeps the directory it had, and the chain
goes on calling the old contacts.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner, Result
from crash_rig import Run
from daemon_rig import ID, T0, Harness, calls_of
from factory import HEADER, cap_xml, county_rows, write_contacts
from input_cases import BAD, BASE, DAEMON, DIVISION_PROBLEMS, NEXT, ROW_PROBLEMS, SECTION2

from warnd.cli import main
from warnd.edges import logs
from warnd.testing import eventually

EXAMPLE_CAP = Path(__file__).resolve().parents[1] / "examples" / "feed"


def warnd(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def one_line(result: Result, *needles: str, code: int = 2, logs: bool = False) -> str:
    """A failure: exit ``code``, nothing on stdout, one line on stderr naming ``needles``.

    ``logs``: ``warnd serve`` logs to stderr too (journald); its JSON log lines are not counted.
    """
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    if logs:
        lines = [line for line in lines if not (line.startswith("{") and json.loads(line))]
    assert len(lines) == 1 and lines[0].startswith("warnd: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ---- contacts (contracts §1) ----------------------------------------------------------------

#: the contract's list, each alone in an otherwise clean directory: (rows after BASE, kind)
CONTRACT_CASES = [
    *((row, kind) for row, kind, _named, _kept in ROW_PROBLEMS),
    *((row, kind) for row, kind, _line in DIVISION_PROBLEMS),
]


@pytest.mark.parametrize(("row", "kind"), CONTRACT_CASES, ids=[k for _, k in CONTRACT_CASES])
def test_each_contacts_problem_is_one_line_with_file_and_line(
    tmp_path: Path, row: str, kind: str
) -> None:
    path = tmp_path / "a.csv"
    path.write_text(HEADER + BASE + row, encoding="utf-8")
    result = warnd("contacts", "check", str(path))
    assert result.exit_code == 1, result.output
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"{path}:{NEXT}: "), line
    assert len(result.stderr.splitlines()) == 1 and "1 个问题" in result.stderr
    doc = json.loads(warnd("contacts", "check", str(path), "--json").stdout)
    assert [(p["kind"], p["line"]) for p in doc["problems"]] == [(kind, NEXT)]


def test_a_county_without_duty_office_is_named(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(HEADER + BASE.split("\n", 1)[1], encoding="utf-8")  # the duty row removed
    result = warnd("contacts", "check", str(path))
    assert result.exit_code == 1
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"{path}:2: ") and "值班室" in line


def test_a_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + BASE).encode())
    result = warnd("contacts", "check", str(path))
    assert result.exit_code == 0 and result.stdout.startswith("通讯录检查通过")


def unloadable(tmp: Path) -> dict[str, tuple[Path, str]]:
    """Directories that cannot be loaded at all, and what their one line must say."""
    tmp.mkdir(parents=True, exist_ok=True)
    header = tmp / "header"
    header.mkdir()
    (header / "a.csv").write_text("contact_id,division_code,name\nc-1,433122,张三\n", "utf-8")
    gbk = tmp / "gbk"
    gbk.mkdir()
    (gbk / "a.csv").write_bytes((HEADER + BASE).encode("gbk"))
    empty = tmp / "empty"
    empty.mkdir()
    blank = tmp / "blank"
    blank.mkdir()
    (blank / "a.csv").write_text("\n\n", encoding="utf-8")
    return {
        "missing folder": (tmp / "gone", "gone"),
        "missing columns": (header, "a.csv:1"),
        "not UTF-8": (gbk, "UTF-8"),
        "no CSV": (empty, ".csv"),
        "blank file": (blank, "contact_id"),
    }


def test_unloadable_contacts_are_one_line_for_every_command(tmp_path: Path) -> None:
    cap_file = next(EXAMPLE_CAP.glob("*.xml"))
    for what, (path, needle) in unloadable(tmp_path / "c").items():
        one_line(warnd("contacts", "check", str(path)), needle)
        result = warnd("plan", str(cap_file), "--contacts", str(path), "--json")
        assert one_line(result, needle), what


# ---- config (contracts §2 and the daemon tables of §7) ----------------------------------------


@pytest.fixture(scope="module")
def plan_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    tmp = tmp_path_factory.mktemp("plan")
    write_contacts(tmp / "contacts", county_rows())
    cap_file = tmp / "w.xml"
    cap_file.write_bytes(cap_xml(ID, T0))
    return ["plan", str(cap_file), "--contacts", str(tmp / "contacts"), "--json"]


@pytest.mark.parametrize(("text", "key"), BAD, ids=[k for _, k in BAD])
def test_each_bad_config_value_is_one_line_naming_the_key(
    tmp_path: Path, plan_args: list[str], text: str, key: str
) -> None:
    path = tmp_path / "warnd.toml"
    path.write_text(text + "\n", encoding="utf-8")
    line = one_line(warnd(*plan_args, "--config", str(path)), str(path), f": {key}: ")
    assert "hunter2" not in line  # a secret written into the file is not echoed


def test_unusable_config_files_are_one_line(tmp_path: Path, plan_args: list[str]) -> None:
    cases = {
        "missing.toml": None,
        "syntax.toml": b'[ack\nwindow = "5m"\n',
        "latin1.toml": 'timezone = "Asia/Shanghai" # \xe9\n'.encode("latin-1"),
        "binary.toml": bytes(range(256)),
    }
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        one_line(warnd(*plan_args, "--config", str(path)), name)


def test_serve_names_what_it_lacks_in_one_line(tmp_path: Path) -> None:
    section2 = tmp_path / "section2.toml"
    section2.write_text(SECTION2, encoding="utf-8")
    one_line(warnd("serve", "--config", str(section2)), "[[feeds]]", logs=True)
    no_secret = tmp_path / "no-secret.toml"
    no_secret.write_text(SECTION2 + DAEMON, encoding="utf-8")  # secret_env that is not set
    os.environ.pop("WARND_TEST_HOOK_SECRET", None)
    one_line(warnd("serve", "--config", str(no_secret)), "hooks", logs=True)
    contacts = unloadable(tmp_path / "c")["missing columns"][0]
    bad_contacts = tmp_path / "bad-contacts.toml"
    text = SECTION2 + f'[contacts]\npath = "{contacts}"\n' + DAEMON
    bad_contacts.write_text(text.replace("spool/incoming", str(tmp_path / "in")), "utf-8")
    os.environ["WARND_TEST_HOOK_SECRET"] = "not-used-by-any-test-but-this-0123456789"
    try:
        one_line(warnd("serve", "--config", str(bad_contacts)), "a.csv:1", logs=True)
    finally:
        del os.environ["WARND_TEST_HOOK_SECRET"]


# ---- a bad reload keeps the old directory -----------------------------------------------------

H = timedelta(hours=1)
M = timedelta(minutes=1)
COUNTY_B, OLD_B, NEW_B = "c-433122-b", "+8613810000002", "13900000099"


def breakages(folder: Path, rows: list[list[str]]) -> dict[str, Callable[[], None]]:
    """Ways a contacts reload goes wrong; each leaves a directory that would change a number."""
    changed = [[*r[:7], NEW_B, ""] if r[0] == COUNTY_B else r for r in rows]

    def fresh(*extra: tuple[str, bytes]) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        write_contacts(folder, changed)
        for name, data in extra:
            (folder / name).write_bytes(data)

    def gone() -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def empty() -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()

    return {
        "missing header column": lambda: fresh(("zz.csv", b"contact_id,name\nc-9,x\n")),
        "not UTF-8": lambda: fresh(("zz.csv", (HEADER + BASE).encode("gbk"))),
        "folder gone": gone,
        "no CSV left": empty,
    }


async def test_a_bad_reload_keeps_the_old_contacts_and_the_chain_goes_on(tmp_path: Path) -> None:
    log = io.StringIO()
    logs.configure(json=True, level="info", file=log)
    h = Harness(tmp_path)
    await h.start()
    try:
        await h.feed(cap_xml(ID, T0, expires=T0 + 12 * H))  # every stage at arrival: 7 calls
        daemon = h.daemon
        assert daemon.engine is not None
        old = daemon.engine.ctx.directory
        for what, breaks in breakages(tmp_path / "contacts", h.rows).items():
            breaks()
            assert daemon.reload_directory() is False, what
            assert daemon.engine.ctx.directory is old, what
        async with h.http.get(h.monitor + "/healthz") as resp:
            assert (await resp.json())["contacts"] == len(h.rows)
        failed = [json.loads(x) for x in log.getvalue().splitlines() if "reload_failed" in x]
        assert len(failed) == 4 and all("\n" not in f["error"] for f in failed)

        for minutes in (5, 10):
            await h.to(T0 + minutes * M)
        backup = await h.to(T0 + 15 * M)  # nobody answered: backups, from the old directory
        county_b = [s for s in backup if s.contact == COUNTY_B]
        assert calls_of(county_b) == [("433122", "backup", COUNTY_B, 1)]
        assert county_b[0].receipt.body["to"] == OLD_B

        write_contacts(
            tmp_path / "contacts", [*h.rows, ["c-new", *h.rows[0][1:7], "13900000100", ""]]
        )
        assert daemon.reload_directory() is True  # a good reload is taken
        assert len(daemon.engine.ctx.directory) == len(h.rows) + 1
    finally:
        await h.stop()


async def test_sighup_with_a_broken_directory_keeps_serve_running(tmp_path: Path) -> None:
    """The real ``warnd serve`` process: SIGHUP reloads; a broken directory is not taken."""
    run = Run(tmp_path)
    url = await run.gateway.start()
    rows = county_rows()
    write_contacts(tmp_path / "contacts", rows)
    (tmp_path / "secret").write_bytes(b"sighup-test-secret-0123456789abcdef")
    (tmp_path / "warnd.toml").write_text(
        f"""
[store]
url = "sqlite:///{tmp_path / "warnd.db"}"
[contacts]
path = "{tmp_path / "contacts"}"
[listen]
host = "127.0.0.1"
port = 0
[hooks]
secret_file = "{tmp_path / "secret"}"
[[feeds]]
name = "incoming"
path = "{tmp_path / "incoming"}"
[channels.gateway]
type = "webhook"
url = "{url}"
""",
        encoding="utf-8",
    )
    run.set_clock(T0)
    await run.start()
    assert run.proc is not None
    try:
        assert await contacts_served(run) == len(rows)
        breakages(tmp_path / "contacts", rows)["missing header column"]()
        run.proc.send_signal(signal.SIGHUP)
        await logged(run, "contacts_reload_failed")
        assert run.proc.returncode is None and await contacts_served(run) == len(rows)
        (tmp_path / "contacts" / "zz.csv").unlink()  # repaired, and one person fewer
        write_contacts(tmp_path / "contacts", rows[:-1])
        run.proc.send_signal(signal.SIGHUP)
        await logged(run, "contacts_reloaded")
        assert await contacts_served(run) == len(rows) - 1
        assert await run.terminate() == 0
    finally:
        if run.proc.returncode is None:
            run.proc.kill()
            await run.proc.wait()
        await run.gateway.stop()


async def contacts_served(run: Run) -> int:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{run.monitor}/healthz") as resp,
    ):
        count: int = (await resp.json())["contacts"]
        return count


async def logged(run: Run, event: str, timeout: float = 10.0) -> None:
    """Wait (bounded) for a log line of the running process naming ``event``."""
    log = run.tmp / f"serve-{run.runs}.log"
    await eventually(
        lambda: f'"{event}"' in log.read_text(encoding="utf-8", errors="replace"),
        timeout=timeout,
        every=0.05,
        what=f"a {event} line",
    )
