"""``drill simulate`` reports compared with those of the code before the store redesign.

``tests/golden/*.json`` are the reports the code of schema 0002 (one ``notify`` event row beside
each outbox row, per-attempt transactions) wrote for these scenarios: three soak cases (a county
with an Update raising the level and a Cancel, random responders) and two 20-village counties (a
second warning overlapping a township; one with its own ladder, window, attempts and links).
The report of the same inputs now must be the same, event for event and key for key, except for
one thing the old code left to chance: update and cancel notices made at one instant came out in
the random order of their message ids, so runs of them are compared sorted by person. A 750-
village county (8,140 events) is compared by the hash of the same canonical form.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from directory_gen import county_code, generate
from factory import cap_xml
from serve_harness import canonical, make_case, write_case

from warnd.config.policy import Policy
from warnd.core import directory
from warnd.desk.drill import simulate

GOLDEN = Path(__file__).parent / "golden"
CST = timezone(timedelta(hours=8))
#: sha256 of the canonical report of ``county(30, 25, 4, seed=11)`` (the code of schema 0002)
COUNTY_BENCH = "70bab5194052b508c84fdf7c3b67f611e746ca2066fbb05d38f3698e5e8c05bb"


async def soak(seed: int, tmp: Path) -> dict[str, Any]:
    case = make_case(seed, 3, 3)
    write_case(case, tmp, "http://127.0.0.1:9/unused")
    d, _ = directory.load(tmp / "contacts")
    return await simulate([tmp / "feed"], d, Policy.default(), tmp / "responders.csv")


async def county(
    tmp: Path,
    townships: int,
    villages: int,
    persons: int,
    seed: int,
    policy: Policy | None = None,
    public: str | None = None,
) -> dict[str, Any]:
    generate(tmp / "contacts", 1, townships, villages, persons, seed=seed)
    code = county_code(0)
    d, _ = directory.load(tmp / "contacts")
    sent = datetime(2025, 6, 14, 8, 0, tzinfo=CST)
    sender = "bench_observatory"
    feed = tmp / "feed"
    feed.mkdir()
    area = [code + "000000"]
    h = timedelta(hours=1)
    messages = {
        "1.xml": cap_xml("w1", sent, sender=sender, onset=sent + 8 * h, geocodes=area),
        "2.xml": cap_xml(
            "w2", sent + 3 * h, sender=sender, onset=sent + 7 * h, severity="Extreme",
            geocodes=area, msg_type="Update", references=[(sender, "w1", sent)],
        ),
        "3.xml": cap_xml(
            "w3", sent + 12 * h, sender=sender, msg_type="Cancel", geocodes=area,
            references=[(sender, "w2", sent + 3 * h)],
        ),
    }  # fmt: skip
    # a second warning over one township, no onset (every stage at once), an hour later
    township = sorted({c.division_code[:9] for c in d.contacts() if len(c.division_code) >= 9})[0]
    messages["4.xml"] = cap_xml(
        "x1", sent + h, sender="other", severity="Extreme", geocodes=[township + "000"]
    )
    for name, data in messages.items():
        (feed / name).write_bytes(data)
    rng = random.Random(5)
    lines = ["contact_id,ack_after"]
    for c in d.contacts():
        answer = f"{rng.randint(1, 16)}m" if rng.random() < 0.6 else "never"
        lines.append(f"{c.contact_id},{answer}")
    (tmp / "responders.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return await simulate(
        [feed], d, policy or Policy.default(), tmp / "responders.csv", public_url=public
    )


def golden(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("seed", [1, 2, 631])
async def test_soak_cases_report_as_before(tmp_path: Path, seed: int) -> None:
    assert canonical(await soak(seed, tmp_path)) == golden(f"soak-{seed}")


async def test_county_reports_as_before(tmp_path: Path) -> None:
    report = await county(tmp_path, 4, 5, 4, seed=3)
    assert canonical(report) == golden("county-small")


async def test_county_with_its_own_policy_reports_as_before(tmp_path: Path) -> None:
    p = Policy.default()
    policy = replace(
        p,
        ack=replace(p.ack, attempts=2, window=timedelta(minutes=3)),
        ladder=("superior", "backup"),
    )
    report = await county(tmp_path, 4, 5, 4, seed=4, policy=policy, public="http://x")
    assert canonical(report) == golden("county-policy")


async def test_a_750_village_county_reports_as_before(tmp_path: Path) -> None:
    report = canonical(await county(tmp_path, 30, 25, 4, seed=11))
    assert len(report["events"]) == 8140
    text = json.dumps(report, ensure_ascii=False, sort_keys=True)
    assert hashlib.sha256(text.encode()).hexdigest() == COUNTY_BENCH
