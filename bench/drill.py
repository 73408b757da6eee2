"""Drill benchmark: a 12-hour county scenario through ``drill simulate`` (virtual time).

One county of about 1,500 responsible persons (30 townships × 25 villages, 2 A + 2 B per
village), a rainstorm warning issued 8 hours before onset, an Update 3 hours in that raises the
level, and a Cancel 12 hours after the first message. 60 % of the persons answer after 1–9
minutes, the rest never do, so every rung of the ladder is exercised. Prints the wall time, the
simulated span and the event counts.

Usage: .venv/bin/python bench/drill.py
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from directory_gen import county_code, generate  # noqa: E402
from factory import cap_xml  # noqa: E402

from warnd import directory, logs  # noqa: E402
from warnd.drill import simulate  # noqa: E402
from warnd.policy import Policy  # noqa: E402

CST = timezone(timedelta(hours=8))


def main() -> None:
    logs.configure(json=True, level="warning")
    tmp = Path(tempfile.mkdtemp(prefix="warnd-drill-bench-"))
    gen = generate(tmp / "contacts", 1, 30, 25, 4, seed=11)
    code = county_code(0)
    d, problems = directory.load(tmp / "contacts")
    assert not problems
    sent = datetime(2025, 6, 14, 8, 0, tzinfo=CST)
    sender = "bench_observatory"
    feed = tmp / "feed"
    feed.mkdir()
    area = [code + "000000"]
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
        lines.append(
            f"{c.contact_id},{rng.randint(1, 9)}m"
            if rng.random() < 0.6
            else f"{c.contact_id},never"
        )
    (tmp / "responders.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    start = time.perf_counter()
    report = asyncio.run(simulate([feed], d, Policy.default(), tmp / "responders.csv"))
    wall = time.perf_counter() - start
    s = report["summary"]
    print(
        json.dumps(
            {
                "persons_in_directory": len(d),
                "rows": gen.rows,
                "wall_seconds": round(wall, 2),
                "simulated": f"{s['started_at']} → {s['ended_at']}",
                "events": s["events"],
                "attempts": s["attempts"],
                "persons_notified": s["persons_notified"],
                "persons_acknowledged": s["persons_acknowledged"],
                "unreached": s["unreached"],
                "divisions": s["divisions"],
            },
            ensure_ascii=False,
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
