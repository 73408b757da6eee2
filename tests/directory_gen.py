"""A deterministic generator of well-formed contacts directories (one CSV file per county).

Shared by tests (small scale) and bench/directory.py (province scale): every generated
directory must load with zero problems, so it doubles as a check on the loader's false alarms.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from factory import HEADER as CSV_HEADER

HEADER = tuple(CSV_HEADER.strip().split(","))
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘"
_GIVEN = "军华平建明强国伟芳兰英红文杰丽勇静敏燕霞秀娟刚辉波磊涛斌超鹏飞云"
_VILLAGE_ROLES = ("防汛责任人", "灾害信息员")


@dataclass(frozen=True, slots=True)
class Generated:
    """What was written, so that callers can assert counts without re-reading the files."""

    path: Path
    files: int
    rows: int
    counties: int
    townships: int
    villages: int


def county_code(index: int) -> str:
    """Hunan-like codes: spread over 14 prefectures (4301..4314), counties numbered from 21."""
    prefecture, number = index % 14 + 1, 21 + index // 14
    if number > 99:
        raise ValueError("too many counties for the code space")
    return f"43{prefecture:02d}{number:02d}"


def _mobile(rng: random.Random, number: int) -> str:
    digits = f"{13_000_000_000 + number}"
    style = rng.random()
    if style < 0.8:
        return digits
    if style < 0.9:
        return f"+86 {digits[:3]} {digits[3:7]} {digits[7:]}"
    return f"{digits[:3]}-{digits[3:7]}-{digits[7:]}"


def _name(rng: random.Random) -> str:
    return rng.choice(_SURNAMES) + "".join(rng.choices(_GIVEN, k=rng.randint(1, 2)))


def generate(
    dir: Path,
    counties: int,
    townships_per_county: int,
    villages_per_township: int,
    persons_per_village: int,
    seed: int,
    *,
    bom: bool = False,
) -> Generated:
    """Write ``{county_code}.csv`` files into ``dir``; same arguments, same bytes."""
    if townships_per_county > 899 or villages_per_township > 799 or persons_per_village < 1:
        raise ValueError("out of the code space")
    rng = random.Random(seed)
    townships = counties * townships_per_county
    villages = townships * villages_per_township
    rows = counties * 4 + townships * 3 + villages * persons_per_village
    numbers = iter(rng.sample(range(1_000_000_000), rows * 2))
    dir.mkdir(parents=True, exist_ok=True)
    for c in range(counties):
        code = county_code(c)
        county_name = f"样例{c + 1}县"
        out: list[tuple[str, ...]] = []

        def post(
            div: str,
            name: str,
            level: str,
            rank: str,
            role: str,
            number: str,
            n: int,
            out: list[tuple[str, ...]] = out,
        ) -> None:
            alt = _mobile(rng, next(numbers)) if rng.random() < 0.3 else ""
            cid = f"c-{div}-{rank.lower()}{n}"
            out.append((cid, div, name, level, rank, role, _name(rng), number, alt))

        post(code, county_name, "county", "duty", "县防指值班室", f"0743-42{c:05d}", 1)
        post(code, county_name, "county", "A", "防汛指挥长", _mobile(rng, next(numbers)), 1)
        post(code, county_name, "county", "A", "应急管理局局长", _mobile(rng, next(numbers)), 2)
        post(code, county_name, "county", "B", "防办主任", _mobile(rng, next(numbers)), 1)
        for t in range(townships_per_county):
            town = f"{code}{100 + t:03d}"
            town_name = f"样例{t + 1}镇"
            post(town, town_name, "township", "A", "党委书记", _mobile(rng, next(numbers)), 1)
            post(town, town_name, "township", "A", "镇长", _mobile(rng, next(numbers)), 2)
            post(town, town_name, "township", "B", "防汛专干", _mobile(rng, next(numbers)), 1)
            for v in range(villages_per_township):
                village = f"{town}{200 + v:03d}"
                village_name = f"样例{t + 1}镇{v + 1}村"
                for p in range(persons_per_village):
                    rank = "A" if p % 2 == 0 else "B"
                    role = _VILLAGE_ROLES[(p // 2) % 2]
                    number = _mobile(rng, next(numbers))
                    post(village, village_name, "village", rank, role, number, p // 2 + 1)
        with (dir / f"{code}.csv").open("w", encoding="utf-8-sig" if bom else "utf-8") as f:
            writer = csv.writer(f, lineterminator="\r\n")
            writer.writerow(HEADER)
            writer.writerows(out)
    return Generated(dir, counties, rows, counties, townships, villages)
