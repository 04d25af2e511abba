"""A cell that never reported still gives a schema row: its spec's columns, NA elsewhere."""

from __future__ import annotations

import time

from lab.expectations import CellIntent
from lab.matrix import failed_row
from lab.run import CellRun, CellSpec, build_row
from reports.schema import COLUMNS, to_frame

# the columns a cell's spec and start fix before anything runs
SPEC_COLUMNS = (
    "run_id", "scenario", "topology", "nat_a", "nat_b", "firewall_a", "firewall_b",
    "relay_impl", "ice_policy", "turn_transports", "trial", "seed", "expected", "started_at",
    "nat_a_declared", "nat_b_declared",
)  # fmt: skip


def test_failed_row_has_the_spec_columns_and_conforms() -> None:
    spec = CellSpec(
        CellIntent(nat_a="symmetric", nat_b="full-cone", turn_transports=("tcp",)), trial=2
    )
    started = time.time() - 1.5
    row = failed_row(spec, "boom", started).as_dict()
    from_spec = build_row(spec, CellRun(), relay_version=None, started=started, duration_s=0)
    assert {k: row[k] for k in SPEC_COLUMNS} == {k: from_spec.as_dict()[k] for k in SPEC_COLUMNS}
    assert row["outcome"] is None and row["relay_version"] is None
    assert row["error"] == "lab-error: boom"
    assert row["turn_transports"] == "tcp" and row["nat_a"] == "symmetric"
    assert row["nat_a_declared"] == "APDM/APDF" and row["nat_b_declared"] == "EIM/EIF"
    assert 1.4 < row["duration_s"] < 60
    frame = to_frame([failed_row(spec, "boom", started)])
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 1
