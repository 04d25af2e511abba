"""Repository layout rules (DESIGN.md "Style" and "Layout").

- relay/stun and relay/turn are sans-IO: no asyncio, socket or time imports.
- relay/ never imports lab/ (dependencies flow scenarios/ -> lab/ -> relay/).
- ruff (lint and format) and mypy --strict on relay/ pass.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RELAY = ROOT / "relay"
SANS_IO_PACKAGES = (RELAY / "stun", RELAY / "turn")
SANS_IO_FORBIDDEN = frozenset({"asyncio", "socket", "time"})
TOOL_TIMEOUT_S = 240


def forbidden_imports(source: str, forbidden: frozenset[str], filename: str = "<src>") -> list[str]:
    """Return "line N: name" for every absolute import of a forbidden top-level module.

    Covers `import x`, `import x.sub`, `from x import y`, `from x.sub import y`, imports nested
    in functions or `if TYPE_CHECKING:` blocks, and `__import__("x")` /
    `importlib.import_module("x")` with a literal name. Relative imports (`from . import time`)
    name package-local modules, not the stdlib, and are allowed.
    """
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                names = [node.module]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            first = node.args[0]
            if (
                called in ("__import__", "import_module")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                names = [first.value]
        for name in names:
            if name.split(".")[0] in forbidden:
                found.append(f"line {getattr(node, 'lineno', 0)}: {name}")
    return found


def python_files(*dirs: Path) -> list[Path]:
    return sorted(p for d in dirs for p in d.rglob("*.py") if "__pycache__" not in p.parts)


def test_layout_detector_flags_synthetic_sources() -> None:
    # The detector must be able to fail: every form below is a violation.
    bad = (
        "import asyncio\n"
        "import socket as s\n"
        "import os, time\n"
        "import asyncio.subprocess\n"
        "from time import monotonic\n"
        "from asyncio.events import AbstractEventLoop\n"
        "def f():\n"
        "    import socket\n"
        "    return __import__('time')\n"
        "import importlib\n"
        "importlib.import_module('asyncio')\n"
    )
    hits = forbidden_imports(bad, SANS_IO_FORBIDDEN)
    assert [h.split(": ")[1] for h in hits].count("time") == 3
    assert len(hits) == 9, hits
    good = (
        "from __future__ import annotations\n"
        "import os\nimport timeit\nimport socketserver_not_really\n"
        "from . import time\nfrom .socket import x\nimport datetime\n"
        "x = 'import socket'\n"
    )
    assert forbidden_imports(good, SANS_IO_FORBIDDEN) == []


def test_layout_sans_io_packages_exist() -> None:
    for package in SANS_IO_PACKAGES:
        assert (package / "__init__.py").is_file(), package


def test_layout_sans_io_no_forbidden_imports() -> None:
    files = python_files(*SANS_IO_PACKAGES)
    assert files, "no Python files found under relay/stun and relay/turn"
    violations = []
    for path in files:
        for hit in forbidden_imports(
            path.read_text(encoding="utf-8"), SANS_IO_FORBIDDEN, str(path)
        ):
            violations.append(f"{path.relative_to(ROOT)} {hit}")
    assert not violations, "sans-IO rule broken (DESIGN.md Style):\n" + "\n".join(violations)


def test_layout_relay_never_imports_lab() -> None:
    violations = []
    for path in python_files(RELAY):
        for hit in forbidden_imports(
            path.read_text(encoding="utf-8"), frozenset({"lab"}), str(path)
        ):
            violations.append(f"{path.relative_to(ROOT)} {hit}")
    assert not violations, "relay/ must not import lab/:\n" + "\n".join(violations)


def run_tool(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed in {sys.executable} (pip install -e '.[test]')")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )


def test_layout_ruff_check_clean() -> None:
    result = run_tool("ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_layout_ruff_format_clean() -> None:
    result = run_tool("ruff", "format", "--no-cache", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_layout_mypy_strict_relay_clean() -> None:
    result = run_tool("mypy", "--strict", "relay")
    assert result.returncode == 0, result.stdout + result.stderr
