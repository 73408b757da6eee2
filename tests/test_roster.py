"""``warnd contacts import``: real .xlsx workbooks written with openpyxl, as offices keep them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from openpyxl import Workbook
from openpyxl.worksheet.worksheet import Worksheet

from warnd.cli import main
from warnd.core.directory import COLUMNS, load
from warnd.core.errors import ContactsError
from warnd.desk.roster import cell_text, map_header, number_text, read_roster

HEADER = [
    "序号",
    "区划代码",
    "行政区划名称",
    "层级",
    "A/B角",
    "姓名",
    "职务",
    "手机号码",
    "备用电话",
]


def county_sheet(ws: Worksheet, *, bad_phone: bool = False) -> None:
    """泸溪县 as a duty office keeps it: a title, the header on row 3, merged divisions,
    numbers as numbers, a section row, blank rows, phones with spaces, dashes and +86."""
    ws.append(["泸溪县防汛责任人名单（2025年汛期）"])
    ws.merge_cells("A1:I1")
    ws.append([])
    ws.append(HEADER)  # row 3
    ws.append([1, 433122, "泸溪县", "县级", "A角", "张县长", "县长", 13812340001, None])  # 4
    ws.append([2, None, None, None, "B角", "李副县长", "副县长", "138-1234-0002", None])  # 5
    ws.append([3, None, None, None, "值班室", "县防办值班员", None, "0743-4222110", None])  # 6
    ws.merge_cells("B4:B6")
    ws.merge_cells("C4:C6")
    ws.merge_cells("D4:D6")
    ws.append([])  # 7: blank separator
    ws.append(["二、乡镇、村"])  # 8: a section row, merged across
    ws.merge_cells("A8:I8")
    ws.append([4, 433122101.0, "浦市镇", "乡镇", "A", "王镇长", "镇长", "138 1234 0003", None])  # 9
    ws.append([5, 433122101.0, "浦市镇", "乡镇", "B", "赵副镇长", "副镇长", 13812340004, None])
    ws.append(
        [
            6,
            4.33122101201e11,
            "马王溪村",
            "村",
            "A角",
            "刘支书",
            "村支书",
            "+86 138 1234 0005",
            None,
        ]
    )  # 11
    phone_b = "1381234" if bad_phone else "13812340006/13912340006"
    ws.append([7, "4.33122101201E+11", "马王溪村", "村", "B角", "陈主任", "村主任", phone_b, None])
    ws.append([None, None, None, None, None, None, None, None, None])  # 13: trailing blank


def workbook(path: Path, **kwargs: Any) -> Path:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "泸溪县"
    county_sheet(ws, **kwargs)
    notes = wb.create_sheet("填表说明")
    notes.append(["请按区划填写，A角为主要责任人，B角为备份。"])
    wb.save(path)
    return path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["contacts", "import", *args])


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_cells_as_excel_stores_them() -> None:
    assert cell_text(13812345678) == "13812345678"
    assert cell_text(4.33122101201e11) == "433122101201"
    assert cell_text(433122.0) == "433122"
    assert cell_text("１３８１２３４５６７８") == "13812345678"  # full-width digits
    assert cell_text("浦市镇\n（街道）") == "浦市镇 (街道)"
    assert number_text("4.33122101201E+11") == "433122101201"
    assert number_text("433122101.0") == "433122101"
    assert number_text("138-1234-5678") == "138-1234-5678"
    fields = map_header(["序号", "行政区划代码（12位）", "姓 名", "手机号码*", "A/B 角", "职务"])
    assert fields == {"division_code": 1, "name": 2, "phone": 3, "rank": 4, "title": 5}


def test_import_writes_the_contracts_csv_and_passes_the_checks(tmp_path: Path) -> None:
    src = workbook(tmp_path / "泸溪县责任人.xlsx")
    out = tmp_path / "contacts" / "433122.csv"
    res = invoke(str(src), "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "检查通过" in res.stdout and "7 行" in res.stdout
    assert out.read_text(encoding="utf-8").splitlines()[0] == ",".join(COLUMNS)
    rows = read_csv(out)
    got = [(r["contact_id"], r["division_code"], r["level"], r["rank"], r["phone"]) for r in rows]
    assert got == [
        ("c-433122-a1", "433122", "county", "A", "+8613812340001"),
        ("c-433122-b1", "433122", "county", "B", "+8613812340002"),
        ("c-433122-duty1", "433122", "county", "duty", "+867434222110"),
        ("c-433122101-a1", "433122101", "township", "A", "+8613812340003"),
        ("c-433122101-b1", "433122101", "township", "B", "+8613812340004"),
        ("c-433122101201-a1", "433122101201", "village", "A", "+8613812340005"),
        ("c-433122101201-b1", "433122101201", "village", "B", "+8613812340006"),
    ]
    assert rows[1]["division_name"] == "泸溪县" and rows[1]["role"] == "副县长"  # merged down
    assert rows[6]["alt_phone"] == "+8613912340006"  # "a/b" in one cell: b is the backup
    # the file is what `contacts check` accepts
    check = CliRunner().invoke(main, ["contacts", "check", str(out)])
    assert check.exit_code == 0, check.output
    _, problems = load(out)
    assert problems == []


def test_a_bad_row_is_named_by_sheet_row_and_column(tmp_path: Path) -> None:
    src = workbook(tmp_path / "roster.xlsx", bad_phone=True)
    out = tmp_path / "out.csv"
    res = invoke(str(src), "--out", str(out))
    assert res.exit_code == 1
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("roster.xlsx「泸溪县」第 12 行 H 列「手机号码」:")
    assert "1381234" in lines[0]
    assert "1 个问题" in res.stderr
    assert len(read_csv(out)) == 7  # written all the same: the office fixes and re-imports
    res = invoke(str(src), "--out", str(out), "--json")
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and doc["rows"] == 7
    (p,) = doc["problems"]
    assert (p["sheet"], p["row"], p["column"], p["letter"], p["kind"]) == (
        "泸溪县",
        12,
        "phone",
        "H",
        "bad_phone",
    )
    sheets = {s["name"]: s for s in doc["sheets"]}
    assert sheets["泸溪县"]["header_row"] == 3 and sheets["填表说明"]["header_row"] is None


def test_division_problems_point_at_the_division_row(tmp_path: Path) -> None:
    """A township roster alone: its county has no rows; with --check-folder it is complete."""
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "浦市镇"
    ws.append(["区划代码", "区划名称", "角色", "姓名", "手机"])
    ws.append(["433122101", "浦市镇", "A", "王镇长", "13812340003"])
    ws.append(["433122101201", "马王溪村", "A", "刘支书", "13812340005"])
    wb.save(tmp_path / "pushi.xlsx")
    folder = tmp_path / "contacts"
    res = invoke(str(tmp_path / "pushi.xlsx"), "--out", str(folder / "433122101.csv"), "--json")
    assert res.exit_code == 1
    (p,) = json.loads(res.stdout)["problems"]
    assert (p["kind"], p["row"], p["column"], p["letter"]) == (
        "parent_missing",
        2,
        "division_code",
        "A",
    )
    # the county's own file in the same folder: checking the folder, as the daemon loads it
    county = Workbook()
    cs = county.active
    assert cs is not None
    cs.append(["区划代码", "区划名称", "A/B角", "姓名", "手机号码"])
    cs.append([433122, "泸溪县", "A", "张县长", 13812340001])
    cs.append([433122, "泸溪县", "值班", "值班员", "0743-4222110"])
    county.save(tmp_path / "county.xlsx")
    assert invoke(str(tmp_path / "county.xlsx"), "--out", str(folder / "433122.csv")).exit_code == 0
    res = invoke(
        str(tmp_path / "pushi.xlsx"), "--out", str(folder / "433122101.csv"), "--check-folder"
    )
    assert res.exit_code == 0, res.output


def test_two_row_header_and_sheet_choice(tmp_path: Path) -> None:
    wb = Workbook()
    first = wb.active
    assert first is not None
    first.title = "旧名单"
    first.append(["区划代码", "姓名", "手机号码"])
    first.append([433122, "旧县长", "13800000000"])  # last year's: --sheet leaves it out
    ws = wb.create_sheet("2025")
    ws.append(["区划代码", "行政区划名称", "A/B角", "姓名", "联系方式", None])
    ws.append([None, None, None, None, "手机号码", "办公电话"])
    for col in "ABCD":
        ws.merge_cells(f"{col}1:{col}2")
    ws.merge_cells("E1:F1")
    ws.append([433122, "泸溪县", "A", "张县长", 13812340001, "0743-4222119"])
    ws.append([433122, "泸溪县", "duty", "值班员", "0743-4222110", None])
    wb.save(tmp_path / "two.xlsx")
    roster = read_roster(tmp_path / "two.xlsx", sheet="2025")
    assert [s.header_row for s in roster.sheets] == [2]
    assert [r[8] for r in roster.rows] == ["+867434222119", ""]  # 办公电话 → alt_phone
    assert [o.row for o in roster.origins] == [3, 4]
    res = invoke(str(tmp_path / "two.xlsx"), "--out", str(tmp_path / "o.csv"), "--sheet", "2025")
    assert res.exit_code == 0, res.output
    assert [r["name"] for r in read_csv(tmp_path / "o.csv")] == ["张县长", "值班员"]
    missing = invoke(str(tmp_path / "two.xlsx"), "--out", str(tmp_path / "o.csv"), "--sheet", "x")
    assert missing.exit_code == 2 and "没有工作表「x」" in missing.output


def test_unreadable_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0 not a zip")
    res = invoke(str(tmp_path / "old.xls"), "--out", str(tmp_path / "o.csv"))
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert ".xlsx" in res.output
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["姓名", "职务", "手机号码"])  # no division codes: cannot be a contacts file
    ws.append(["张三", "县长", 13812340001])
    wb.save(tmp_path / "nocode.xlsx")
    with pytest.raises(ContactsError, match="表头"):
        read_roster(tmp_path / "nocode.xlsx")
    res = invoke(str(tmp_path / "nocode.xlsx"), "--out", str(tmp_path / "o.csv"))
    assert res.exit_code == 2 and "区划代码" in res.output
    assert not (tmp_path / "o.csv").exists()
