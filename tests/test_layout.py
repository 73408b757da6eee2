"""How the code is laid out (README "How it is built", docs/testing.md): what may import what.

- No test module imports another test module: what tests share lives in ``warnd/testing.py``
  (the rigs), ``tests/conftest.py`` (fixtures) or a helper module of ``tests/`` that is not a
  test module (fakes, sample data, the daemon rigs).
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (relative imports keep their dots)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            out.add(base)
            if not node.module:  # ``from . import test_x``
                out.update(base + a.name for a in node.names)
    return out


def is_test_module(name: str) -> bool:
    last = name.lstrip(".").rsplit(".", 1)[-1]
    return last.startswith("test_") or name.startswith("tests.") or name == "tests"


def test_no_test_module_imports_another_test_module() -> None:
    modules = sorted(TESTS.rglob("*.py"))
    assert len([m for m in modules if m.name.startswith("test_")]) > 50
    found = {
        str(m.relative_to(TESTS)): sorted(n for n in imported(m) if is_test_module(n))
        for m in modules
    }
    assert {k: v for k, v in found.items() if v} == {}


def test_the_import_check_sees_each_form(tmp_path: Path) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import test_a\nfrom test_b import x\nfrom tests.c import y\nfrom .test_d import z\n"
        "from . import test_e\ndef f():\n    from test_f import w\nimport factory\n"
    )
    names = {n for n in imported(probe) if is_test_module(n)}
    assert names == {"test_a", "test_b", "tests.c", ".test_d", ".test_e", "test_f"}
