"""Repository layout rules (DESIGN.md "Style" and "Layout").

- relay/stun and relay/turn are sans-IO: no asyncio, socket or time imports.
- relay/ never imports lab/ (dependencies flow scenarios/ -> lab/ -> relay/).
- No import cycles among the modules of relay/server, nor among those of lab/.
- ruff (lint and format) and mypy --strict on every package (as `make lint`) pass.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from collections.abc import Collection, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RELAY = ROOT / "relay"
LAB = ROOT / "lab"
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


def module_name(path: Path, root: Path) -> str:
    """``lab/nat/netns.py`` -> ``lab.nat.netns``; a package's ``__init__.py`` is the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(
    source: str, module: str, is_package: bool, known: Collection[str], filename: str = "<src>"
) -> set[str]:
    """The modules of ``known`` that an import statement anywhere in ``source`` loads (module
    level, in functions, under ``if TYPE_CHECKING:``), relative imports resolved against
    ``module`` (a package when ``is_package``: its ``__init__``).

    ``import a.b`` -> ``a.b``; ``from a import b`` -> ``a.b`` when that is a module, else ``a``.
    Parent packages that Python initialises on the way are not counted (as pylint does).
    """
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".") if package else []
                up = node.level - 1
                if up > len(base_parts):
                    continue  # beyond the top-level package: not ours
                base = ".".join(base_parts[: len(base_parts) - up])
                target = ".".join(x for x in (base, node.module) if x)
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}" if target else alias.name
                if sub in known:
                    found.add(sub)
                elif target in known:
                    found.add(target)
    found.discard(module)
    return found


def import_graph(package_dir: Path, root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the modules of the same package tree that it imports."""
    files = {module_name(p, root): p for p in python_files(package_dir)}
    return {
        module: imported_modules(
            path.read_text(encoding="utf-8"),
            module,
            path.name == "__init__.py",
            files.keys(),
            str(path),
        )
        for module, path in files.items()
    }


def import_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Each group of modules that import each other, directly or through others (the strongly
    connected components with more than one module, Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def describe_cycles(graph: Mapping[str, set[str]], cycles: list[list[str]]) -> str:
    lines = []
    for group in cycles:
        members = set(group)
        edges = [f"  {a} -> {b}" for a in group for b in sorted(graph[a] & members)]
        lines.append(f"cycle among {', '.join(group)}:\n" + "\n".join(edges))
    return "\n".join(lines)


def test_layout_import_cycles_detector_resolves_import_forms() -> None:
    known = {
        "lab", "lab.nat", "lab.nat.netns", "lab.nat.router", "lab.nat.behavior",
        "lab.nat.firewall", "lab.nat.sibling", "lab.nat.nftables", "lab.topologies",
        "lab.agents.natclass", "lab.session", "lab.cleanup",
    }  # fmt: skip
    source = (
        "import os, lab.nat.netns\n"
        "from lab.nat import router, behavior as b\n"
        "from . import sibling\n"
        "from .. import topologies\n"
        "from ..agents.natclass import Step\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from lab.session import LabNetwork\n"
        "def f():\n"
        "    from .firewall import policy\n"
        "    from .nftables import render_nat\n"  # itself: not an edge
        "x = 'import lab.cleanup'\n"
    )
    assert imported_modules(source, "lab.nat.nftables", False, known) == {
        "lab.nat.netns",
        "lab.nat.router",
        "lab.nat.behavior",
        "lab.nat.sibling",
        "lab.topologies",
        "lab.agents.natclass",
        "lab.session",
        "lab.nat.firewall",
    }
    # in a package's __init__, "." is the package itself; a name that is no module is the package
    assert imported_modules("from . import netns, X\n", "lab.nat", True, known) == {"lab.nat.netns"}
    assert imported_modules("from lab.nat import X\n", "lab.cleanup", False, known) == {"lab.nat"}


def test_layout_import_cycles_detector_flags_synthetic_cycle(tmp_path: Path) -> None:
    # The detector must be able to fail: a imports b at module level, b imports a only for
    # type checking and c imports a inside a function; d imports a but nothing imports d.
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n"
    )
    (pkg / "c.py").write_text("def f():\n    import pkg.a\n")
    (pkg / "d.py").write_text("from . import a\n")
    graph = import_graph(pkg, root=tmp_path)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.d"] == {"pkg.a"}
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert import_cycles({"x": {"y"}, "y": set(), "z": {"x"}}) == []


def test_layout_lab_import_graph_is_real() -> None:
    graph = import_graph(LAB)
    assert "lab.nat.netns" in graph["lab.nat.router"], graph["lab.nat.router"]
    assert "lab.agents.natclass" in graph["lab.agents.natprobe"]


def test_layout_lab_no_import_cycles() -> None:
    graph = import_graph(LAB)
    cycles = import_cycles(graph)
    assert not cycles, "import cycles in lab/:\n" + describe_cycles(graph, cycles)


def test_layout_relay_server_no_import_cycles() -> None:
    graph = import_graph(RELAY / "server")
    assert graph, "no modules found under relay/server"
    cycles = import_cycles(graph)
    assert not cycles, "import cycles in relay/server:\n" + describe_cycles(graph, cycles)


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


STRICT_PACKAGES = ("relay", "lab", "reports", "bench", "scenarios")  # what `make lint` checks


def test_layout_mypy_strict_clean() -> None:
    result = run_tool("mypy", "--strict", *STRICT_PACKAGES)
    assert result.returncode == 0, result.stdout + result.stderr
