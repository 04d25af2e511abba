"""Cross-implementation calls: one ICE implementation on each side, judged by DESIGN.md's
theory (the expected outcome does not depend on the implementations).

By default one fast cell per pair: port-restricted cone x symmetric with TURN (relay over
UDP), through our relay. ``NATLAB_CROSS=full`` runs the whole set of issue 12: every pair on
full-cone, port-restricted and symmetric NATs (both orders of the NATs), with TURN, through our
relay and coturn: 5 pairs x 9 NAT pairs x 2 relays.

A pair whose implementation is not installed here is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cellrun import one_line, row_for, selected_specs, suite_dir, tidy

from lab.agents.registry import skip_reason
from lab.certs import lab_certs
from lab.expectations import CellIntent
from lab.matrix import MatrixRunner
from lab.run import CellSpec
from lab.session import lab_unavailable_reason
from reports.schema import ResultRow
from reports.vocabulary import RELAY_IMPLS, AgentImpl, RelayImpl

_UNAVAILABLE = lab_unavailable_reason()
pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or ""),
    pytest.mark.timeout(3600),
]

A = AgentImpl
PAIRS = [
    (A.CHROMIUM, A.FIREFOX),
    (A.CHROMIUM, A.AIOICE),
    (A.FIREFOX, A.PION),
    (A.PION, A.LIBNICE),
    (A.AIOICE, A.LIBNICE),
]
FULL = os.environ.get("NATLAB_CROSS") == "full"
NATS = ("full-cone", "port-restricted-cone", "symmetric")
NAT_PAIRS = (
    [(a, b) for a in NATS for b in NATS] if FULL else [("port-restricted-cone", "symmetric")]
)
RELAYS = RELAY_IMPLS if FULL else (RelayImpl.INREPO,)
# The fast cell offers TURN over UDP only: pion/ice 2.3.1 gives all its relay candidates one
# priority, so with several transports offered it may relay over TCP or TLS where DESIGN.md
# expects UDP (pion's behaviour, marked below in the full set; evidence in the cell directory)
TRANSPORTS = ("udp", "tcp", "tls") if FULL else ("udp",)
JOBS = 2
MARKS: dict[str, pytest.MarkDecorator] = {
    A.CHROMIUM: pytest.mark.browser,
    A.FIREFOX: pytest.mark.browser,
    A.PION: pytest.mark.pion,
    A.LIBNICE: pytest.mark.libnice,
}


def _param(agents: tuple[str, str], nats: tuple[str, str], relay: str) -> Any:
    spec = CellSpec(
        CellIntent(nat_a=nats[0], nat_b=nats[1], turn_transports=TRANSPORTS),
        scenario="cross-agents",
        relay_impl=relay,
        agent_a=agents[0],
        agent_b=agents[1],
    )
    marks = [MARKS[a] for a in dict.fromkeys(agents) if a in MARKS]
    if A.PION in agents and len(TRANSPORTS) > 1:
        marks.append(
            pytest.mark.xfail(
                reason="pion behaviour: no preference among TURN transports (relay-tcp/tls "
                "may be chosen where relay-udp is expected)",
                strict=False,
            )
        )
    missing = skip_reason(agents)
    if missing:
        marks.append(pytest.mark.skip(reason=f"not installed here: {missing}"))
    if relay == RelayImpl.COTURN:
        marks.append(pytest.mark.interop)
        if shutil.which("turnserver") is None:
            marks.append(pytest.mark.skip(reason="coturn not installed"))
    return pytest.param(
        spec, id=f"{agents[0]}-x-{agents[1]}-{nats[0]}-x-{nats[1]}-{relay}", marks=marks
    )


CASES = [_param(p, n, r) for p in PAIRS for n in NAT_PAIRS for r in RELAYS]


@pytest.fixture(scope="module")
def cross_run(
    request: pytest.FixtureRequest, record_rows: Any
) -> Iterator[tuple[Path, list[ResultRow]]]:
    workdir = suite_dir("cross-agents")
    lab_certs(workdir / "certs")
    rows = MatrixRunner(workdir, jobs=JOBS).run(selected_specs(request))
    record_rows(rows)
    print(f"\ncross-implementation cells: {len(rows)} in {workdir}")
    for r in rows:
        print(
            f"  {r.agent_a_impl:8} x {r.agent_b_impl:8} {r.relay_impl:7} {r.nat_a:20} x "
            f"{r.nat_b:20} expected {r.expected!s:9} observed {r.outcome!s:9} "
            f"connect {r.time_to_connect_s!s:6} {one_line(r.error)[:80]}"
        )
    yield workdir, rows
    tidy(workdir)


@pytest.mark.parametrize("spec", CASES)
def test_cross_agents_as_expected(spec: CellSpec, cross_run: tuple[Path, list[ResultRow]]) -> None:
    workdir, rows = cross_run
    row = row_for(rows, spec)
    why = (
        f"{spec.name}: expected {row.expected}, outcome {row.outcome}, path {row.path}; "
        f"error: {row.error}; artifacts: {workdir / spec.name}"
    )
    assert row.outcome == row.expected, why
    assert row.agent_a_version and row.agent_b_version, why
