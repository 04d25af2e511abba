"""The fallback ladder of seed 000 behind its firewall profiles, for both relays.

Seed 000 ("Netzwerk-Voraussetzungen") and DESIGN.md: direct UDP > relay over UDP > relay over
TCP/TLS 443. With port-restricted-cone NATs on both sides and TURN offered over UDP (443), TCP
(3478) and TLS (443), each firewall profile allows a highest rung, and a cell must reach exactly
that rung, never a lower one:

- ``recommended``: peer UDP is opened dynamically (hole punching) -> direct;
- ``minimal``: no peer UDP, TCP/UDP 443 to TURN only -> relay over UDP 443;
- ``udp-blocked``: only TCP 80/443 out -> relay over TLS 443.

The profile sits in front of peer A only, then in front of both peers. Plus the seed's browser
relay-only test (ICE policy relay, only TLS 443 reachable -> relay-tls) and relay-only with
every transport offered and open firewalls -> relay-udp.

All cells run once per session, three at a time (``MatrixRunner``), from a module fixture;
the tests assert on their rows. ``pytest -s`` prints the table.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cellrun import one_line, row_for, selected_specs, suite_dir, tidy

from lab.certs import lab_certs
from lab.expectations import CellIntent, expected_outcome
from lab.matrix import MatrixRunner
from lab.run import CellSpec
from lab.session import lab_unavailable_reason
from reports.schema import ResultRow
from reports.vocabulary import LADDER

_UNAVAILABLE = lab_unavailable_reason()
pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or ""),
    # the module fixture runs every cell (about 16 cells, 3 at a time) inside the first test
    pytest.mark.timeout(900),
]

JOBS = 3
NAT = "port-restricted-cone"
ALL_TURN = ("udp", "tcp", "tls")
# the highest rung each seed profile allows (DESIGN.md "Firewall policies from the seeds")
PROFILE_RUNG = {"recommended": "direct", "minimal": "relay-udp", "udp-blocked": "relay-tls"}


def _relay_param(spec: CellSpec, want: str, id_: str) -> Any:
    marks = []
    if spec.relay_impl == "coturn":
        marks = [
            pytest.mark.interop,
            pytest.mark.skipif(shutil.which("turnserver") is None, reason="coturn not installed"),
        ]
    return pytest.param(spec, want, id=id_, marks=marks)


LADDER_CASES = [
    _relay_param(
        CellSpec(
            CellIntent(
                nat_a=NAT,
                nat_b=NAT,
                firewall_a=profile,
                firewall_b=profile if placement == "both" else "open",
                turn_transports=ALL_TURN,
            ),
            scenario="ladder",
            relay_impl=relay,
        ),
        PROFILE_RUNG[profile],
        f"{profile}-{placement}-{relay}",
    )
    for relay in ("inrepo", "coturn")
    for profile in PROFILE_RUNG
    for placement in ("a-only", "both")
]

RELAY_ONLY_CASES = [
    # seed 003's browser test, behind the strictest profile: relay-only, TLS 443 only
    case
    for relay in ("inrepo", "coturn")
    for case in (
        _relay_param(
            CellSpec(
                CellIntent(
                    firewall_a="udp-blocked",
                    firewall_b="udp-blocked",
                    ice_policy="relay",
                    turn_transports=("tls",),
                ),
                scenario="relay-only",
                relay_impl=relay,
            ),
            "relay-tls",
            f"tls443-udp-blocked-{relay}",
        ),
        _relay_param(
            CellSpec(
                CellIntent(ice_policy="relay", turn_transports=ALL_TURN),
                scenario="relay-only",
                relay_impl=relay,
            ),
            "relay-udp",
            f"all-transports-open-{relay}",
        ),
    )
]


# ---------------------------------------------------------------------- running the cells


def _run_cells(specs: list[CellSpec], path: Path) -> list[ResultRow]:
    lab_certs(path / "certs")  # once, before the cells start together
    return MatrixRunner(path, jobs=JOBS).run(specs)


def _print_table(rows: list[ResultRow], title: str) -> None:
    print(f"\n{title}")
    head = f"{'relay':7} {'cell':46} {'expected':9} {'outcome':9} {'proto':5} {'dur_s':>6}  error"
    print(head)
    for r in rows:
        cell = f"{r.scenario} {r.firewall_a}/{r.firewall_b} {r.ice_policy}"
        cell += f" {r.turn_transports}"
        error = one_line(r.error)[:90]
        print(
            f"{r.relay_impl:7} {cell:46} {r.expected!s:9} {r.outcome!s:9} "
            f"{r.relay_protocol!s:5} {r.duration_s:6.1f}  {error}"
        )


@pytest.fixture(scope="module")
def ladder_run(
    request: pytest.FixtureRequest, record_rows: Any
) -> Iterator[tuple[Path, list[ResultRow]]]:
    workdir = suite_dir("ladder")
    specs = selected_specs(request)
    rows = _run_cells(specs, workdir)
    record_rows(rows)  # into the session's result table and report
    _print_table(rows, f"fallback ladder: {len(rows)} cells in {workdir}")
    yield workdir, rows
    tidy(workdir)


def _explain(spec: CellSpec, row: ResultRow, workdir: Path) -> str:
    return (
        f"{spec.name}: expected {row.expected}, outcome {row.outcome} "
        f"(path {row.path}, relay protocol {row.relay_protocol}); "
        f"error: {row.error}; artifacts: {workdir / spec.name}"
    )


def _assert_rung(spec: CellSpec, want: str, run: tuple[Path, list[ResultRow]]) -> None:
    workdir, rows = run
    # the prediction is the seed's ladder, not whatever the lab did
    assert expected_outcome(spec.intent) == want, f"{spec.name}: expectation drifted from seed"
    row = row_for(rows, spec)
    assert row.expected == want
    outcome = row.outcome
    why = _explain(spec, row, workdir)
    assert outcome is not None, f"no outcome: {why}"
    assert LADDER.get(outcome, -1) >= LADDER[want], f"lower rung than the policy allows: {why}"
    assert outcome == want, f"higher rung than the policy allows: {why}"
    assert not row.error, why
    if outcome.startswith("relay-"):
        assert row.relay_protocol == outcome.removeprefix("relay-"), why
        assert "relay" in (row.path or ""), why
    else:
        assert row.local_type != "relay" and row.remote_type != "relay", why


# ---------------------------------------------------------------------- tests


@pytest.mark.parametrize(("spec", "want"), LADDER_CASES)
def test_ladder_highest_rung_the_policy_allows(
    spec: CellSpec, want: str, ladder_run: tuple[Path, list[ResultRow]]
) -> None:
    _assert_rung(spec, want, ladder_run)


@pytest.mark.parametrize(("spec", "want"), RELAY_ONLY_CASES)
def test_relay_only_policy(
    spec: CellSpec, want: str, ladder_run: tuple[Path, list[ResultRow]]
) -> None:
    _assert_rung(spec, want, ladder_run)
