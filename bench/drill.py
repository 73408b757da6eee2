"""Drill benchmark: a 12-hour scenario through ``drill simulate`` (virtual time).

Default: one county of about 1,500 responsible persons (30 townships × 25 villages, 2 A + 2 B
per village), a rainstorm warning issued 8 hours before onset, an Update 3 hours in that raises
the level, and a Cancel 12 hours after the first message. 60 % of the persons answer after 1–9
minutes, the rest never do, so every rung of the ladder is exercised.

``--province``: the generated province of ``bench/fanout.py`` (122 counties × 12 townships × 17
villages, 4 A + 4 B per village: 203,984 rows), the same three messages over the whole province
(430000), and 60 % of the A persons answering 2 minutes after their first attempt (the others,
and every B, never). Targets: ≤ 60 s wall, ≤ 600 MB max RSS (exit 1 when missed).

Prints the wall time, the simulated span, the event counts and the process's max RSS.

Usage: .venv/bin/python bench/drill.py [--province]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from directory_gen import county_code, generate  # noqa: E402
from factory import cap_xml  # noqa: E402

from warnd.config.policy import Policy  # noqa: E402
from warnd.core import directory  # noqa: E402
from warnd.desk.drill import simulate  # noqa: E402
from warnd.edges import logs  # noqa: E402

CST = timezone(timedelta(hours=8))


def county(tmp: Path) -> tuple[Path, Any, list[str]]:
    gen = generate(tmp / "contacts", 1, 30, 25, 4, seed=11)
    return tmp / "contacts", gen, [county_code(0) + "000000"]


def province(tmp: Path) -> tuple[Path, Any, list[str]]:
    gen = generate(tmp / "contacts", 122, 12, 17, 8, seed=7)
    return tmp / "contacts", gen, ["430000000000"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--province", action="store_true")
    args = p.parse_args()
    logs.configure(json=True, level="warning")
    tmp = Path(tempfile.mkdtemp(prefix="warnd-drill-bench-"))
    contacts, gen, area = (province if args.province else county)(tmp)
    load = os.getloadavg()
    t = time.perf_counter()
    d, problems = directory.load(contacts)
    assert not problems
    load_s = time.perf_counter() - t
    sent = datetime(2025, 6, 14, 8, 0, tzinfo=CST)
    sender = "bench_observatory"
    feed = tmp / "feed"
    feed.mkdir()
    (feed / "1.xml").write_bytes(
        cap_xml(
            "w1",
            sent,
            sender=sender,
            onset=sent + timedelta(hours=8),
            severity="Severe",
            geocodes=area,
        )
    )
    (feed / "2.xml").write_bytes(
        cap_xml(
            "w2",
            sent + timedelta(hours=3),
            sender=sender,
            onset=sent + timedelta(hours=7),
            severity="Extreme",
            geocodes=area,
            msg_type="Update",
            references=[(sender, "w1", sent)],
        )
    )
    (feed / "3.xml").write_bytes(
        cap_xml(
            "w3",
            sent + timedelta(hours=12),
            sender=sender,
            msg_type="Cancel",
            geocodes=area,
            references=[(sender, "w2", sent + timedelta(hours=3))],
        )
    )
    rng = random.Random(5)
    lines = ["contact_id,ack_after"]
    for c in d.contacts():
        if args.province:
            if c.rank == "A" and rng.random() < 0.6:
                lines.append(f"{c.contact_id},2m")
        elif rng.random() < 0.6:
            lines.append(f"{c.contact_id},{rng.randint(1, 9)}m")
        else:
            lines.append(f"{c.contact_id},never")
    (tmp / "responders.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    start = time.perf_counter()
    report = asyncio.run(simulate([feed], d, Policy.default(), tmp / "responders.csv"))
    wall = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    s = report["summary"]
    figures = {
        "load_average": load,
        "persons_in_directory": len(d),
        "rows": gen.rows,
        "directory_load_s": round(load_s, 2),
        "wall_seconds": round(wall, 2),
        "max_rss_mb": round(rss),
        "simulated": f"{s['started_at']} → {s['ended_at']}",
        "events": s["events"],
        "event_count": len(report["events"]),
        "attempts": s["attempts"],
        "persons_notified": s["persons_notified"],
        "persons_acknowledged": s["persons_acknowledged"],
        "unreached": s["unreached"],
        "divisions": s["divisions"],
        "load_average_after": os.getloadavg(),
    }
    missed = []
    if args.province:
        if wall > 60:
            missed.append("≤ 60 s wall")
        if rss > 600:
            missed.append("≤ 600 MB max RSS")
        figures["targets_missed"] = missed
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(figures, ensure_ascii=False, indent=1))
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
