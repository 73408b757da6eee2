"""Status benchmark: ``warnd status`` on a 100,000-person warning in a real SQLite store.

Builds the store with the real engine (no hand-made rows): a generated province directory
(tests/directory_gen.py: 122 counties × 12 townships × 17 villages, 4 A + 4 B per village), a
province-wide warning without onset (every stage fires at once: ~102,000 calls), every message
"sent", then 50 minutes of the chain on a ManualClock: 60 % of the A persons answer within
3 minutes, in 10 % of the villages nobody answers at all (B, superior, duty, the not-woken
list), the rest never answer (redials to the end). Answers go through the engine's own
acknowledgement path (``engine.ack_messages``: IVR key presses on each call's latest attempt).

Then times, best of 3 each, with an in-run baseline (``python -c "import warnd.cli"``):
  * ``views.warnings`` (what ``warnd status`` shows) and ``views.warning`` + ``views.detail``
    (``warnd status WARNING``: every division and person), function level, through the
    commands' own read path (``warnd.desk.views.reader``);
  * rendering: the detail's JSON (``json.dumps`` of every person) and its terminal table;
  * importing the status command (``python -c "import warnd.cli.status"``);
  * the CLI as a subprocess: ``status``, ``status WARNING`` (terminal, 200 rows),
    ``status WARNING --json`` (all rows), ``unreached``; then with the generated contacts
    directory in the config: ``unreached`` and ``status WARNING`` (both show names by default).

Usage: .venv/bin/python bench/status.py [--villages-per-township 17] [--keep DIR]
(``--keep DIR`` builds into DIR once; run again with the same DIR to measure without building.)
Exits 1 when ``status``, ``status WARNING`` or ``unreached`` (terminal; also with the contacts
configured) misses the 1 s target.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from directory_gen import generate  # noqa: E402
from factory import cap_xml  # noqa: E402
from rich.console import Console  # noqa: E402

from warnd.cli.statusview import Fmt, detail_json, detail_view, summary_view  # noqa: E402
from warnd.config.policy import Policy  # noqa: E402
from warnd.core import directory  # noqa: E402
from warnd.core.clock import ManualClock  # noqa: E402
from warnd.desk import views  # noqa: E402
from warnd.desk.views.reader import open_reader  # noqa: E402
from warnd.edges import logs  # noqa: E402
from warnd.edges.feeds import FeedItem  # noqa: E402
from warnd.engine import Context, Engine  # noqa: E402
from warnd.store import Store  # noqa: E402

KEY = "43000041600000_20250701000000"
T0 = datetime(2025, 7, 1, 0, 0, tzinfo=UTC)
M = timedelta(minutes=1)
ZONE = __import__("zoneinfo").ZoneInfo("Asia/Shanghai")


async def send_all(engine: Engine) -> int:
    n = 0
    while True:
        claimed = await engine.claim(limit=50_000)
        if not claimed:
            return n
        await engine.record([m.sent("gateway") for m in claimed])
        n += len(claimed)


async def answer(engine: Engine, rng: random.Random, silent: set[str]) -> int:
    """60 % of the open stage calls outside the silent villages are answered, in batches."""
    rows = await engine.ctx.store.fetch(
        "SELECT c.last_message, d.code FROM call c JOIN division d ON d.id = c.division_id"
        " WHERE c.state = 'active' AND c.rung = 'stage'"
    )
    picked = [r[0] for r in rows if r[1] not in silent and rng.random() < 0.6]
    for i in range(0, len(picked), 5000):
        await engine.ack_messages(picked[i : i + 5000], "ivr")
    return len(picked)


async def build(tmp: Path, villages: int) -> tuple[str, datetime, dict[str, Any]]:
    gen = generate(tmp / "contacts", 122, 12, villages, 8, seed=7)
    d, problems = directory.load(tmp / "contacts")
    assert not problems
    url = f"sqlite:///{tmp / 'warnd.db'}"
    store = await Store.open(url)
    clock = ManualClock(T0)
    engine = Engine(Context(store=store, directory=d, policy=Policy.default(), clock=clock))
    figures: dict[str, Any] = {"directory_rows": gen.rows}
    t = time.perf_counter()
    alert = cap_xml(KEY, T0, geocodes=["430000000000"], severity="Extreme",
                    headline="湖南省气象台发布暴雨红色预警")  # fmt: skip
    await engine.ingest(FeedItem(alert, "bench"))
    await engine.tick()
    await send_all(engine)
    rng = random.Random(11)
    codes = [x.code for x in d.divisions() if x.level == "village"]
    silent = set(rng.sample(codes, len(codes) // 10))
    clock.advance(3 * M)
    figures["answered"] = await answer(engine, rng, silent)
    for _ in range(10):  # five-minute steps to T0 + 50 min: redials, B, superior, duty
        clock.advance(5 * M if clock.now() > T0 + 3 * M else 2 * M)
        await engine.tick()
        await send_all(engine)
    figures["build_s"] = round(time.perf_counter() - t, 1)
    async with store.read() as s:
        for name, sql in (
            ("divisions", "SELECT count(*) FROM division"),
            ("calls", "SELECT count(*) FROM call"),
            ("persons", "SELECT count(DISTINCT contact_id) FROM call"),
            ("outbox", "SELECT count(*) FROM outbox"),
            ("events", "SELECT count(*) FROM event"),
            ("not_woken", "SELECT count(*) FROM division WHERE unreached_at IS NOT NULL"),
        ):
            figures[name] = (await s.execute(text(sql))).scalar_one()
    await store.close()
    return url, clock.now(), figures


async def best(fn: Callable[[], Awaitable[Any]], n: int = 3) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(n):
        t = time.perf_counter()
        out = await fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def best_cli(args: list[str], n: int = 3) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        times.append(time.perf_counter() - t)
    return min(times)


async def measure(url: str, now: datetime, tmp: Path) -> dict[str, Any]:
    store = await open_reader(url)
    f = Fmt(ZONE, now)
    out: dict[str, Any] = {}
    try:
        secs, ws = await best(lambda: views.warnings(store, now))
        out["views.warnings_s"] = round(secs, 3)

        async def shown() -> views.Detail:  # what the terminal shows: the 200 most urgent
            w = await views.warning(store, KEY, now)
            return await views.detail(store, w, now, limit=200)

        async def every() -> views.Detail:  # what --json prints: every division and person
            w = await views.warning(store, KEY, now)
            return await views.detail(store, w, now)

        secs, d = await best(shown)
        out["views.warning+detail_200_s"] = round(secs, 3)
        con = Console(file=io.StringIO(), width=160)
        t = time.perf_counter()
        con.print(detail_view(d, f))
        con.print(summary_view(ws, f, None))
        out["terminal_render_s"] = round(time.perf_counter() - t, 3)
        secs, d = await best(every)
        out["views.warning+detail_all_s"] = round(secs, 3)
        out["detail_persons"] = sum(len(x.persons) for x in d.divisions)
        t = time.perf_counter()
        body = json.dumps(detail_json(d, f), ensure_ascii=False)
        out["detail_json_render_s"] = round(time.perf_counter() - t, 3)
        out["detail_json_mb"] = round(len(body.encode()) / 1e6, 1)
        secs, entries = await best(lambda: views.not_woken(store))
        out["views.not_woken_s"] = round(secs, 3)
        out["not_woken_entries"] = len(entries)
    finally:
        await store.close()
    cfg = tmp / "warnd.toml"
    cfg.write_text(f'[store]\nurl = "{url}"\n', encoding="utf-8")
    clock = tmp / "clock"
    clock.write_text(now.isoformat(), encoding="utf-8")
    warnd = str(Path(sys.executable).with_name("warnd"))
    common = ["--config", str(cfg), "--clock-file", str(clock)]
    out["baseline_import_warnd_cli_s"] = round(
        best_cli([sys.executable, "-c", "import warnd.cli"]), 3
    )
    out["import_warnd_cli_status_s"] = round(
        best_cli([sys.executable, "-c", "import warnd.cli.status"]), 3
    )
    out["cli_status_s"] = round(best_cli([warnd, "status", *common]), 3)
    out["cli_status_warning_s"] = round(best_cli([warnd, "status", KEY, *common]), 3)
    out["cli_status_warning_json_s"] = round(best_cli([warnd, "status", KEY, "--json", *common]), 3)
    out["cli_unreached_s"] = round(best_cli([warnd, "unreached", *common]), 3)
    named = tmp / "warnd-contacts.toml"
    named.write_text(
        f'[store]\nurl = "{url}"\n[contacts]\npath = "{tmp / "contacts"}"\n', encoding="utf-8"
    )
    common = ["--config", str(named), "--clock-file", str(clock)]
    out["cli_unreached_with_contacts_s"] = round(best_cli([warnd, "unreached", *common]), 3)
    # names are shown by default where the contacts are configured (what a duty desk has)
    out["cli_status_warning_with_contacts_s"] = round(best_cli([warnd, "status", KEY, *common]), 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--villages-per-township", type=int, default=17)
    p.add_argument("--keep", default=None, help="build into DIR and keep it")
    args = p.parse_args()
    logs.configure(json=True, level="warning")
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="warnd-status-"))
    tmp.mkdir(parents=True, exist_ok=True)
    built = tmp / "build.json"
    if args.keep and built.exists():  # --keep DIR a second time: measure the same store again
        saved = json.loads(built.read_text(encoding="utf-8"))
        url, now, figures = saved["url"], datetime.fromisoformat(saved["now"]), saved["figures"]
    else:
        url, now, figures = asyncio.run(build(tmp, args.villages_per_township))
        saved = {"url": url, "now": now.isoformat(), "figures": figures}
        built.write_text(json.dumps(saved), encoding="utf-8")
    figures.update(asyncio.run(measure(url, now, tmp)))
    print(json.dumps(figures, ensure_ascii=False, indent=1))
    targets = (
        "status",
        "status_warning",
        "unreached",
        "unreached_with_contacts",
        "status_warning_with_contacts",
    )
    slow = any(figures[f"cli_{name}_s"] > 1.0 for name in targets)
    sys.exit(1 if slow else 0)


if __name__ == "__main__":
    main()
