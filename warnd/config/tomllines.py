"""Where a dotted config key is set in the TOML text, for error messages that name the line.

``tomllib`` keeps no positions, so this is a best-effort scan of the text: the line that sets
the key, else the line that opens its table (``[[feeds]]`` counted by index).
"""

from __future__ import annotations

import re


def line_of(text: str, dotted: str) -> int | None:
    """Best effort: the line that sets ``dotted`` (or opens its table) in the TOML text."""
    segments = [
        (m.group(1), int(m.group(2)) if m.group(2) else None)
        for m in re.finditer(r"([^.\[\]]+)(?:\[(\d+)\])?", dotted)
    ]
    if not segments:
        return None
    head, tail = segments[:-1], segments[-1]
    table, index = [n for n, _ in head], head[-1][1] if head else None
    return (
        _find_line(text, table, index, tail[0])
        or _find_line(text, [n for n, _ in segments], tail[1], None)
        or (_find_line(text, table, index, None) if table else None)
    )


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]")


def _find_line(text: str, table: list[str], index: int | None, key: str | None) -> int | None:
    current: list[str] = []
    counts: dict[str, int] = {}
    inside = not table
    for number, raw in enumerate(text.splitlines(), start=1):
        match = _HEADER.match(raw)
        if match:
            current = [s.strip().strip("\"'") for s in match.group(2).split(".")]
            name = ".".join(current)
            counts[name] = counts.get(name, -1) + 1
            inside = current == table and index in (None, counts[name])
            if inside and key is None:
                return number
        elif inside and key is not None and re.match(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=", raw):
            return number
    return None
