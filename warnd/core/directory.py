"""The contacts directory (contracts §1): who answers for which division.

``load`` reads one CSV file or a folder of them and returns an immutable ``Directory`` plus
every problem found. Only a directory that cannot be read at all raises ``ContactsError``;
a bad row is skipped (or kept when keeping it is harmless) and listed as a ``Problem``, so
that one typo in a 250,000-row province file never stops the chain for everyone else.
"""

from __future__ import annotations

import csv
import gc
import io
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

from warnd.core import phone
from warnd.core.chain import rungs
from warnd.core.division import DIRECTORY_LEVELS, LEVEL_ZH, Level, level_of, normalise, significant
from warnd.core.errors import ContactsError

#: a post's rank (contracts §1): one the rung table calls (``warnd.core.chain.rungs.ranks()``:
#: ``A``, ``B``, ``duty``), read from the table when a directory is loaded
Rank = str

#: the header of contracts §1, in order; ``channels`` (e.g. ``voice;sms``) may follow
COLUMNS: tuple[str, ...] = (
    "contact_id",
    "division_code",
    "division_name",
    "level",
    "rank",
    "role",
    "name",
    "phone",
    "alt_phone",
)
#: cells that may be empty; every other column of COLUMNS must have a value
OPTIONAL_CELLS: frozenset[str] = frozenset({"role", "name", "alt_phone", "channels"})
_REQUIRED = frozenset(COLUMNS) - OPTIONAL_CELLS
_CODE_LENGTH: dict[str, int] = {"county": 6, "township": 9, "village": 12}
_PROGRESS_EVERY = 2048

#: progress(lines_done, lines_total): called while loading, for the CLI's progress bar
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Contact:
    """One person at one post (one CSV row)."""

    contact_id: str
    division_code: str  # normalised (warnd.core.division.normalise)
    division_name: str
    level: Level
    rank: Rank
    role: str
    name: str
    phone: str  # E.164
    alt_phone: str | None  # E.164 or None
    source: str  # "file.csv:12"
    channels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Division:
    """A county, township or village that has at least one row in the directory."""

    code: str
    name: str
    level: Level


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the directory, where it is, in one line."""

    source: str
    line: int | None
    message: str
    kind: str = ""  # stable English key for scripts and tests, e.g. "duplicate_id"

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return " ".join(f"{where}: {self.message}".split())


class Directory:
    """Immutable lookups over contacts; divisions are the codes that have rows.

    Overlap queries bisect per-level sorted code lists, so a province-wide warning over
    25,000 villages costs one range slice, not a scan per area code.
    """

    __slots__ = ("_by_phone", "_contacts", "_divisions", "_persons", "_sorted")

    def __init__(self, contacts: Iterable[Contact]) -> None:
        by_id: dict[str, Contact] = {}
        divisions: dict[str, Division] = {}
        persons: dict[tuple[str, str], list[Contact]] = {}
        by_phone: dict[str, list[Contact]] = {}
        for c in contacts:
            if c.contact_id in by_id:
                raise ValueError(f"duplicate contact_id {c.contact_id!r}")
            by_id[c.contact_id] = c
            if c.division_code not in divisions:
                divisions[c.division_code] = Division(c.division_code, c.division_name, c.level)
            persons.setdefault((c.division_code, c.rank), []).append(c)
            by_phone.setdefault(c.phone, []).append(c)
            if c.alt_phone is not None and c.alt_phone != c.phone:
                by_phone.setdefault(c.alt_phone, []).append(c)
        self._contacts = by_id
        self._divisions = divisions
        self._persons = {key: tuple(value) for key, value in persons.items()}
        self._by_phone = {key: tuple(value) for key, value in by_phone.items()}
        self._sorted: dict[str, list[str]] = {
            level: sorted(code for code, d in divisions.items() if d.level == level)
            for level in DIRECTORY_LEVELS
        }

    def __len__(self) -> int:
        return len(self._contacts)

    def __repr__(self) -> str:
        return f"Directory({self.counts()})"

    def _code(self, code: str) -> str | None:
        if code in self._divisions:
            return code
        return normalise(code)

    def division(self, code: str) -> Division | None:
        """The division with this code (12-digit padded codes accepted)."""
        norm = self._code(code)
        return None if norm is None else self._divisions.get(norm)

    def divisions(self) -> tuple[Division, ...]:
        """Every division, sorted by code."""
        return tuple(self._divisions[c] for c in sorted(self._divisions))

    def contact(self, contact_id: str) -> Contact | None:
        return self._contacts.get(contact_id)

    def contacts(self) -> tuple[Contact, ...]:
        """Every contact, in file order."""
        return tuple(self._contacts.values())

    def persons(self, code: str, rank: Rank) -> tuple[Contact, ...]:
        """The persons of one rank at one division, in file order."""
        norm = self._code(code)
        return () if norm is None else self._persons.get((norm, rank), ())

    def parent(self, code: str) -> Division | None:
        """The immediate parent (village → township → county) when it has rows, else None."""
        norm = self._code(code)
        if norm is None or len(norm) not in (9, 12):
            return None
        return self._divisions.get(norm[: len(norm) - 3])

    def county_of(self, code: str) -> Division | None:
        """The county a division lies in (its first 6 digits) when it has rows."""
        norm = self._code(code)
        if norm is None or len(norm) < 6:
            return None
        county = self._divisions.get(norm[:6])
        return county if county is not None and county.level == "county" else None

    def overlapping(self, area_codes: Iterable[str], level: Level) -> tuple[Division, ...]:
        """Divisions of ``level`` overlapping any area code (contracts §3), sorted by code."""
        codes = self._sorted.get(level)
        if not codes:
            return ()
        width = _CODE_LENGTH[level]
        found: set[str] = set()
        for raw in area_codes:
            area = normalise(raw)
            if area is None:
                continue
            # the division contains the area: its code is the area's prefix of its width
            if len(area) >= width and level_of(area) not in ("province", "prefecture"):
                head = area[:width]
                if head in self._divisions and self._divisions[head].level == level:
                    found.add(head)
            # the division lies inside the area: a contiguous range of the sorted codes
            sig = significant(area)
            lo = bisect_left(codes, sig)
            hi = bisect_left(codes, sig + ":", lo)  # ':' sorts right after '9'
            found.update(codes[lo:hi])
        return tuple(self._divisions[c] for c in sorted(found))

    def unmatched(self, area_codes: Iterable[str]) -> tuple[str, ...]:
        """Area codes (as given, first occurrence) that overlap no division at all."""
        out: dict[str, None] = {}
        for raw in area_codes:
            if raw not in out and not any(self.overlapping((raw,), lv) for lv in DIRECTORY_LEVELS):
                out[raw] = None
        return tuple(out)

    def counts(self) -> dict[str, int]:
        """Divisions per level, plus ``contacts``."""
        counts: dict[str, int] = {lv: len(self._sorted[lv]) for lv in DIRECTORY_LEVELS}
        counts["contacts"] = len(self._contacts)
        return counts

    def contacts_by_phone(self, e164: str) -> tuple[Contact, ...]:
        """Contacts whose phone or alt_phone is this number (SMS replies), in file order."""
        found = self._by_phone.get(e164)
        if found is not None:
            return found
        norm = phone.normalise(e164)
        return () if norm is None else self._by_phone.get(norm, ())


def load(path: str | Path, *, progress: Progress | None = None) -> tuple[Directory, list[Problem]]:
    """Read a CSV file or a folder of ``*.csv`` (sorted by name); see the module docstring."""
    files = _files(Path(path))
    texts = [(str(f), _decode(f)) for f in files]
    reader = _Reader(progress, sum(text.count("\n") + 1 for _, text in texts))
    # Hundreds of thousands of new, acyclic objects make the cyclic GC rescan them again and
    # again (a third of the load time); nothing here forms cycles, so pause it while building.
    paused = gc.isenabled()
    gc.disable()
    try:
        for order, (name, text) in enumerate(texts):
            reader.read(order, name, text)
        return reader.finish()
    finally:
        if paused:
            gc.enable()


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
        if not files:
            raise ContactsError("目录中没有 CSV 文件 (no *.csv files)", source=str(path))
        return files
    if path.is_file():
        return [path]
    raise ContactsError("通讯录路径不存在 (path not found)", source=str(path))


def _decode(file: Path) -> str:
    try:
        data = file.read_bytes()
    except OSError as err:
        raise ContactsError(
            f"无法读取文件 (cannot read): {err.strerror}", source=str(file)
        ) from err
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ContactsError(
            f"不是 UTF-8 编码 (undecodable byte 0x{data[err.start]:02x})，请另存为 UTF-8 CSV",
            source=str(file),
            line=line,
        ) from err


def _check_code(raw: str, level: str) -> tuple[str, Level | None]:
    """(normalised code, level) for a good cell pair, else ("kind message", None)."""
    code = normalise(raw)
    if code is None:
        return f"bad_code 区划代码无效 (division_code) '{raw}'：应为 6、9 或 12 位数字", None
    actual = level_of(code)
    if actual not in _CODE_LENGTH:
        zh = LEVEL_ZH[actual]
        return (
            f"bad_code 区划代码 (division_code) '{raw}' 是{zh}级代码，通讯录只收县、乡镇、村",
            None,
        )
    level = level.lower()
    if level not in _CODE_LENGTH:
        return f"unknown_level 未知的级别 (level) '{level}'，应为 county、township 或 village", None
    if level != actual:
        return f"level_mismatch 级别与区划代码不符 (level) '{level}'：代码 {raw} 是 {actual}", None
    return code, actual


class _Reader:
    """Accumulates rows across files, then runs the checks that need the whole directory."""

    def __init__(self, progress: Progress | None, total_lines: int) -> None:
        self.progress = progress
        self.total = total_lines
        self.done = 0  # lines read in earlier files plus this one, for progress
        self.base = 0
        self.contacts: list[Contact] = []
        self.problems: list[tuple[int, int, Problem]] = []
        self.ids: dict[str, str] = {}  # contact_id -> source
        self.names: dict[str, tuple[str, str]] = {}  # code -> (name, source)
        self.first: dict[str, tuple[int, str, int]] = {}  # code -> (order, file, line)
        self.phones: dict[tuple[str, str], str] = {}  # (code, e164) -> source
        self.codes: dict[tuple[str, str], tuple[str, Level | None]] = {}  # _check_code cache
        self.ranks = rungs.ranks()  # the ranks some rung calls (warnd.core.chain.rungs)
        self.rank_case: dict[str, Rank] = {rank.lower(): rank for rank in self.ranks}

    def problem(self, order: int, file: str, line: int | None, kind: str, message: str) -> None:
        self.problems.append((order, line or 0, Problem(file, line, message, kind)))

    def read(self, order: int, file: str, text: str) -> None:
        rows = csv.reader(io.StringIO(text, newline=""))
        end = 0
        header: list[str] | None = None
        pick = itemgetter(*range(len(COLUMNS)))
        chan = -1
        try:
            for row in rows:
                line, end = end + 1, rows.line_num
                if header is None:
                    if any(cell.strip() for cell in row):
                        header = self._header(file, line, row)
                        pick = itemgetter(*(header.index(col) for col in COLUMNS))
                        chan = header.index("channels") if "channels" in header else -1
                    continue
                if len(row) != len(header):
                    if any(cell.strip() for cell in row):
                        self.problem(
                            order,
                            file,
                            line,
                            "cell_count",
                            f"列数不对 (wrong number of cells)：本行 {len(row)} 列，"
                            f"表头 {len(header)} 列",
                        )
                    continue
                cells = list(map(str.strip, pick(row)))
                channels = row[chan].strip() if chan >= 0 else ""
                self._row(order, file, line, cells, channels)
                if self.progress is not None and self.base + line - self.done >= _PROGRESS_EVERY:
                    self.done = self.base + line
                    self.progress(self.done, self.total)
        except csv.Error as err:
            self.problem(order, file, end + 1, "csv", f"CSV 格式错误，文件其余部分未读取 ({err})")
        self.base += text.count("\n") + 1
        if header is None:
            missing = ", ".join(COLUMNS)
            raise ContactsError(f"缺少表头 (missing columns): {missing}", source=file)

    def _header(self, file: str, line: int, row: list[str]) -> list[str]:
        header = [cell.strip().lower() for cell in row]
        missing = [col for col in COLUMNS if col not in header]
        if missing:
            raise ContactsError(
                f"缺少必需的列 (missing columns): {', '.join(missing)}", source=file, line=line
            )
        return header

    def _row(self, order: int, file: str, line: int, cells: list[str], channels: str) -> None:
        cid, raw_code, div_name, level, rank, role, name, raw_phone, raw_alt = cells
        if not (cid and raw_code and div_name and level and rank and raw_phone):
            if any(cells) or channels:  # else an empty row (Excel leaves ",,,,,,,," behind)
                col = next(
                    c for c, v in zip(COLUMNS, cells, strict=True) if not v and c in _REQUIRED
                )
                self.problem(order, file, line, "missing_cell", f"缺少必填项 ({col})")
            return
        valid = self._valid(order, file, line, cid, raw_code, level, rank, raw_phone)
        if valid is None:
            return
        code, actual, rank, e164 = valid
        source = f"{file}:{line}"
        self.ids[cid] = source
        # from here on the row is kept; what follows is worth fixing but harmless
        alt = self._advise(order, file, line, actual, rank, name, raw_phone, e164, raw_alt)
        div_name = self._division_name(order, file, line, code, div_name, source)
        self._unique_phone(order, file, line, source, code, e164)
        if alt is not None and alt != e164:
            self._unique_phone(order, file, line, source, code, alt)
        chans: tuple[str, ...] = ()
        if channels:
            split = channels.replace(",", ";").lower().split(";")
            chans = tuple(c for c in map(str.strip, split) if c)
        self.contacts.append(
            Contact(
                cid,  # positional: measurably faster than keywords over 250,000 rows
                code,
                div_name,
                actual,
                rank,
                role,
                name,
                e164,
                alt,
                source,
                chans,
            )
        )

    def _valid(
        self,
        order: int,
        file: str,
        line: int,
        cid: str,
        raw_code: str,
        level: str,
        rank: str,
        raw_phone: str,
    ) -> tuple[str, Level, Rank, str] | None:
        """(code, level, rank, E.164 phone) of a row that can be kept; None (and the problem
        said) for a row that cannot: a bad code or level, an unknown rank, a bad number, an id
        seen before."""
        checked = self.codes.get((raw_code, level))
        if checked is None:
            checked = self.codes[(raw_code, level)] = _check_code(raw_code, level)
        code, actual = checked
        if actual is None:
            kind, _, message = code.partition(" ")
            self.problem(order, file, line, kind, message)
            return None
        if rank not in self.ranks:
            rank = self.rank_case.get(rank.lower(), rank)  # "a", "Duty": obvious, so accepted
            if rank not in self.ranks:
                known = "、".join(self.ranks[:-1]) + f" 或 {self.ranks[-1]}"
                self.problem(
                    order, file, line, "unknown_rank", f"未知的角色 (rank) '{rank}'，应为 {known}"
                )
                return None
        e164 = phone.normalise(raw_phone)
        if e164 is None:
            self.problem(order, file, line, "bad_phone", f"电话号码无效 (phone) '{raw_phone}'")
            return None
        if cid in self.ids:
            self.problem(
                order,
                file,
                line,
                "duplicate_id",
                f"contact_id 重复 (duplicate contact_id) '{cid}'，"
                f"已在 {self.ids[cid]} 出现，本行忽略",
            )
            return None
        return code, actual, rank, e164

    def _advise(
        self,
        order: int,
        file: str,
        line: int,
        level: Level,
        rank: Rank,
        name: str,
        raw_phone: str,
        e164: str,
        raw_alt: str,
    ) -> str | None:
        """Say what is worth fixing in a kept row (a bad alt_phone, no name, a duty office off
        a county, a landline for a person); returns the alt_phone in E.164, or None."""
        alt: str | None = None
        if raw_alt:
            alt = phone.normalise(raw_alt)
            if alt is None:
                self.problem(
                    order, file, line, "bad_phone", f"备用电话无效 (alt_phone) '{raw_alt}'，已忽略"
                )
        if not name:
            self.problem(order, file, line, "empty_name", "姓名为空 (name)")
        if rank == "duty" and level != "county":
            self.problem(
                order,
                file,
                line,
                "duty_not_county",
                f"值班室 (duty) 只属于县级区划，本行区划是 {level}，不会被叫应",
            )
        elif rank != "duty" and not phone.is_mobile(e164):
            self.problem(
                order,
                file,
                line,
                "landline",
                f"{rank} 角电话应为手机 (phone) '{raw_phone}'：固定电话收不到短信，只适合值班室",
            )
        return alt

    def _division_name(
        self, order: int, file: str, line: int, code: str, div_name: str, source: str
    ) -> str:
        """The division's name as its first row gives it (a row that differs is reported)."""
        known = self.names.get(code)
        if known is None:
            self.names[code] = (div_name, source)
            self.first[code] = (order, file, line)
        elif known[0] != div_name:
            self.problem(
                order,
                file,
                line,
                "name_mismatch",
                f"同一区划代码名称不一致 (division_name) '{div_name}'，{known[1]} 为 '{known[0]}'",
            )
            return known[0]
        return div_name

    def _unique_phone(
        self, order: int, file: str, line: int, source: str, code: str, number: str
    ) -> None:
        """A/B backups sharing a number defeat the backup: one number per division."""
        seen = self.phones.setdefault((code, number), source)
        if seen is not source:  # identity: the value is our own unless the pair was seen
            self.problem(
                order,
                file,
                line,
                "duplicate_phone",
                f"同一区划电话号码重复 (duplicate phone) {number}，与 {seen} 相同，"
                "A/B 角互为备份不能共用号码",
            )

    def finish(self) -> tuple[Directory, list[Problem]]:
        directory = Directory(self.contacts)
        for code, (order, file, line) in self.first.items():
            div = directory.division(code)
            assert div is not None
            label = f"{LEVEL_ZH[div.level]} {code} {div.name}"
            if not directory.persons(code, "A"):
                self.problem(order, file, line, "no_a", f"{label} 没有 A 角 (no A person)")
            if div.level != "county" and code[: len(code) - 3] not in self.first:
                parent = code[: len(code) - 3]
                self.problem(
                    order,
                    file,
                    line,
                    "parent_missing",
                    f"{label} 的上级区划 {parent} 没有任何联系人行 (parent division missing)",
                )
            if div.level == "county" and not directory.persons(code, "duty"):
                self.problem(order, file, line, "no_duty", f"{label} 没有值班室 (no duty row)")
        if self.progress is not None:
            self.progress(self.total, self.total)
        self.problems.sort(key=lambda item: (item[0], item[1]))
        return directory, [p for _, _, p in self.problems]
