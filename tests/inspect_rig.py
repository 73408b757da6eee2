"""The ``warnd inspect`` rig: the keys every JSON line carries (contracts §4) and the command run
as a user types it (shared by the samples' suite, the external corpus suite and ``warnd plan``'s
tests)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from click.testing import CliRunner, Result

from warnd.cli import main

CONTRACT_KEYS = (
    "file",
    "ok",
    "identifier",
    "sender",
    "sent",
    "status",
    "msg_type",
    "references",
    "severity",
    "onset",
    "expires",
    "geocodes",
    "areas",
)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["inspect", *args])


def json_lines(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def instant(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    assert value.tzinfo is not None, text
    return value
