"""Agent figures: per ICE implementation, a cell with itself on both sides (two full-cone NATs,
TURN over UDP offered) run a few times: the cell's wall time, ICE time to connect, and the
agent's start-up (from its ``start`` event to joining signaling: a browser's launch is in it).
Issue 12's target: a Chromium x Chromium cell in at most 4 s wall on this 2-core machine.
Peak RSS per agent comes from the agents' ``done`` event detail where they report it."""

from __future__ import annotations

import json
import re
import statistics
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from lab.agents.registry import implementations
from lab.expectations import CellIntent
from lab.run import CellSpec, run_cell
from lab.session import lab_unavailable_reason

CELL_TARGET_S = {"chromium": 4.0}
# the timeline's last event: the driver's own peak RSS, and a browser's peak PSS (all its
# processes); a side's figure is their sum
_MEMORY = re.compile(r"(?:peak_rss_mib|browser_peak_pss_mib)=([0-9.]+)")


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


_BROWSER_STARTUP = re.compile(r"browser_startup_s=([0-9.]+)")


def _startup_s(timeline: list[list[Any]]) -> list[float]:
    """Each side's start-up: a browser's own (until its page loaded, from its last event),
    else the seconds from the agent's start event to its joined event."""
    found = []
    for side in ("a", "b"):
        last = [d for _, s, e, d in timeline if s == side and e in ("done", "failed") and d]
        browser = [float(m.group(1)) for d in last if (m := _BROWSER_STARTUP.search(d))]
        if browser:
            found += browser
            continue
        start = next((t for t, s, e, _ in timeline if s == side and e == "start"), None)
        joined = next((t for t, s, e, _ in timeline if s == side and e == "joined"), None)
        if start is not None and joined is not None:
            found.append(joined - start)
    return found


def run_agent_benchmarks(repeat: int = 3) -> pd.DataFrame | None:
    reason = lab_unavailable_reason()
    if reason:
        print(f"agent benchmarks skipped: {reason}")
        return None
    rows = []
    for impl in implementations():
        missing = impl.missing()
        if missing:
            print(f"agent benchmark: {impl.name} skipped: {missing}")
            continue
        walls: list[float] = []
        connects: list[float] = []
        startups: list[float] = []
        rss: list[float] = []
        connected = 0
        with tempfile.TemporaryDirectory(prefix="natlab-bench-agents-") as tmp:
            for trial in range(repeat):
                spec = CellSpec(
                    CellIntent(nat_a="full-cone", nat_b="full-cone", turn_transports=("udp",)),
                    scenario="bench-agents",
                    agent_a=impl.name,
                    agent_b=impl.name,
                    trial=trial,
                    verify_nats=False,  # the NAT probe is a lab figure of its own
                )
                row = run_cell(spec, Path(tmp)).row
                connected += row.outcome == row.expected
                if row.duration_s is not None:
                    walls.append(row.duration_s)
                if row.time_to_connect_s is not None:
                    connects.append(row.time_to_connect_s)
                timeline = json.loads(row.timeline or "[]")
                startups += _startup_s(timeline)
                rss += [
                    sum(float(v) for v in _MEMORY.findall(d))
                    for *_, event, d in timeline
                    if event in ("done", "failed") and d and _MEMORY.search(d)
                ]
        wall = _median(walls)
        target = CELL_TARGET_S.get(impl.name)
        rows.append(
            {
                "figure": f"{impl.name} x {impl.name} cell (full-cone, TURN udp offered)",
                "version": impl.version(),
                "cells_as_expected": f"{connected}/{repeat}",
                "cell_wall_s": wall,
                "ice_connect_s": _median(connects),
                "agent_startup_s": _median(startups),
                "peak_rss_mib": max(rss) if rss else None,
                "vs_target": round(wall / target, 2) if wall is not None and target else None,
            }
        )
    return pd.DataFrame(rows)
