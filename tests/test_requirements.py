"""What the suite does when PostgreSQL, Chromium or the external corpus is missing: a skip with
a one-line reason, or — with ``WARND_REQUIRE_<X>=1`` (``.ci/run``'s full run) — an error.

Each case runs pytest on one small test file in a child process with that environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLEAN = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith(("WARND_REQUIRE_", "WARND_TEST_PG_URL", "WARND_TEST_CHROMIUM"))
    and k != "WARND_CAP_CORPUS"
}
#: what each extra is made to look like when missing, and a test file that needs it
CASES = {
    "PG": ({}, "tests/test_schema.py", "PostgreSQL: WARND_TEST_PG_URL is not set"),
    "CHROMIUM": (
        {"WARND_TEST_CHROMIUM": "none"},
        "tests/test_report.py::test_html_report_renders_with_its_charts_in_headless_chromium",
        "headless Chromium not found",
    ),
    "CORPUS": (
        {"WARND_CAP_CORPUS": "/nonexistent/cap-corpus"},
        "tests/corpus",
        "CAP corpus not found at /nonexistent/cap-corpus",
    ),
}


def pytest_run(targets: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", *targets],
        cwd=ROOT,
        env={**CLEAN, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_missing_extras_are_skips_each_with_its_reason() -> None:
    env = {k: v for e, _target, _reason in CASES.values() for k, v in e.items()}
    run = pytest_run([target for _env, target, _reason in CASES.values()], env)
    assert run.returncode == 0, run.stdout[-3000:]
    skipped = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    for part, (_env, _target, reason) in CASES.items():
        mine = [line for line in skipped if reason in line]
        assert mine, (part, run.stdout[-3000:])
        assert all(f"(WARND_REQUIRE_{part}=1 makes this an error)" in line for line in mine)
    assert len(skipped) == 3  # one line each: PostgreSQL's fold into one per file
    assert run.stdout.splitlines()[-1].split(" in ")[0].endswith("skipped")  # nothing failed


@pytest.mark.parametrize("part", sorted(CASES))
def test_a_missing_extra_that_is_required_is_an_error(part: str) -> None:
    env, target, reason = CASES[part]
    run = pytest_run([target], {**env, f"WARND_REQUIRE_{part}": "1"})
    assert run.returncode != 0
    assert f"WARND_REQUIRE_{part}=1 but {reason}" in run.stdout + run.stderr
