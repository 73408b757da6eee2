"""Names for the persons a duty-desk command shows, read straight from the contacts CSV.

The store keeps contact ids and numbers, not names. Loading the whole directory
(``warnd.core.directory.load``: every row parsed, every number validated) took about 3 s for a
province of 200,000 rows — three times the budget of ``warnd unreached``. A command shows a few
hundred persons at most, so this reads only two cells of each row, ``contact_id`` and ``name``,
and keeps the names of the ids asked for. Files are found and decoded as the directory does (a
file, or a folder's ``*.csv`` in sorted name order, UTF-8 with or without BOM); the first row
of an id wins, as in the directory. Rows are not validated: that is ``warnd contacts check``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

from warnd.core.errors import ContactsError


def names(path: str | Path, ids: Iterable[str]) -> dict[str, str]:
    """contact id → name for the ``ids`` found with a non-empty name.

    Raises ``ContactsError`` when the path or a file cannot be read; a file without a
    ``contact_id`` and a ``name`` column gives no names.
    """
    wanted = set(ids)
    out: dict[str, str] = {}
    if not wanted:
        return out
    for file in _files(Path(path)):
        try:
            text = file.read_bytes().decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as err:
            raise ContactsError(f"无法读取文件 (cannot read): {err}", source=str(file)) from err
        for cid, name in _cells(text, wanted):
            if cid not in out and name:
                out[cid] = name
        if len(out) == len(wanted):
            break
    return out


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    if path.is_file():
        return [path]
    raise ContactsError("通讯录路径不存在 (path not found)", source=str(path))


def _cells(text: str, wanted: set[str]) -> Iterable[tuple[str, str]]:
    """(contact_id, name) of the rows whose id is wanted."""
    if '"' in text:  # quoted cells may hold commas or line breaks: the csv module, row by row
        yield from _rows(csv.reader(io.StringIO(text, newline="")), wanted)
        return
    # The common case, five times faster than csv.reader: split each line only as far as its
    # id, and the few wanted lines whole.
    lines = iter(text.split("\n"))
    for first in lines:
        if first.replace(",", "").strip():
            break
    else:
        return
    header = [cell.strip().lower() for cell in first.split(",")]
    if "contact_id" not in header or "name" not in header:
        return
    at, nm = header.index("contact_id"), header.index("name")
    for line in lines:
        head = line.split(",", at + 1)
        if len(head) > at and head[at].strip() in wanted:
            row = line.split(",")
            if len(row) == len(header):  # as the directory: a row of another width is skipped
                yield row[at].strip(), row[nm].strip()


def _rows(rows: Iterable[list[str]], wanted: set[str]) -> Iterable[tuple[str, str]]:
    header: list[str] | None = None
    at = nm = 0
    for row in rows:
        if header is None:
            if any(cell.strip() for cell in row):
                header = [cell.strip().lower() for cell in row]
                if "contact_id" not in header or "name" not in header:
                    return
                at, nm = header.index("contact_id"), header.index("name")
            continue
        if len(row) == len(header) and row[at].strip() in wanted:
            yield row[at].strip(), row[nm].strip()
