"""Province-scale contacts directory: how long ``load()`` and ``overlapping()`` take.

Run: ``.venv/bin/python bench/directory_load.py`` (about a minute on 2 shared cores).

Absolute seconds mean little on a noisy, shared machine, so every figure comes with a
baseline measured in the same run: a bare ``csv.DictReader`` pass over the same files for
``load()``, and a linear scan with ``warnd.division.overlaps`` for ``overlapping()``.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from directory_gen import generate

from warnd.directory import Directory, load
from warnd.division import DIRECTORY_LEVELS, Level, overlaps


def best(repeat: int, fn: Callable[[], object]) -> float:
    """The fastest of ``repeat`` runs: the least disturbed by other work on the machine."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def dictreader_pass(folder: Path) -> int:
    rows = 0
    for path in sorted(folder.glob("*.csv")):
        text = path.read_bytes().decode("utf-8-sig")
        for _ in csv.DictReader(io.StringIO(text, newline="")):
            rows += 1
    return rows


def queries(directory: Directory, n: int, seed: int) -> list[tuple[list[str], Level]]:
    """Area codes as warnings carry them: mostly villages/townships, some counties/prefectures."""
    rng = random.Random(seed)
    codes = [d.code for d in directory.divisions()]
    out: list[tuple[list[str], Level]] = []
    for _ in range(n):
        area = [
            rng.choice(codes)[: rng.choice((4, 6, 9, 12, 12))] for _ in range(rng.randint(1, 3))
        ]
        out.append(
            ([a.ljust(6, "0") if len(a) == 4 else a for a in area], rng.choice(DIRECTORY_LEVELS))
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--counties", type=int, default=122)
    parser.add_argument("--townships", type=int, default=12, help="per county")
    parser.add_argument("--villages", type=int, default=17, help="per township")
    parser.add_argument("--persons", type=int, default=10, help="per village")
    parser.add_argument("--seed", type=int, default=20250614)
    parser.add_argument("--lookups", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="warnd-bench-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        gen = generate(
            folder, args.counties, args.townships, args.villages, args.persons, args.seed
        )
        print(
            f"generated {gen.rows:,} rows in {gen.files} files "
            f"({gen.counties} counties, {gen.townships:,} townships, {gen.villages:,} villages) "
            f"in {time.perf_counter() - start:.1f} s"
        )
        base = best(args.repeat, lambda: dictreader_pass(folder))
        loaded: list[Directory] = []

        def run_load() -> None:
            directory, problems = load(folder)
            assert not problems, problems[:3]
            loaded[:] = [directory]

        took = best(args.repeat, run_load)
        directory = loaded[0]
        assert len(directory) == gen.rows
        print(f"csv.DictReader baseline: {base:.2f} s ({gen.rows / base:,.0f} rows/s)")
        print(f"load():                  {took:.2f} s ({gen.rows / took:,.0f} rows/s)")
        print(f"load() / DictReader:     {took / base:.1f}x")

    qs = queries(directory, args.lookups, args.seed)
    narrow = [(area, level) for area, level in qs if min(map(len, area)) >= 9]
    for label, batch in (("mixed areas", qs), ("township/village areas", narrow)):
        returned = 0

        def run_lookups(batch: list[tuple[list[str], Level]] = batch) -> None:
            nonlocal returned
            returned = sum(len(directory.overlapping(area, level)) for area, level in batch)

        took = best(args.repeat, run_lookups)
        print(
            f"overlapping(), {label}: {len(batch):,} lookups in {took:.3f} s "
            f"({len(batch) / took:,.0f} lookups/s, {returned:,} divisions returned)"
        )
    by_level = {
        lv: [d.code for d in directory.divisions() if d.level == lv] for lv in DIRECTORY_LEVELS
    }
    sample = qs[: max(1, min(50, len(qs)))]

    def scan() -> None:
        for area, level in sample:
            [c for c in by_level[level] if any(overlaps(a, c) for a in area)]

    scan_each = best(1, scan) / len(sample)
    each = best(args.repeat, lambda: [directory.overlapping(a, lv) for a, lv in sample]) / len(
        sample
    )
    print(
        f"linear-scan baseline (same first {len(sample)} mixed lookups): "
        f"{1 / scan_each:,.0f} lookups/s; overlapping() is {scan_each / each:,.0f}x faster"
    )


if __name__ == "__main__":
    main()
