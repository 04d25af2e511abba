"""Lab figures: building and tearing down a topology, and verifying one NAT (DESIGN: a cell
should cost under 2 s of lab overhead). Medians of several runs."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from lab.matrix import default_matrix
from lab.natcheck import check_nat
from lab.session import LabNetwork, lab_unavailable_reason
from lab.topologies.catalog import TwoNats
from reports.vocabulary import RelayImpl


def _median_seconds(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_lab_benchmarks(repeat: int = 5) -> pd.DataFrame | None:
    reason = lab_unavailable_reason()
    if reason:
        print(f"lab benchmarks skipped: {reason}")
        return None

    def build() -> None:
        with LabNetwork(TwoNats):
            pass

    def natcheck() -> None:
        (row,) = check_nat("port-restricted-cone", ("natprobe",))
        assert row.agrees, row

    build_s = _median_seconds(build, repeat)
    check_s = _median_seconds(natcheck, repeat)
    return pd.DataFrame(
        [
            {
                "figure": "lab: build + tear down two-nats",
                "median_s": round(build_s, 3),
                "vs_2s_budget": build_s / 2.0,
            },
            {
                "figure": "lab: build + relay + natprobe + tear down",
                "median_s": round(check_s, 3),
                "vs_2s_budget": check_s / 2.0,
            },
        ]
    )


MATRIX_BUDGET_S = 300.0  # the Scenarios issue: the default matrix, one relay, under 5 minutes


def run_matrix_benchmark(out: Path) -> pd.DataFrame | None:
    """The full default matrix (25 NAT pairs x STUN-only and TURN), our relay, one trial, timed
    end to end through the natlab command, as a user runs it."""
    reason = lab_unavailable_reason()
    if reason:
        print(f"matrix benchmark skipped: {reason}")
        return None
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "lab", "matrix", "--relay", RelayImpl.INREPO,
         "--out", str(out / "matrix")],
        capture_output=True, text=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    cells = len(default_matrix())
    return pd.DataFrame([{
        "figure": f"matrix: {cells} cells, inrepo, 1 trial, natlab matrix (default jobs)",
        "seconds": round(elapsed, 1),
        "vs_5min_budget": elapsed / MATRIX_BUDGET_S,
        "all_as_expected": result.returncode == 0,
    }])  # fmt: skip
