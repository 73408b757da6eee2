"""``warnd inspect CAP_FILE... [--json]`` (contracts §4) over the repository's own samples.

Expected values come from ``tests/data/cap/expected.json`` (written by hand from the XML), not
from warnd. The external corpus has its own suite: tests/corpus/test_inspect_corpus.py.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from inspect_rig import CONTRACT_KEYS, instant, json_lines, run
from samples import entry, facts, materialise, name, samples

VALID = samples("valid")
INVALID = samples("invalid")


@pytest.fixture(scope="module")
def valid_results() -> list[dict[str, Any]]:
    """One ``inspect --json`` run over every valid sample, as a user would type it."""
    result = run(*(str(p) for p in VALID), "--json")
    assert result.exit_code == 0, result.stdout[-2000:] + result.stderr
    lines = json_lines(result)
    assert [line["file"] for line in lines] == [str(p) for p in VALID]
    return lines


def test_every_valid_sample_is_ok_with_the_contract_keys(
    valid_results: list[dict[str, Any]],
) -> None:
    for item in valid_results:
        assert item["ok"] is True, item
        missing = [k for k in CONTRACT_KEYS if k not in item]
        assert not missing, (item["file"], missing)
        assert "error" not in item


@pytest.mark.parametrize("index", range(len(VALID)), ids=[p.name for p in VALID])
def test_valid_sample_agrees_with_expected_json(
    valid_results: list[dict[str, Any]], index: int
) -> None:
    item = valid_results[index]
    want = facts(VALID[index])
    assert item["identifier"] == want["identifier"]
    assert item["sender"] == want["sender"]
    assert item["msg_type"] == want["msgType"]
    assert item["status"] == want["status"]
    assert item["severity"] == want["max_severity"]
    assert item["areas"] == want["areas"]
    assert item["references"] == (want["references"] or [])  # sent verbatim
    assert instant(item["sent"]) == instant(want["sent"])
    assert item["sent"] == want["sent"]  # the offset as written (+08:00)
    onsets = [instant(t) for t in want["onset"]]
    expiries = [instant(t) for t in want["expires"]]
    assert (instant(item["onset"]) if item["onset"] else None) == min(onsets, default=None)
    assert (instant(item["expires"]) if item["expires"] else None) == max(expiries, default=None)
    assert item["geocodes"] == want["divisions"]  # normalised, deduplicated, in order
    assert item["unmatched_geocodes"] == want["unmatched"]
    assert item["drill"] is (want["status"] in ("Exercise", "Test"))


@pytest.mark.parametrize("path", INVALID, ids=name)
def test_invalid_sample_is_refused_with_a_one_line_error(path: Path, tmp_path: Path) -> None:
    file = str(materialise(path, tmp_path))
    result = run(file, "--json")
    assert result.exit_code == 1
    (item,) = json_lines(result)
    assert (item["file"], item["ok"]) == (file, False)
    error = item["error"]
    assert isinstance(error, str) and error.strip()
    assert "\n" not in error and "Traceback" not in error
    assert error.startswith(file)  # says which file
    assert entry(path)["reason"] in error
    assert "identifier" not in item


def test_all_invalid_samples_in_one_run(tmp_path: Path) -> None:
    paths = [str(materialise(p, tmp_path)) for p in INVALID]
    result = run(*paths, "--json")
    assert result.exit_code == 1
    assert [(r["file"], r["ok"]) for r in json_lines(result)] == [(p, False) for p in paths]


def test_a_mix_gives_one_line_per_file_in_order(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.xml")
    files = [
        str(VALID[0]),
        str(INVALID[0]),
        missing,
        str(VALID[-1]),
        str(INVALID[-1]),
        str(VALID[0]),  # the same file twice: two lines
    ]
    result = run(*files, "--json")
    assert result.exit_code == 1
    lines = json_lines(result)
    assert [(r["file"], r["ok"]) for r in lines] == [
        (files[0], True),
        (files[1], False),
        (files[2], False),
        (files[3], True),
        (files[4], False),
        (files[5], True),
    ]
    assert lines[0] == lines[5]


def test_nonexistent_file_is_not_ok_with_a_reason(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.xml")
    result = run(missing, "--json")
    assert result.exit_code != 0
    (item,) = json_lines(result)
    assert item["ok"] is False
    assert missing in item["error"]
    assert "no such file" in item["error"].lower()


def test_a_huge_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.xml"
    big.write_bytes(b"<alert>" + b" " * (6 * 1024 * 1024))
    (item,) = json_lines(run(str(big), "--json"))
    assert item["ok"] is False and "larger than" in item["error"]


def test_an_endless_file_is_refused() -> None:
    """``inspect /dev/zero`` once read until memory ran out; it must stop at the size limit.

    In a child process with its address space capped, so that a regression fails fast
    (MemoryError or timeout) instead of taking the machine down.
    """

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))

    code = "import sys; from warnd.cli import main; sys.exit(main())"
    child = subprocess.run(
        [sys.executable, "-c", code, "inspect", "/dev/zero", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=cap_memory,
    )
    assert child.returncode == 1, child.stderr[-500:]
    (item,) = (json.loads(line) for line in child.stdout.splitlines())
    assert item["ok"] is False and "larger than" in item["error"]


def test_table_output_has_chinese_headers(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.xml")
    result = run(str(VALID[0]), missing)
    assert result.exit_code == 1
    out = result.stdout
    assert not out.lstrip().startswith("{")
    for header in ("CAP 消息解析结果", "文件", "结果", "类型", "状态", "级别", "区划"):
        assert header in out, header
    assert "通过" in out and "拒绝" in out


def test_table_output_of_valid_files_exits_0() -> None:
    result = run(*(str(p) for p in VALID[:3]))
    assert result.exit_code == 0
    assert result.stdout.count("通过") == 3


def test_table_output_gives_each_error_on_one_line(tmp_path: Path) -> None:
    """Without --json every refused file's reason is one whole line, as the README says."""
    bad = [materialise(p, tmp_path) for p in INVALID]
    result = run(str(VALID[0]), *(str(p) for p in bad))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    for path in INVALID:
        file = str(materialise(path, tmp_path))
        mine = [line for line in lines if file + ":" in line or line.endswith(file)]
        (line,) = [line for line in mine if entry(path)["reason"] in line]
        assert line.startswith("拒绝 ") and file in line
