"""Shared pieces of the scenario suites: the lab gate, a run id, and where results go.

Every suite runs its cells once per session through ``lab.matrix.MatrixRunner`` (cells in
parallel, each in its own process) and then asserts cell by cell on the rows. Rows of every
suite are collected and written as one result table under ``reports/out/scenarios/`` at the
end of the session, with the HTML report when the reports package can render it.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.session import lab_unavailable_reason
from reports.schema import ResultRow

REPO = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("NATLAB_OUT", REPO / "reports" / "out" / "scenarios"))
_ROWS: list[ResultRow] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = lab_unavailable_reason()
    if reason is None:
        return
    print(f"\nscenarios skipped: {reason}")
    for item in items:
        if "scenarios" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=f"lab unavailable: {reason}"))


@pytest.fixture(scope="session")
def run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(2)


@pytest.fixture(scope="session")
def scenario_workdir(run_id: str) -> Path:
    path = OUT / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def record_rows() -> Iterator[Any]:
    """Suites hand their rows here; the session writes them as one table at the end."""

    def record(rows: list[ResultRow]) -> None:
        _ROWS.extend(rows)

    yield record


@pytest.fixture(scope="session", autouse=True)
def _write_results(run_id: str) -> Iterator[None]:
    yield
    if not _ROWS:
        return
    from reports.schema import to_frame, write_results

    (OUT / run_id).mkdir(parents=True, exist_ok=True)
    frame = to_frame(_ROWS)
    parquet, csv = write_results(frame, str(OUT / run_id / "results"))
    print(f"\nscenario results: {parquet} {csv}")
    try:
        from reports.html import write_html
    except ImportError:
        return
    html = OUT / run_id / "report.html"
    write_html(frame, html, title=f"natlab scenarios {run_id}")
    print(f"scenario report: {html}")
