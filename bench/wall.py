"""Wall benchmark: the status wall's data (``GET /wall/data``) on a 100,000-person warning.

The store is bench/status.py's (the real engine over a real SQLite file: a province warning,
102,000 calls, 60 % answered, 10 % of the villages on the not-woken list); ``--keep DIR``
shares the build with it (run either once with the same DIR, then both measure without
building). In the same run, best of 3 each:

  * the floor: ``views.warnings`` through the commands' read-only reader (what ``warnd status``
    reads) and ``warnd status`` itself as a subprocess;
  * ``wall_data`` through the same reader (function level: warnings, reach, not-woken list);
  * ``GET /wall/data`` over HTTP from the wall's own aiohttp routes on an open ``Store`` — the
    daemon's read engine, names from the loaded directory — each request computing afresh
    (the cache is bypassed), with the longest stall of the event loop during the request (how
    long an acknowledgement arriving then would wait);
  * 20 screens asking at once (one computation, 19 answers from the cache);
  * with Chromium (``/usr/bin/chromium``): the page's first load and its own render time.

Usage: .venv/bin/python bench/wall.py [--keep DIR] [--villages-per-township 17]
Exits 1 when ``GET /wall/data`` takes more than 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from status import ZONE, best, best_cli, build  # noqa: E402

from warnd.core import directory  # noqa: E402
from warnd.core.clock import ManualClock  # noqa: E402
from warnd.desk import views  # noqa: E402
from warnd.desk.views.reader import open_reader  # noqa: E402
from warnd.desk.wall.app import Wall  # noqa: E402
from warnd.desk.wall.config import WallConfig  # noqa: E402
from warnd.desk.wall.data import wall_data  # noqa: E402
from warnd.edges import logs  # noqa: E402
from warnd.store import Store  # noqa: E402

TOKEN = "bench-wall-token-0123456789"


class Stalls:
    """The longest gap between wake-ups of a task that asks to run every millisecond."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now

    def __enter__(self) -> Stalls:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def floor_and_function(url: str, now: datetime, names: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    reader = await open_reader(url)
    try:
        secs, _ = await best(lambda: views.warnings(reader, now))
        out["floor_views.warnings_s"] = round(secs, 3)
        secs, _ = await best(lambda: views.not_woken(reader))
        out["views.not_woken_s"] = round(secs, 3)
        secs, data = await best(lambda: wall_data(reader, now, ZONE, names=names))
        out["wall_data_reader_s"] = round(secs, 3)
        out["wall_not_woken_total"] = data["not_woken"]["total"]
    finally:
        await reader.close()
    return out


async def over_http(url: str, now: datetime, names: Any, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    (tmp / "wall-token").write_text(TOKEN, encoding="utf-8")
    store = await Store.open(url, create=False)
    wall = Wall(WallConfig(tmp / "wall-token"), store, ManualClock(now), ZONE, names=names)
    app = web.Application()
    app.router.add_routes(wall.routes())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}/wall/data?token={TOKEN}"
    try:
        async with aiohttp.ClientSession() as http:

            async def fresh() -> bytes:
                wall.ttl_s = 0.0  # every request computes (the cache is measured below)
                async with http.get(base) as resp:
                    assert resp.status == 200, resp.status
                    return await resp.read()

            stalls = []
            times = []
            for _ in range(3):
                with Stalls() as st:
                    t = time.perf_counter()
                    body = await fresh()
                    times.append(time.perf_counter() - t)
                stalls.append(st.longest)
            out["wall_http_data_s"] = round(min(times), 3)
            out["wall_http_data_worst_s"] = round(max(times), 3)
            out["loop_longest_stall_s"] = round(max(stalls), 3)
            out["wall_data_bytes"] = len(body)
            wall.ttl_s = 60.0
            wall._cached = None

            async def one() -> int:
                async with http.get(base) as resp:
                    await resp.read()
                    return resp.status

            seq = wall.seq
            t = time.perf_counter()
            statuses = await asyncio.gather(*(one() for _ in range(20)))
            out["twenty_screens_at_once_s"] = round(time.perf_counter() - t, 3)
            out["twenty_screens_computations"] = wall.seq - seq
            assert statuses == [200] * 20
            wall.ttl_s = max(1.0, wall.refresh_s / 2)  # as the daemon runs it
            out.update(await in_chromium(f"http://127.0.0.1:{port}/wall?token={TOKEN}", tmp))
    finally:
        await runner.cleanup()
        await store.close()
    return out


async def in_chromium(url: str, tmp: Path) -> dict[str, Any]:
    try:
        from chromium import Page, find_chromium

        find_chromium()
    except BaseException:  # pytest.skip when Chromium is missing
        return {"chromium": "not found"}
    page = await Page(Path(tempfile.mkdtemp(prefix="warnd-chromium-"))).start()
    out: dict[str, Any] = {}
    try:
        await page.size(1920, 1080)
        t = time.perf_counter()
        await page.send("Page.navigate", url=url)
        await page.wait_for("document.body && document.body.dataset.loaded === '1'", 60)
        out["page_first_load_s"] = round(time.perf_counter() - t, 3)
        for w, h in ((1920, 1080), (1280, 720)):
            await page.size(w, h)
            await page.wait_for(f"innerWidth === {w} && innerHeight === {h}")
            seq = await page.evaluate("Number(document.body.dataset.seq)")
            await page.wait_for(f"Number(document.body.dataset.seq) > {seq}", 60)  # a redraw
            render = await page.evaluate("Number(document.body.dataset.renderMs)")
            out[f"page_render_ms_{w}"] = render
            out[f"page_fits_{w}"] = await page.evaluate(FITS)
            await page.screenshot(tmp / f"wall-province-{w}x{h}.png")
    finally:
        await page.close()
    return out


#: one screen, nothing cut sideways
FITS = """(() => {
  const de = document.documentElement;
  const boxes = [...document.querySelectorAll('.warning:not([hidden]) .body, table.levels')];
  return de.scrollHeight <= innerHeight && de.scrollWidth <= innerWidth
    && boxes.every(e => e.scrollWidth <= e.clientWidth + 1);
})()"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--villages-per-township", type=int, default=17)
    p.add_argument("--keep", default=None, help="build into DIR and keep it (shared with status)")
    args = p.parse_args()
    logs.configure(json=True, level="warning")
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="warnd-wall-"))
    tmp.mkdir(parents=True, exist_ok=True)
    built = tmp / "build.json"
    if args.keep and built.exists():
        saved = json.loads(built.read_text(encoding="utf-8"))
        url, now, figures = saved["url"], datetime.fromisoformat(saved["now"]), saved["figures"]
    else:
        url, now, figures = asyncio.run(build(tmp, args.villages_per_township))
        saved = {"url": url, "now": now.isoformat(), "figures": figures}
        built.write_text(json.dumps(saved), encoding="utf-8")
    loaded, _ = directory.load(tmp / "contacts")

    def names(ids: Any) -> dict[str, str]:
        return {i: c.name for i in ids if (c := loaded.contact(i)) is not None}

    with open("/proc/loadavg", encoding="ascii") as f:
        figures["load_average_at_start"] = f.read().split()[:3]
    figures.update(asyncio.run(floor_and_function(url, now, names)))
    figures.update(asyncio.run(over_http(url, now, names, tmp)))
    cfg = tmp / "warnd.toml"
    cfg.write_text(f'[store]\nurl = "{url}"\n', encoding="utf-8")
    clock = tmp / "clock"
    clock.write_text(now.isoformat(), encoding="utf-8")
    warnd = str(Path(sys.executable).with_name("warnd"))
    figures["floor_cli_status_s"] = round(
        best_cli([warnd, "status", "--config", str(cfg), "--clock-file", str(clock)]), 3
    )
    with open("/proc/loadavg", encoding="ascii") as f:
        figures["load_average_at_end"] = f.read().split()[:3]
    print(json.dumps(figures, ensure_ascii=False, indent=1))
    sys.exit(1 if figures["wall_http_data_s"] > 1.0 else 0)


if __name__ == "__main__":
    main()
