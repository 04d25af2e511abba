"""The conformance matrix (DESIGN.md): NAT presets open, full-cone, restricted-cone,
port-restricted-cone and symmetric on both sides (25 cells), (a) with STUN only and (b) with
TURN offered over UDP, TCP and TLS, for our relay and for coturn.

(a) cells expected "direct" connect directly, cells expected "relay" fail;
(b) "direct" cells still go direct (never relay), "relay" cells connect through the relay.
Every NAT is probed first (RFC 5780); a NAT that does not behave as declared is a lab error.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from lab.matrix import MATRIX_NATS, MatrixRunner, default_matrix
from lab.run import CellSpec
from reports.schema import ResultRow

pytestmark = pytest.mark.lab

RELAYS = ["inrepo", "coturn"]
MODES = ["stun", "turn"]
JOBS = 3


@pytest.fixture(scope="module")
def matrix_rows(
    scenario_workdir: Path, record_rows: Any, run_id: str
) -> dict[tuple[str, ...], Any]:
    relays = [r for r in RELAYS if r == "inrepo" or shutil.which("turnserver")]
    cells = default_matrix(relays=relays, modes=MODES, run_id=run_id)
    rows = MatrixRunner(scenario_workdir / "matrix", jobs=JOBS).run(cells)
    record_rows(rows)
    table: dict[tuple[str, ...], Any] = {}
    for cell, row in zip(cells, rows, strict=True):
        key = (cell.relay_impl, cell.scenario, cell.intent.nat_a, cell.intent.nat_b)
        table[key] = (cell, row)
    print()
    for (relay, scenario, a, b), (_, row) in sorted(table.items()):
        mark = "ok " if row.outcome == row.expected else "XX "
        print(
            f"{mark}{relay:7} {scenario:12} {a:>21} x {b:<21} expected {row.expected:<10} "
            f"observed {row.outcome} {row.path or ''}"
        )
    return table


def _explain(cell: CellSpec, row: ResultRow, workdir: Path) -> str:
    """The failure message: the row, then the evidence DESIGN.md asks lab failures to print
    (agent logs, each router's `nft list ruleset` and `conntrack -L`)."""
    artifacts = workdir / "matrix" / cell.name
    text = (
        f"{cell.name}: expected {row.expected}, observed {row.outcome} "
        f"(path {row.path}, NATs observed {row.nat_a_observed} / "
        f"{row.nat_b_observed}); error: {row.error}; artifacts: {artifacts}"
    )
    for name, limit in (
        ("agent-a.log", 3000),
        ("agent-b.log", 3000),
        ("evidence.txt", 6000),
        ("lab-error.txt", 6000),
    ):
        path = artifacts / name
        if path.exists():
            text += f"\n--- {name} (tail) ---\n{path.read_text(errors='replace')[-limit:]}"
    return text


@pytest.mark.parametrize("relay", RELAYS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("nat_b", MATRIX_NATS)
@pytest.mark.parametrize("nat_a", MATRIX_NATS)
def test_matrix_cell_outcome_matches_design(
    matrix_rows: dict[tuple[str, ...], Any],
    scenario_workdir: Path,
    relay: str,
    mode: str,
    nat_a: str,
    nat_b: str,
) -> None:
    if relay == "coturn" and shutil.which("turnserver") is None:
        pytest.skip("coturn's turnserver is not installed")
    cell, row = matrix_rows[(relay, f"matrix-{mode}", nat_a, nat_b)]
    error = str(row.error or "")
    assert not error.startswith("lab-error"), _explain(cell, row, scenario_workdir)
    assert row.outcome == row.expected, _explain(cell, row, scenario_workdir)
    if row.expected == "direct":
        assert row.local_type != "relay" and row.remote_type != "relay", row
    elif mode == "turn":
        assert row.relay_protocol == "udp", _explain(cell, row, scenario_workdir)


def test_matrix_every_nat_was_verified(matrix_rows: dict[tuple[str, ...], Any]) -> None:
    """The probe's classification of each NAT is in the table, for every cell."""
    expected = {
        "open": "EIM/EIF",
        "full-cone": "EIM/EIF",
        "restricted-cone": "EIM/ADF",
        "port-restricted-cone": "EIM/APDF",
        "symmetric": "APDM/APDF",
    }
    for (_, _, nat_a, nat_b), (_, row) in matrix_rows.items():
        assert row.nat_a_observed == expected[nat_a], row
        assert row.nat_b_observed == expected[nat_b], row
