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


# ---- the layers of warnd/ (README "How it is built") --------------------------------------------

WARND = TESTS.parent / "warnd"
LAYERS = ("core", "config", "store", "engine", "edges", "desk", "cli")
#: what the pure core must never import: the layers that do I/O or present, and their libraries
NOT_IN_CORE = (
    "warnd.store",
    "warnd.engine",
    "warnd.edges",
    "warnd.desk",
    "warnd.cli",
    "warnd.migrations",
    "sqlalchemy",
    "sqlmodel",
    "alembic",
    "aiohttp",
    "aiosqlite",
    "asyncpg",
    "apscheduler",
)


def test_the_root_of_warnd_shows_the_layers() -> None:
    """Every module lives in a layer: the root holds only the layers, the package's own files
    and the shipped test rigs."""
    root = sorted(p.name for p in WARND.iterdir() if not p.name.startswith((".", "__pycache__")))
    layers = [p for p in root if (WARND / p).is_dir() and (WARND / p / "__init__.py").exists()]
    assert set(LAYERS) <= set(layers)
    assert set(root) - set(LAYERS) == {
        "__init__.py",
        "py.typed",
        "testing.py",  # warnd.testing: the test rigs (docs/testing.md)
        "migrations",  # the store's schema versions (Alembic; warnd.store.schema)
        "schemas",  # the CAP XSDs (warnd.core.cap.parser)
    }


def test_core_imports_nothing_of_the_outer_layers() -> None:
    """Every import anywhere in a core module (in functions and type-only blocks too) stays in
    the core, the config values or the standard and pure libraries."""
    modules = sorted((WARND / "core").rglob("*.py"))
    assert len(modules) > 15
    found = {}
    for m in modules:
        bad = sorted(n for n in imported(m) if n.startswith(NOT_IN_CORE) or n == "warnd")
        if bad:
            found[str(m.relative_to(WARND))] = bad
    assert found == {}


def test_importing_the_core_loads_no_outer_layer() -> None:
    """The same, as the interpreter sees it: import every core module in a fresh process."""
    import subprocess
    import sys

    names = sorted(
        ".".join(p.relative_to(WARND.parent).with_suffix("").parts).removesuffix(".__init__")
        for p in (WARND / "core").rglob("*.py")
    )
    probe = (
        "import importlib, json, sys\n"
        f"for n in {names!r}: importlib.import_module(n)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({NOT_IN_CORE!r}))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
