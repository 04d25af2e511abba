"""A cell that never reported still gives a schema row: its spec's columns, NA elsewhere."""

from __future__ import annotations

import time

from lab.matrix import failed_row
from lab.run import CellSpec, spec_columns
from reports.schema import COLUMNS, to_frame


def test_failed_row_has_the_spec_columns_and_conforms() -> None:
    spec = CellSpec(nat_a="symmetric", nat_b="full-cone", turn_transports=("tcp",), trial=2)
    started = time.time() - 1.5
    row = failed_row(spec, "boom", started)
    assert {k: row[k] for k in spec_columns(spec, started, None)} == spec_columns(
        spec, started, None
    )
    assert row["outcome"] is None and row["relay_version"] is None
    assert row["error"] == "lab-error: boom"
    assert row["turn_transports"] == "tcp" and row["nat_a"] == "symmetric"
    assert 1.4 < row["duration_s"] < 60
    frame = to_frame([row])
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 1
