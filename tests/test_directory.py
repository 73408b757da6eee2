"""warnd.core.directory and warnd.core.phone: loading, every problem kind, lookups, the phone
fast path."""

from __future__ import annotations

from pathlib import Path

import phonenumbers
import pytest
from directory_gen import county_code, generate
from factory import HEADER
from hypothesis import given, settings
from hypothesis import strategies as st
from input_cases import BASE, DIVISION_PROBLEMS, NEXT, ROW_PROBLEMS, row

from warnd.core import division, phone
from warnd.core.directory import Contact, Directory, Division, Problem, load
from warnd.core.errors import ContactsError


def write(folder: Path, name: str, body: str, *, header: str = HEADER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(header + body, encoding="utf-8")
    return path


def load_one(tmp_path: Path, extra: str) -> tuple[Directory, list[Problem], str]:
    path = write(tmp_path, "a.csv", BASE + extra)
    directory, problems = load(path)
    return directory, problems, str(path)


def test_base_is_clean(tmp_path: Path) -> None:
    directory, problems, _ = load_one(tmp_path, "")
    assert problems == []
    assert directory.counts() == {"county": 1, "township": 1, "village": 1, "contacts": 6}
    assert len(directory) == 6
    duty = directory.contact("c-duty")
    assert duty is not None
    assert duty.phone == "+867434222110"
    assert duty.level == "county"
    v = directory.contact("c-v-a1")
    assert v is not None
    assert (v.phone, v.alt_phone, v.channels) == ("+8613800000004", "+8613900000004", ())
    assert v.source.endswith("a.csv:6")


@pytest.mark.parametrize(("row", "kind", "named", "kept"), ROW_PROBLEMS)
def test_row_problem(tmp_path: Path, row: str, kind: str, named: str, kept: bool) -> None:
    directory, problems, path = load_one(tmp_path, row)
    assert [(p.kind, p.source, p.line) for p in problems] == [(kind, path, NEXT)]
    text = str(problems[0])
    assert text.startswith(f"{path}:{NEXT}: ")
    assert "\n" not in text
    assert named in problems[0].message
    assert len(directory) == (7 if kept else 6)


def test_problem_without_line_renders_file_only() -> None:
    assert str(Problem("a.csv", None, "坏了\n两行")) == "a.csv: 坏了 两行"


def test_kept_rows_carry_the_fix(tmp_path: Path) -> None:
    directory, _, _ = load_one(
        tmp_path,
        row(alt="12345")
        + row(name="蒲市镇", rank="B", phone="13800000010", cid="c-y")
        + row("433122101000", "浦市镇", "Township", "b", "13800000011", cid="c-z"),
    )
    x, y = directory.contact("c-x"), directory.contact("c-y")
    z = directory.contact("c-z")
    assert z is not None and (z.division_code, z.level, z.rank) == ("433122101", "township", "B")
    assert x is not None and x.alt_phone is None  # the bad alt_phone is dropped, not guessed
    assert y is not None and y.division_name == "浦市镇"  # the first name wins


@pytest.mark.parametrize(("row", "kind", "line"), DIVISION_PROBLEMS)
def test_division_problem(tmp_path: Path, row: str, kind: str, line: int) -> None:
    directory, problems, path = load_one(tmp_path, row)
    assert [(p.kind, p.source, p.line) for p in problems] == [(kind, path, line)]
    assert len(directory) == 7


def test_county_without_duty_and_problems_in_file_order(tmp_path: Path) -> None:
    write(tmp_path, "a.csv", BASE)
    b = write(
        tmp_path,
        "b.csv",
        "c-k-a1,433124,花垣县,county,A,指挥长,周一,13800000021,\n"
        "c-k-t1,433124100,某镇,township,B,专干,周二,13800000022,\n"
        "c-k-t2,433124100,某镇,township,A,镇长,周三,1380000002,\n",
    )
    _, problems = load(tmp_path)
    found = [(p.kind, p.source, p.line) for p in problems]
    assert found == [
        ("no_duty", str(b), 2),
        ("no_a", str(b), 3),
        ("bad_phone", str(b), 4),
    ]


def test_multiline_cells_keep_line_numbers(tmp_path: Path) -> None:
    directory, problems, path = load_one(
        tmp_path,
        'c-x,433122101,浦市镇,township,A,"镇长\n兼书记",孙八,13800000009,\n'
        "c-y,433122101,浦市镇,township,A,r,周九,123,\n",
    )
    assert [(p.kind, p.line) for p in problems] == [("bad_phone", NEXT + 2)]
    x = directory.contact("c-x")
    assert x is not None and x.source == f"{path}:{NEXT}" and x.role == "镇长\n兼书记"


def test_bom_header_and_channels(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    header = HEADER.rstrip("\n") + ",channels\n"
    body = "".join(line + ",voice; SMS\n" for line in BASE.splitlines())
    path.write_bytes(("\ufeff" + header + body).encode("utf-8"))
    directory, problems = load(path)
    assert problems == []
    duty = directory.contact("c-duty")
    assert duty is not None and duty.channels == ("voice", "sms")


def test_blank_lines_and_header_case(tmp_path: Path) -> None:
    header = "\n" + HEADER.upper().replace("CONTACT_ID", " Contact_ID ")
    path = write(tmp_path, "a.csv", BASE + "\n,,,,,,,,\n", header=header)
    directory, problems = load(path)
    assert problems == []
    assert len(directory) == 6


def test_folder_reads_csv_files_in_sorted_order(tmp_path: Path) -> None:
    lines = BASE.splitlines(keepends=True)
    write(tmp_path, "b.csv", "".join(lines[4:]))  # the village
    write(tmp_path, "a.csv", "".join(lines[:4]))  # county and township
    (tmp_path / "notes.txt").write_text("not a directory file", encoding="utf-8")
    directory, problems = load(tmp_path)
    assert problems == []
    assert [c.contact_id for c in directory.contacts()] == [
        "c-duty",
        "c-c-a1",
        "c-t-a1",
        "c-t-b1",
        "c-v-a1",
        "c-v-b1",
    ]
    only_b, problems_b = load(tmp_path / "b.csv")
    assert len(only_b) == 2
    assert {p.kind for p in problems_b} == {"parent_missing"}


def test_unreadable_directories_raise_one_line(tmp_path: Path) -> None:
    with pytest.raises(ContactsError, match="不存在"):
        load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ContactsError, match=r"no \*\.csv"):
        load(tmp_path / "empty")
    bad_header = write(tmp_path, "h.csv", BASE, header="contact_id,division_code,name\n")
    with pytest.raises(ContactsError) as err:
        load(bad_header)
    assert str(err.value).startswith(f"{bad_header}:1: ")
    assert "division_name, level, rank, role, phone, alt_phone" in str(err.value)
    binary = tmp_path / "gbk.csv"
    binary.write_bytes((HEADER + row(name="PS", person="SB") + row(name="浦市镇")).encode("gbk"))
    with pytest.raises(ContactsError) as err:
        load(binary)
    assert f"{binary}:3: " in str(err.value) and "UTF-8" in str(err.value)
    blank = tmp_path / "blank.csv"
    blank.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ContactsError, match="contact_id") as err:
        load(blank)
    assert "\n" not in str(err.value)


def _lookup_dir(tmp_path: Path) -> Directory:
    body = BASE + (
        "c-v2-a1,433122101202,铁山村,village,A,r,孙八,13800000009,\n"
        "c-v2-a2,433122101202,铁山村,village,A,r,周九,13800000010,13800000004\n"
        "c-t2-a1,433122100,武溪镇,township,A,r,吴十,13800000011,\n"
        "c-v3-a1,433122100201,白沙村,village,A,r,郑一,13800000012,\n"
    )
    directory, problems = load(write(tmp_path, "a.csv", body))
    assert problems == []
    return directory


def _codes(divisions: tuple[Division, ...]) -> list[str]:
    return [d.code for d in divisions]


def test_township_warning_overlaps_county_itself_and_its_villages(tmp_path: Path) -> None:
    d = _lookup_dir(tmp_path)
    for area in (["433122101"], ["433122101000"], [" 433122101 ", "433122101"]):
        assert _codes(d.overlapping(area, "county")) == ["433122"]
        assert _codes(d.overlapping(area, "township")) == ["433122101"]
        assert _codes(d.overlapping(area, "village")) == ["433122101201", "433122101202"]
    assert _codes(d.overlapping(["433122101201"], "township")) == ["433122101"]
    assert _codes(d.overlapping(["433100", "433122"], "village")) == [
        "433122100201",
        "433122101201",
        "433122101202",
    ]
    assert d.overlapping(["433122101"], "province") == ()


def test_parent_county_persons_and_phone_lookups(tmp_path: Path) -> None:
    d = _lookup_dir(tmp_path)
    township = d.parent("433122101202")
    assert township is not None and (township.code, township.name) == ("433122101", "浦市镇")
    county = d.parent("433122101")
    assert county is not None and county.code == "433122"
    assert d.parent("433122") is None  # prefecture is not in a directory
    assert d.parent("433122103201") is None  # township 433122103 has no rows
    county_of = d.county_of("433122100201000")
    assert county_of is None  # not a code at all
    county_of = d.county_of("433122100201")
    assert county_of is not None and county_of.name == "泸溪县"
    assert [c.contact_id for c in d.persons("433122101202", "A")] == ["c-v2-a1", "c-v2-a2"]
    assert [c.contact_id for c in d.persons("433122000000", "duty")] == ["c-duty"]
    assert d.persons("433122101202", "B") == ()
    both = [c.contact_id for c in d.contacts_by_phone("+8613800000004")]
    assert both == ["c-v-a1", "c-v2-a2"]  # phone of one, alt_phone of the other
    assert [c.contact_id for c in d.contacts_by_phone("138 0000 0011")] == ["c-t2-a1"]
    assert d.contacts_by_phone("+8613999999999") == ()
    division = d.division("433122101000")
    assert division is not None and division.level == "township"
    assert d.unmatched(["433122101", "4331X2", "433199", "433100", "520000", "4331X2"]) == (
        "4331X2",
        "433199",
        "520000",
    )


@pytest.fixture(scope="module")
def province(tmp_path_factory: pytest.TempPathFactory) -> Directory:
    """30 counties over 14 prefectures: 10,002 rows."""
    folder = tmp_path_factory.mktemp("gen")
    gen = generate(folder, 3, 10, 33, 10, seed=7)
    assert gen.rows >= 10_000
    directory, problems = load(folder)
    assert problems == []
    assert len(directory) == gen.rows
    assert directory.counts() == {
        "county": gen.counties,
        "township": gen.townships,
        "village": gen.villages,
        "contacts": gen.rows,
    }
    return directory


def test_generated_10k_rows_load_clean(province: Directory) -> None:
    assert len(province) >= 10_000


def test_generator_is_deterministic_and_bom_safe(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", 2, 2, 2, 3, seed=1)
    b = generate(tmp_path / "b", 2, 2, 2, 3, seed=1, bom=True)
    name = f"{county_code(1)}.csv"
    assert (a.path / name).read_bytes() == (b.path / name).read_bytes()[3:]
    assert load(b.path)[1] == []


def test_prefecture_code_covers_every_code_in_it(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    gen = generate(folder, 30, 2, 2, 2, seed=3)
    d, problems = load(folder)
    assert problems == [] and gen.counties == 30
    inside = [x.code for x in d.divisions() if x.code.startswith("4301")]
    assert len(inside) > 3
    found = [
        x.code for lv in ("county", "township", "village") for x in d.overlapping(["430100"], lv)
    ]
    assert sorted(found) == sorted(inside)
    assert len(d.overlapping(["430000"], "village")) == gen.villages


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_overlapping_agrees_with_division_overlaps(
    province: Directory, data: st.DataObject
) -> None:
    codes = [x.code for x in province.divisions()]
    picked = data.draw(st.lists(st.sampled_from(codes), max_size=4))
    cut = data.draw(st.lists(st.sampled_from([2, 4, 6, 9, 12]), min_size=len(picked)))
    area = [c[:n] for c, n in zip(picked, cut, strict=False)]  # a code, or one containing it
    area += data.draw(st.lists(st.from_regex(r"43\d{4}|43\d{7}|43\d{10}", fullmatch=True)))
    norm = [a for a in map(division.normalise, area) if a is not None]
    for level in ("county", "township", "village"):
        got = province.overlapping(area, level)
        want = [
            x.code
            for x in province.divisions()
            if x.level == level and any(division.overlaps(a, x.code) for a in norm)
        ]
        assert [x.code for x in got] == want


def _reference(raw: str) -> str | None:
    """What phonenumbers alone says."""
    try:
        number = phonenumbers.parse(raw, "CN")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


_mobile_shaped = st.builds(
    lambda prefix, digits, seps: (
        prefix + "".join(d + s for d, s in zip(digits, seps, strict=False))
    ),
    st.sampled_from(["", "+86", "+86 ", "+86-"]),
    st.from_regex(r"1\d{10}", fullmatch=True),
    st.lists(st.sampled_from(["", "", "", " ", "-"]), min_size=11, max_size=11),
)


@settings(max_examples=1500, deadline=None)
@given(raw=_mobile_shaped)
def test_phone_fast_path_agrees_with_phonenumbers(raw: str) -> None:
    assert phone.normalise(raw) == _reference(raw)


@settings(max_examples=500, deadline=None)
@given(raw=st.text(alphabet="0123456789+- ()", max_size=16))
def test_phone_never_accepts_what_phonenumbers_rejects(raw: str) -> None:
    ours = phone.normalise(raw)
    if ours is not None:
        assert ours == _reference(raw)


def test_phone_every_mobile_prefix() -> None:
    for prefix in range(1000, 2000):
        for tail in ("000000", "123456", "999999"):
            raw = f"{prefix}{tail}0"
            assert phone.normalise(raw) == _reference(raw), raw


def test_phone_forms() -> None:
    assert phone.normalise("+86 138-1234-5678") == "+8613812345678"
    assert phone.normalise("0743-4222110") == "+867434222110"
    assert phone.normalise("(0743)4222110") == "+867434222110"
    assert phone.normalise("1381234") is None
    assert phone.normalise("12345678901") is None
    assert phone.normalise("0743-4222110 ext. 5") is None
    assert phone.normalise("") is None
    assert phone.is_mobile("+8613812345678")
    assert not phone.is_mobile("+867434222110")


def test_directory_rejects_duplicate_ids_when_built_in_code() -> None:
    c = Contact("c1", "433122", "泸溪县", "county", "A", "", "张三", "+8613800000001", None, "x:1")
    assert len(Directory([c])) == 1
    with pytest.raises(ValueError, match="c1"):
        Directory([c, c])
