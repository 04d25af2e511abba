"""Throughput over the nominated pair through capped access links.

Each router's WAN link gets a token bucket (``bandwidth_cap_mbps`` -> tbf on both routers'
WAN interfaces, egress), so a stream from A to B crosses exactly one cap: A's uplink. The
controlling agent sends 1000-byte datagrams over the nominated ICE pair at
``throughput_mbps`` for 3 s; the controlled agent counts the payload bytes it receives and
divides by the sender's sending time (``lab.agents.aioice``: goodput, not wire rate). That
figure is the row's ``throughput_mbps``.

Rates chosen:

- The cap is 8 Mbit/s. The sender is one asyncio loop in Python (aioice ``Connection.send``
  per datagram). Measured here without a cap (two CPUs shared by three cells and by other
  lab runs): 60 Mbit/s offered arrived in full on every path (7500 datagrams/s); 100 Mbit/s
  offered gave 97-99 on a quiet machine and 73 direct / 32-35 relayed on a busy one (the
  relay is a process on the same CPUs). 8 Mbit/s (1000 datagrams/s) is far below that
  ceiling, so there is no need for a lower cap. The uncapped rows (100 Mbit/s offered) are
  printed for information only.
- We send AT the cap: the payload rate equals the cap, so the link is saturated (headers push
  the wire rate about 4 % over it: 1000 B payload + 8 UDP + 20 IP + 14 Ethernet, + 4 on a
  TURN channel) and what arrives is what the capped link delivers, about 96 % of the cap. The
  requirement is at least 80 % of the cap. Sending below the cap (say 0.95 x) would also pass
  but would not show the link carrying its rate; sending far above it measures tbf's drops.
- One more cell sends at twice the cap on the direct path: its goodput must stay at the cap,
  which shows that the cap is really applied (else every capped check passes trivially).

Cells run once per session, three at a time, from a module fixture; ``pytest -s`` prints the
table.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cellrun import one_line, row_for, selected_specs, suite_dir, tidy

from lab.certs import lab_certs
from lab.expectations import CellIntent
from lab.matrix import MatrixRunner
from lab.run import CellSpec
from lab.session import lab_unavailable_reason
from reports.schema import ResultRow

_UNAVAILABLE = lab_unavailable_reason()
pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or ""),
    pytest.mark.timeout(600),
]

JOBS = 3
CAP_MBPS = 8.0
MIN_SHARE = 0.8  # of the cap
OVER_CAP_TOLERANCE = 1.05  # goodput sent at 2 x cap may exceed the cap by this factor at most
UNCAPPED_RATE_MBPS = 100.0  # information only: above the agent's ceiling


def _cell(scenario: str, path: str, relay: str, rate: float, cap: float | None) -> CellSpec:
    return CellSpec(
        CellIntent(
            nat_a="full-cone",
            nat_b="full-cone",
            ice_policy="all" if path == "direct" else "relay",
        ),
        scenario=scenario,
        relay_impl=relay,
        throughput_mbps=rate,
        bandwidth_cap_mbps=cap,
    )


def _param(spec: CellSpec, id_: str) -> Any:
    marks = []
    if spec.relay_impl == "coturn":
        marks = [
            pytest.mark.interop,
            pytest.mark.skipif(shutil.which("turnserver") is None, reason="coturn not installed"),
        ]
    return pytest.param(spec, id=id_, marks=marks)


# the direct path does not touch the relay: one relay is enough for it
PATHS = [("direct", "inrepo"), ("relay", "inrepo"), ("relay", "coturn")]
# the cell's name has no rate or cap in it, so the scenario keeps the cells' directories apart
CAPPED = [
    _param(_cell("throughput-capped", path, relay, CAP_MBPS, CAP_MBPS), f"{path}-{relay}")
    for path, relay in PATHS
]
OVER_CAP = [
    _param(
        _cell("throughput-over-cap", "direct", "inrepo", 2 * CAP_MBPS, CAP_MBPS), "direct-inrepo"
    )
]
UNCAPPED = [
    _param(_cell("throughput-uncapped", path, relay, UNCAPPED_RATE_MBPS, None), f"{path}-{relay}")
    for path, relay in PATHS
]


# ---------------------------------------------------------------------- running the cells


def _print_table(rows: list[ResultRow], title: str) -> None:
    print(f"\n{title}")
    print(f"{'cell':22} {'relay':7} {'expected':9} {'outcome':9} {'Mbit/s':>7} {'dur_s':>6}  error")
    for r in rows:
        mbps = r.throughput_mbps
        shown = f"{mbps:7.2f}" if isinstance(mbps, int | float) else f"{'NA':>7}"
        cell = f"{(r.scenario or '').removeprefix('throughput-')} {r.ice_policy}"
        print(
            f"{cell:22} {r.relay_impl:7} {r.expected!s:9} {r.outcome!s:9} {shown} "
            f"{r.duration_s:6.1f}  {one_line(r.error)[:90]}"
        )


@pytest.fixture(scope="module")
def throughput_run(
    request: pytest.FixtureRequest, record_rows: Any
) -> Iterator[tuple[Path, list[ResultRow]]]:
    workdir = suite_dir("throughput")
    lab_certs(workdir / "certs")
    rows = MatrixRunner(workdir, jobs=JOBS).run(selected_specs(request))
    record_rows(rows)  # into the session's result table and report
    _print_table(rows, f"throughput (cap {CAP_MBPS:g} Mbit/s): {len(rows)} cells in {workdir}")
    yield workdir, rows
    tidy(workdir)


def _connected_row(spec: CellSpec, run: tuple[Path, list[ResultRow]]) -> tuple[ResultRow, str]:
    workdir, rows = run
    row = row_for(rows, spec)
    why = (
        f"{spec.name}: expected {row.expected}, outcome {row.outcome}, "
        f"throughput {row.throughput_mbps} Mbit/s; error: {row.error}; "
        f"artifacts: {workdir / spec.name}"
    )
    assert row.outcome == row.expected and not row.error, why
    assert isinstance(row.throughput_mbps, int | float), why
    return row, why


# ---------------------------------------------------------------------- tests


@pytest.mark.parametrize("spec", CAPPED)
def test_throughput_reaches_the_cap(
    spec: CellSpec, throughput_run: tuple[Path, list[ResultRow]]
) -> None:
    row, why = _connected_row(spec, throughput_run)
    assert row.throughput_mbps is not None, why
    assert row.throughput_mbps >= MIN_SHARE * CAP_MBPS, why
    assert row.throughput_mbps <= OVER_CAP_TOLERANCE * CAP_MBPS, why


@pytest.mark.parametrize("spec", OVER_CAP)
def test_throughput_cap_holds_when_sending_above_it(
    spec: CellSpec, throughput_run: tuple[Path, list[ResultRow]]
) -> None:
    row, why = _connected_row(spec, throughput_run)
    assert row.throughput_mbps is not None, why
    assert row.throughput_mbps <= OVER_CAP_TOLERANCE * CAP_MBPS, f"cap not applied: {why}"
    assert row.throughput_mbps >= MIN_SHARE * CAP_MBPS, why


@pytest.mark.parametrize("spec", UNCAPPED)
def test_throughput_uncapped_for_information(
    spec: CellSpec, throughput_run: tuple[Path, list[ResultRow]]
) -> None:
    """Not a requirement: the figure is in the printed table; only the call must connect."""
    _connected_row(spec, throughput_run)
