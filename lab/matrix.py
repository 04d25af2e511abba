"""Many cells: the default NAT x NAT matrix and a runner that works through any list of cells,
several at a time, each in its own process (a crash or a kill costs one cell, not the run).

Rows come back in the order of the cells; a cell that could not even report gets a row with
its error, so the table always has one row per trial.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lab.expectations import CellIntent
from lab.run import CellRun, CellSpec, build_row, row_skipped, spec_to_dict
from reports.schema import ResultRow
from reports.vocabulary import AgentImpl, RelayImpl

MATRIX_NATS = ("open", "full-cone", "restricted-cone", "port-restricted-cone", "symmetric")
MATRIX_MODES = {"stun": (), "turn": ("udp", "tcp", "tls")}
CELL_TIMEOUT = 120.0  # seconds: a cell process is killed after this, whatever it does
DEFAULT_JOBS = 3


def default_matrix(
    relays: Iterable[str] = (RelayImpl.INREPO,),
    nats: Sequence[str] = MATRIX_NATS,
    modes: Iterable[str] = ("stun", "turn"),
    trials: int = 1,
    seed: int = 0,
    run_id: str = "",
    agent_pairs: Iterable[tuple[str, str]] = ((AgentImpl.AIOICE, AgentImpl.AIOICE),),
) -> list[CellSpec]:
    grid = itertools.product(relays, list(agent_pairs), modes, nats, nats, range(trials))
    return [
        CellSpec(
            CellIntent(nat_a=a, nat_b=b, turn_transports=MATRIX_MODES[mode]),
            scenario=f"matrix-{mode}",
            relay_impl=relay,
            agent_a=agents[0],
            agent_b=agents[1],
            trial=trial,
            seed=seed,
            run_id=run_id,
        )
        for relay, agents, mode, a, b, trial in grid
    ]


@dataclass
class Progress:
    total: int
    done: int = 0
    running: int = 0
    failed: int = 0  # not as expected
    skipped: int = 0  # an implementation is not installed here
    started: float = 0.0

    def eta_s(self) -> float | None:
        if not self.done:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed / self.done * (self.total - self.done)


ProgressCallback = Callable[[Progress, ResultRow | None], None]


class MatrixRunner:
    """Runs cells with ``jobs`` at a time; ``stop()`` (e.g. on Ctrl-C) lets running cells
    tear down and keeps the rows already completed."""

    def __init__(self, workdir: Path, jobs: int = DEFAULT_JOBS) -> None:
        self.workdir = workdir
        self.jobs = max(1, jobs)
        self._stopping = threading.Event()
        self._procs: set[subprocess.Popen[str]] = set()
        self._lock = threading.Lock()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            for proc in self._procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)  # the cell tears its lab down and exits

    def run(
        self, cells: list[CellSpec], on_progress: ProgressCallback | None = None
    ) -> list[ResultRow]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        progress = Progress(total=len(cells), started=time.monotonic())
        rows: list[ResultRow | None] = [None] * len(cells)

        def one(index: int) -> None:
            if self._stopping.is_set():
                return
            with self._lock:
                progress.running += 1
            if on_progress:
                on_progress(progress, None)
            row = self._run_one(cells[index])
            rows[index] = row
            with self._lock:
                progress.running -= 1
                progress.done += 1
                if row_skipped(row):
                    progress.skipped += 1
                elif row.outcome != row.expected:
                    progress.failed += 1
            if on_progress:
                on_progress(progress, row)

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            list(pool.map(one, range(len(cells))))
        return [r for r in rows if r is not None]

    def _run_one(self, spec: CellSpec) -> ResultRow:
        argv = [
            sys.executable,
            "-m",
            "lab.run",
            "--spec",
            json.dumps(spec_to_dict(spec)),
            "--workdir",
            str(self.workdir),
        ]
        started = time.time()
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        with self._lock:
            self._procs.add(proc)
        try:
            out, err = proc.communicate(timeout=CELL_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                out, err = proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
            err += f"\ncell killed after {CELL_TIMEOUT}s"
        finally:
            with self._lock:
                self._procs.discard(proc)
        for line in reversed(out.strip().splitlines()):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and "row" in data:
                return ResultRow.from_dict(data["row"])
        return failed_row(spec, f"cell process failed ({proc.returncode}): {err[-800:]}", started)


def failed_row(spec: CellSpec, error: str, started: float) -> ResultRow:
    """A row for a cell that never reported: everything unknown is NA."""
    run = CellRun(lab_error=error)
    return build_row(
        spec, run, relay_version=None, started=started, duration_s=time.time() - started
    )
