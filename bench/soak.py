"""Crash-consistency soak, full run: many county cases, ``warnd serve`` SIGKILLed at random
points of each (in a fan-out, in a tick, while an answer is posted) and restarted, every case
checked against ``warnd drill simulate`` on the same inputs (tests/serve_harness.py).

Prints one line per case and the totals (cases tried, faults injected, kills survived, items
lost); exits 1 if any case found a problem. The suite runs the same code shortened
(tests/test_soak.py). Figures of a run are in docs/hardening.md.

Usage: .venv/bin/python bench/soak.py [--cases 10] [--kills 5] [--seed 1] [--flaky 0.02]
                                      [--townships 3] [--villages 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from serve_harness import soak_case  # noqa: E402


async def run(cases: int, kills: int, seed: int, flaky: float, size: tuple[int, int]) -> int:
    started = time.monotonic()
    totals: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    failed = []
    tmp = tempfile.mkdtemp(prefix="warnd-soak-")  # kept: the serve logs of every run
    print(f"# cases in {tmp}", flush=True)
    for n in range(cases):
        figures = await soak_case(
            Path(tmp) / f"case-{n}",
            seed + n,
            kills,
            flaky=flaky,
            townships=size[0],
            villages=size[1],
        )
        print(json.dumps(figures, ensure_ascii=False), flush=True)
        for key in (
            "kills",
            "restarts",
            "steps",
            "events",
            "gateway_requests",
            "in_flight_at_kills",
            "resent_same_id",
            "acks_posted",
            "items_lost",
        ):
            totals[key] += figures[key]
        kinds.update(figures["kill_kinds"])
        if figures["problems"] or not figures["oracle_sensitive"]:
            failed.append(figures["seed"])
    summary = {
        "cases_tried": cases,
        "faults_injected": totals["kills"],
        "kill_kinds": dict(kinds),
        "kills_survived": totals["restarts"],
        "items_lost": totals["items_lost"],
        "cases_failed": failed,
        "flaky_gateway_share": flaky,
        "county": f"{size[0]} townships x {size[1]} villages",
        **{
            k: totals[k]
            for k in (
                "steps",
                "events",
                "gateway_requests",
                "in_flight_at_kills",
                "resent_same_id",
                "acks_posted",
            )
        },
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--flaky", type=float, default=0.0, help="share of gateway 503s")
    parser.add_argument("--townships", type=int, default=3)
    parser.add_argument("--villages", type=int, default=3, help="per township")
    args = parser.parse_args()
    size = (args.townships, args.villages)
    sys.exit(asyncio.run(run(args.cases, args.kills, args.seed, args.flaky, size)))


if __name__ == "__main__":
    main()
