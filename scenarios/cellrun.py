"""Helpers shared by the scenario suites that run their cells once per module
(fallback ladder, throughput, faults): where cell directories go, which cells the selected
tests need, and how a row is found again."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from lab.matrix import failed_row
from lab.run import CellSpec
from reports.schema import ROW_KEY, ResultRow


def suite_dir(suite: str) -> Path:
    """Cell directories live outside pytest's basetemp: pytest keeps only the last three
    basetemps per user, so other suites run meanwhile (as root, too) would delete the artifacts
    of a failed cell before anyone reads them. ``NATLAB_SCENARIO_DIR`` moves them."""
    base = Path(os.environ.get("NATLAB_SCENARIO_DIR", "/tmp/natlab-scenarios"))
    path = base / f"{suite}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    path.mkdir(parents=True)
    return path


def tidy(path: Path) -> None:
    """Drop the work directory when no cell kept artifacts (only the lab CA is left)."""
    if all(p.name == "certs" for p in path.iterdir()):
        shutil.rmtree(path, ignore_errors=True)


def coturn_missing(spec: CellSpec) -> bool:
    return spec.relay_impl == "coturn" and shutil.which("turnserver") is None


def selected_params(request: pytest.FixtureRequest, name: str) -> list[tuple[str, Any]]:
    """(test id, value of parameter ``name``) of this module's selected, unskipped tests, each
    value once: deselected cells never run. Ids repeat across test functions; values do not."""
    found: list[tuple[str, Any]] = []
    for item in request.session.items:
        if getattr(item, "module", None) is not request.module:
            continue
        callspec = getattr(item, "callspec", None)
        if callspec is None or item.get_closest_marker("skip"):
            continue
        value = callspec.params.get(name)
        if value is not None and all(value != seen for _, seen in found):
            found.append((callspec.id, value))
    return found


def selected_specs(request: pytest.FixtureRequest) -> list[CellSpec]:
    """The ``spec`` parameters of the selected tests, each once."""
    return [spec for _, spec in selected_params(request, "spec") if not coturn_missing(spec)]


def row_for(rows: list[ResultRow], spec: CellSpec) -> ResultRow:
    """The row of ``spec``: the one whose spec columns are the spec's."""
    want = failed_row(spec, "", 0.0)  # the spec's columns, built the one way rows are
    keys = [k for k in ROW_KEY if k != "run_id"]
    found = [r for r in rows if all(getattr(r, k) == getattr(want, k) for k in keys)]
    assert len(found) == 1, f"{spec.name}: {len(found)} rows match"
    return found[0]


def one_line(text: str | None) -> str:
    return " ".join((text or "").split())
