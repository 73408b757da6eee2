"""Rosters as duty offices keep them: an Excel workbook (.xlsx) into the contacts CSV (§1).

Offices keep their 防汛责任人 lists in Excel: a title row above the header, Chinese headers
(姓名, 职务, 手机号码, 区划代码, 行政区划名称, 层级, A/B角 …), the division merged down over its A
and B rows, blank separator rows, numbers stored as numbers (13812345678, or a 12-digit code
that Excel shows as 4.33122101201E+11). ``read_roster`` finds the header, maps the columns,
fills vertically merged cells and normalises the cells; ``write_csv`` writes the contracts §1
CSV, one record per line, so that each problem that ``warnd.core.directory.load`` (the checks of
``warnd contacts check``, not re-implemented here) reports on a CSV line can be traced back to
its sheet, row and column by ``locate``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import tempfile
import unicodedata
import zipfile
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warnd.core import phone
from warnd.core.directory import COLUMNS, Problem, load
from warnd.core.division import level_of, normalise
from warnd.core.errors import ContactsError

if TYPE_CHECKING:
    from openpyxl.worksheet.worksheet import Worksheet

#: header texts per field, compared after ``_key`` (NFKC, no spaces/brackets/slashes, lower)
HEADERS: dict[str, tuple[str, ...]] = {
    "contact_id": ("contact_id", "编号", "人员编号", "联系人编号", "id"),
    "division_code": (
        "division_code",
        "区划代码",
        "行政区划代码",
        "区划编码",
        "行政区划编码",
        "统计用区划代码",
        "代码",
    ),
    "division_name": ("division_name", "行政区划名称", "区划名称", "行政区划", "单位名称"),
    "level": ("level", "层级", "级别", "行政级别", "区划级别", "区划层级"),
    "rank": ("rank", "ab角", "a角b角", "ab岗", "角色", "ab"),
    "role": ("role", "责任人类型", "责任人类别", "类别", "岗位", "职责"),
    "title": ("职务", "职位"),
    "name": ("name", "姓名", "名字", "责任人", "责任人姓名"),
    "phone": ("phone", "手机号码", "手机号", "手机", "移动电话", "联系电话", "电话号码", "电话"),
    "alt_phone": ("alt_phone", "备用电话", "备用号码", "其他电话", "办公电话", "固定电话", "座机"),
    "channels": ("channels", "渠道", "通知方式"),
    "county_name": ("县", "县市区", "县区", "县名称"),
    "township_name": ("乡镇", "乡镇街道", "乡镇名称", "街道"),
    "village_name": ("村", "村社区", "村名称", "行政村", "社区"),
}
#: what a header row must map: without these a row of the sheet is not the header
REQUIRED = ("division_code", "phone")
_HEADER_SCAN = 20  # rows searched for the header (title rows sit above it)
_NOISE = re.compile(r"[\s()（）/／、*＊:：\[\]【】]")
_SCIENTIFIC = re.compile(r"[+-]?\d+(?:\.\d+)?[eE][+]?\d+")
_SPLIT_PHONES = re.compile(r"\s*[/／、,，;；]\s*")
#: the contracts §1 field a ``contacts check`` problem is about, when its message names none
_KIND_COLUMN = {
    **dict.fromkeys(("bad_phone", "duplicate_phone", "landline"), "phone"),
    **dict.fromkeys(("bad_code", "no_a", "parent_missing", "no_duty"), "division_code"),
    **dict.fromkeys(("level_mismatch", "unknown_level"), "level"),
    **dict.fromkeys(("unknown_rank", "duty_not_county"), "rank"),
    **{"duplicate_id": "contact_id", "empty_name": "name", "name_mismatch": "division_name"},
}
#: how a field is called in a workbook, for fields the roster had no column for
_LABELS = "编号 区划代码 行政区划名称 层级 A/B角 类别 姓名 手机号码 备用电话"
LABEL = dict(zip(COLUMNS, _LABELS.split(), strict=True))

#: progress(rows done, rows in all), for the CLI's progress bar
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class SourceColumn:
    letter: str  # Excel column letter, e.g. "D"
    header: str  # the header text as written


@dataclass(frozen=True, slots=True)
class RowOrigin:
    """Where one CSV record came from: sheet, Excel row, and the column behind each field."""

    sheet: str
    row: int
    columns: Mapping[str, SourceColumn]


@dataclass(frozen=True, slots=True)
class SheetInfo:
    name: str
    header_row: int | None  # None: no header found, sheet skipped
    rows: int  # records taken from it
    columns: Mapping[str, str] = field(default_factory=dict)  # field -> header text


@dataclass(frozen=True, slots=True)
class Roster:
    path: Path
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    origins: tuple[RowOrigin, ...]
    sheets: tuple[SheetInfo, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A problem of the produced CSV, placed in the workbook when it came from a row of it."""

    file: str
    line: int | None
    message: str
    kind: str
    sheet: str | None = None
    row: int | None = None
    column: str | None = None  # the contracts §1 field
    letter: str | None = None
    header: str | None = None

    def __str__(self) -> str:
        if self.sheet is None:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
        else:
            col = ""
            if self.column is not None:
                col = f" {self.letter} 列「{self.header}」" if self.letter else f"（{self.column}）"
            where = f"{self.file}「{self.sheet}」第 {self.row} 行{col}"
        return " ".join(f"{where}: {self.message}".split())


def _key(text: str) -> str:
    return _NOISE.sub("", unicodedata.normalize("NFKC", text)).lower()


_EXACT = {_key(h): f for f, hs in HEADERS.items() for h in hs}
_PREFIXES = sorted(
    ((_key(h), f) for f, hs in HEADERS.items() for h in hs if len(h) > 1), key=lambda p: -len(p[0])
)


def map_header(cells: list[str]) -> dict[str, int]:
    """field -> column index for a candidate header row (the left-most header wins a field)."""
    found: dict[str, int] = {}
    for i, text in enumerate(cells):
        key = _key(text)
        if not key:
            continue
        name = _EXACT.get(key) or next((f for p, f in _PREFIXES if key.startswith(p)), None)
        if name is not None and name not in found:
            found[name] = i
    return found


def cell_text(value: Any) -> str:
    """A cell as text: whole floats without ``.0``, NFKC (full-width digits), one line."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    text = unicodedata.normalize("NFKC", str(value))
    return " ".join(text.split())


def number_text(text: str) -> str:
    """A code or phone cell that went through a number format: ``4.33122101201E+11``, ``…0.0``."""
    compact = text.replace(" ", "")
    if _SCIENTIFIC.fullmatch(compact) or re.fullmatch(r"\d+\.0+", compact):
        try:
            number = Decimal(compact)
        except InvalidOperation:
            return text
        if number == number.to_integral_value():
            return str(int(number))
    return text


def map_level(text: str, code: str) -> str:
    """层级 as written (县级, 乡镇, 村/社区, county) → county/township/village; empty: by code."""
    value = _key(text)
    if not value:
        norm = normalise(code)
        if norm is not None and level_of(norm) in ("county", "township", "village"):
            return level_of(norm)
        return ""
    if value in ("county", "township", "village"):
        return value
    if "村" in value or "社区" in value:
        return "village"
    if "乡" in value or "镇" in value or "街道" in value:
        return "township"
    if "县" in value or "区" in value or "市" in value:
        return "county"
    return text


def map_rank(text: str) -> str:
    """A角/A岗/主 → A, B角/B岗/备 → B, 值班/值班室/duty → duty; anything else kept as written."""
    value = _key(text).upper()
    if not value:
        return ""
    if "值班" in value or value == "DUTY":
        return "duty"
    if value.startswith("A") or value.startswith("主"):
        return "A"
    if value.startswith("B") or value.startswith("备"):
        return "B"
    return text


def read_roster(
    path: str | Path, *, sheet: str | None = None, progress: Progress | None = None
) -> Roster:
    """Read the workbook: every visible sheet with a recognisable header, or just ``sheet``."""
    from openpyxl import load_workbook  # here: every warnd command would pay for the import
    from openpyxl.utils.exceptions import InvalidFileException
    from openpyxl.worksheet.worksheet import Worksheet

    p = Path(path)
    try:
        book = load_workbook(p, data_only=True)
    except FileNotFoundError:
        raise ContactsError("花名册不存在 (no such file)", source=str(p)) from None
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise ContactsError(
            f"不是可读的 .xlsx 工作簿，请在 Excel 中另存为 .xlsx (cannot read: {exc})",
            source=str(p),
        ) from None
    try:
        if sheet is not None:
            if sheet not in book.sheetnames:
                raise ContactsError(
                    f"没有工作表「{sheet}」(no such sheet; sheets: {', '.join(book.sheetnames)})",
                    source=str(p),
                    field="--sheet",
                )
            chosen = book[sheet]
            sheets: list[Worksheet] = [chosen] if isinstance(chosen, Worksheet) else []
        else:
            sheets = [
                ws
                for ws in book.worksheets
                if isinstance(ws, Worksheet) and ws.sheet_state == "visible"
            ]
        total = sum(ws.max_row for ws in sheets)
        reader = _Reader(p, progress, total)
        for ws in sheets:
            reader.sheet(ws, required=sheet is not None)
    finally:
        book.close()
    if not reader.rows:
        taken = [s for s in reader.infos if s.header_row is not None]
        why = "表头下没有数据行 (no data rows)" if taken else "找不到表头 (no header row)"
        raise ContactsError(f"{why}：表头需有「区划代码」和「手机号码」等列", source=str(p))
    return Roster(
        p,
        reader.header,
        tuple(reader.rows),
        tuple(reader.origins),
        tuple(reader.infos),
        tuple(reader.notes),
    )


class _Reader:
    def __init__(self, path: Path, progress: Progress | None, total: int) -> None:
        self.path = path
        self.progress = progress
        self.total = max(total, 1)
        self.done = 0
        self.rows: list[tuple[str, ...]] = []
        self.origins: list[RowOrigin] = []
        self.infos: list[SheetInfo] = []
        self.notes: list[str] = []
        self.ids: dict[tuple[str, str], int] = {}
        self.channels = False
        self.header = COLUMNS

    def sheet(self, ws: Worksheet, *, required: bool) -> None:
        from openpyxl.utils import get_column_letter

        grid = [[cell_text(v) for v in row] for row in ws.iter_rows(values_only=True)]
        header_at, fields, header = None, {}, []
        for i, cells in enumerate(grid[:_HEADER_SCAN]):
            # A two-row header (姓名 merged down, 联系方式 over 手机号码/办公电话): the row
            # above fills the cells this row leaves empty.
            above = grid[i - 1] if i > 0 else []
            joined = [c or (above[j] if j < len(above) else "") for j, c in enumerate(cells)]
            for candidate in (cells, joined):
                mapped = map_header(candidate)
                if all(f in mapped for f in REQUIRED) and len(mapped) >= 3:
                    header_at, fields, header = i, mapped, candidate
                    break
            if header_at is not None:
                break
        if header_at is None:
            if required:
                raise ContactsError(
                    f"工作表「{ws.title}」找不到表头：需要「区划代码」和「手机号码」列 (no header)",
                    source=str(self.path),
                )
            self.infos.append(SheetInfo(ws.title, None, 0))
            self.done += ws.max_row
            return
        self._fill_merged(ws, grid, header_at)
        if "rank" not in fields:
            self.notes.append(f"工作表「{ws.title}」没有 A/B角 列：全部按 A 角导入")
        if "channels" in fields:
            self.channels = True
            self.header = (*COLUMNS, "channels")
        columns = {f: SourceColumn(get_column_letter(i + 1), header[i]) for f, i in fields.items()}
        if "role" not in columns and "title" in columns:
            columns["role"] = columns["title"]
        for alias in ("county_name", "township_name", "village_name"):
            if "division_name" not in columns and alias in columns:
                columns["division_name"] = columns[alias]
        taken = 0
        for r, cells in enumerate(grid[header_at + 1 :], start=header_at + 2):
            self.done += 1
            if self.progress is not None and self.done % 1000 == 0:
                self.progress(self.done, self.total)
            record = self._record(cells, fields)
            if record is not None:
                self.rows.append(record)
                self.origins.append(RowOrigin(ws.title, r, columns))
                taken += 1
        self.done += header_at + 1
        self.infos.append(
            SheetInfo(ws.title, header_at + 1, taken, {f: c.header for f, c in columns.items()})
        )

    @staticmethod
    def _fill_merged(ws: Worksheet, grid: list[list[str]], header_at: int) -> None:
        """A division merged down over its persons' rows: every row gets the value."""
        for rng in ws.merged_cells.ranges:
            top, left, bottom = rng.min_row - 1, rng.min_col - 1, rng.max_row - 1
            if bottom == top or top <= header_at or top >= len(grid):
                continue  # a title or section row merged across, or above the data
            value = grid[top][left] if left < len(grid[top]) else ""
            for r in range(top + 1, min(bottom, len(grid) - 1) + 1):
                row = grid[r]
                while len(row) <= left:
                    row.append("")
                if not row[left]:
                    row[left] = value

    def _record(self, cells: list[str], fields: dict[str, int]) -> tuple[str, ...] | None:
        def get(name: str) -> str:
            i = fields.get(name)
            return cells[i] if i is not None and i < len(cells) else ""

        code = number_text(get("division_code")).replace(" ", "")
        person = get("name") or get("phone") or get("alt_phone")
        if not person and normalise(code) is None:
            return None  # blank, section or total row
        phones = [number_text(x) for x in _SPLIT_PHONES.split(get("phone")) if x]
        alt = number_text(get("alt_phone"))
        if len(phones) > 1 and not alt:
            alt = phones[1]  # "13812345678/13912345678": the second as the backup number
        main = phones[0] if phones else ""
        level = map_level(get("level"), code)
        rank = map_rank(get("rank")) if "rank" in fields else "A"
        role, title = get("role"), get("title")
        if role and title and title != role:
            role = f"{role}（{title}）"
        norm = normalise(code)
        cid = get("contact_id")
        if not cid:
            key = (norm or code, rank.lower())
            self.ids[key] = self.ids.get(key, 0) + 1
            cid = f"c-{key[0]}-{key[1]}{self.ids[key]}"
        out = (
            cid,
            code,
            get("division_name") or _name_by_level(get, level),
            level,
            rank,
            role or title,
            get("name"),
            phone.normalise(main) or main,
            (phone.normalise(alt) or alt) if alt else "",
        )
        return (*out, get("channels")) if "channels" in fields else out


def _name_by_level(get: Callable[[str], str], level: str) -> str:
    """Without 行政区划名称: the 县/乡镇/村 column of the row's level, else the most specific."""
    own = {"county": "county_name", "township": "township_name", "village": "village_name"}
    if level in own and get(own[level]):
        return get(own[level])
    return get("village_name") or get("township_name") or get("county_name")


@dataclass(frozen=True, slots=True)
class ImportResult:
    roster: Roster
    out: Path
    problems: tuple[RowProblem, ...]
    counts: Mapping[str, int]

    @property
    def ok(self) -> bool:
        return not self.problems


def import_roster(
    path: str | Path,
    out: str | Path,
    *,
    sheet: str | None = None,
    check: str | Path | None = None,
    progress: Progress | None = None,
    load_progress: Progress | None = None,
    reading: AbstractContextManager[object] | None = None,
) -> ImportResult:
    """Read the workbook, write the CSV, then run ``contacts check`` on it (or on ``check``,
    e.g. the folder it was written into, as the daemon will load it).

    ``reading`` is entered while the workbook is read (a spinner: openpyxl's load is one
    long call that cannot report progress).
    """
    with reading or contextlib.nullcontext():
        roster = read_roster(path, sheet=sheet, progress=progress)
    written = write_csv(roster, out)
    directory, problems = load(check if check is not None else written, progress=load_progress)
    return ImportResult(
        roster, written, tuple(locate(problems, roster, written)), directory.counts()
    )


def write_csv(roster: Roster, out: str | Path) -> Path:
    """Write the contracts §1 CSV (UTF-8, one record per line) atomically; return its path."""
    target = Path(out)
    width = len(roster.header)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(roster.header)
    for row in roster.rows:
        writer.writerow((*row, *([""] * (width - len(row))))[:width])
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(buf.getvalue())
        os.replace(tmp, target)
    except OSError as exc:
        raise ContactsError(
            f"无法写入 (cannot write): {exc.strerror}", source=str(target)
        ) from None
    return target


def locate(problems: list[Problem], roster: Roster, csv_path: str | Path) -> list[RowProblem]:
    """The checker's problems, placed at sheet/row/column when they are on the produced CSV."""
    produced = os.path.normpath(str(csv_path))
    name = roster.path.name
    out: list[RowProblem] = []
    for p in problems:
        index = (p.line or 0) - 2
        if os.path.normpath(p.source) != produced or not 0 <= index < len(roster.origins):
            out.append(RowProblem(p.source, p.line, p.message, p.kind))
            continue
        origin = roster.origins[index]
        column = _column_of(p)
        src = origin.columns.get(column) if column else None
        out.append(
            RowProblem(
                name,
                p.line,
                p.message,
                p.kind,
                sheet=origin.sheet,
                row=origin.row,
                column=column,
                letter=src.letter if src else None,
                header=src.header if src else LABEL.get(column or "", column),
            )
        )
    return out


def _column_of(p: Problem) -> str | None:
    """The contracts §1 field a problem is about: named in its message, else by its kind."""
    for col in COLUMNS:
        if f"({col})" in p.message:
            return col
    return _KIND_COLUMN.get(p.kind)
