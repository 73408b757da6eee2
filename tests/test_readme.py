"""The README's quick start, as a new user runs it (issue 13): the first command starts the
daemon on the bundled config, contacts and example feed; the second is what ``.ci/run`` runs
in a fresh clone (tests/test_ci.py checks the script). Here the daemon runs for real, from a
copy of the repository's files, until the example warning's messages are written."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from warnd.testing import wait_until

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def quick_start(step: int) -> str:
    """The command under ``# <step>.`` in the README's quick start block."""
    lines = README.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    found = lines.splitlines()
    at = next(i for i, line in enumerate(found) if line.startswith(f"# {step}."))
    return found[at + 1]


def test_the_second_command_is_the_test_command_of_ci() -> None:
    command = quick_start(2)
    assert command.endswith(".venv/bin/pytest -q -p no:cacheprovider")
    assert "WARND_" not in command  # no server, corpus or browser needed
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "sed -n '/^# 2\\. install and run the tests/{n;p;q}' README.md" in ci


def test_the_first_command_starts_the_daemon_and_the_example_warning_goes_out(
    tmp_path: Path,
) -> None:
    command = quick_start(1)
    install, run = command.split(" && mkdir -p ", 1)
    assert install == "python3 -m venv .venv && .venv/bin/pip install -e ."
    for part in ("config", "contacts", "examples"):
        shutil.copytree(REPO / part, tmp_path / part)
    # the rest of the command as written, with this test's warnd for the venv it installs
    # (exec: the daemon itself gets the SIGTERM below and reports how it ended)
    warnd = str(Path(sys.executable).parent / "warnd")
    rest = "mkdir -p " + run.replace(" && .venv/bin/warnd", f" && exec {warnd}")
    env = {**os.environ, "WARND_LOG_LEVEL": "info"}
    daemon = subprocess.Popen(
        ["bash", "-c", f"exec 2>daemon.log; {rest}"], cwd=tmp_path, env=env, start_new_session=True
    )
    outbox = tmp_path / "var" / "outbox.jsonl"
    try:
        lines: list[dict[str, Any]] = []
        levels: set[str] = set()

        def every_level_called() -> bool:
            nonlocal lines, levels
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()
            if outbox.exists():
                lines = [json.loads(x) for x in outbox.read_text("utf-8").splitlines() if x]
                calls = [m for m in lines if m["purpose"] == "call"]
                levels = {m["contact"].split("-")[1] for m in calls}
            return {"433122", "433122100", "433122100201"} <= levels

        wait_until(every_level_called, timeout=60, every=0.2, what=lambda: f"levels {levels}")
        # the Exercise has no onset: every stage fires on arrival, every text marked 【演练】
        assert {"433122", "433122100", "433122100201"} <= levels, levels
        assert all(m["text"].startswith("【演练】") for m in lines)
        assert (tmp_path / "var" / "warnd.db").exists()
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
