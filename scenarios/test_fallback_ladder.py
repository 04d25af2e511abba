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

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.certs import lab_certs
from lab.expectations import expected_outcome
from lab.matrix import MatrixRunner
from lab.run import CellSpec
from lab.session import lab_unavailable_reason
from reports.schema import LADDER

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
_ROW_KEYS = ("scenario", "topology", "nat_a", "nat_b", "firewall_a", "firewall_b")
_ROW_KEYS += ("relay_impl", "ice_policy", "trial")


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
            scenario="ladder",
            nat_a=NAT,
            nat_b=NAT,
            firewall_a=profile,
            firewall_b=profile if placement == "both" else "open",
            relay_impl=relay,
            turn_transports=ALL_TURN,
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
                scenario="relay-only",
                firewall_a="udp-blocked",
                firewall_b="udp-blocked",
                relay_impl=relay,
                ice_policy="relay",
                turn_transports=("tls",),
            ),
            "relay-tls",
            f"tls443-udp-blocked-{relay}",
        ),
        _relay_param(
            CellSpec(
                scenario="relay-only",
                relay_impl=relay,
                ice_policy="relay",
                turn_transports=ALL_TURN,
            ),
            "relay-udp",
            f"all-transports-open-{relay}",
        ),
    )
]


# ---------------------------------------------------------------------- running the cells


def _workdir(suite: str) -> Path:
    """Cell directories live outside pytest's basetemp: pytest keeps only the last three
    basetemps per user, so other suites run meanwhile (as root, too) would delete the artifacts
    of a failed cell before anyone reads them. ``NATLAB_SCENARIO_DIR`` moves them."""
    base = Path(os.environ.get("NATLAB_SCENARIO_DIR", "/tmp/natlab-scenarios"))
    path = base / f"{suite}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    path.mkdir(parents=True)
    return path


def _tidy(workdir: Path) -> None:
    """Drop the work directory when no cell kept artifacts (only the lab CA is left)."""
    if all(p.name == "certs" for p in workdir.iterdir()):
        shutil.rmtree(workdir, ignore_errors=True)


def _selected_specs(request: pytest.FixtureRequest) -> list[CellSpec]:
    """The cells of this module's selected (collected, not skipped) tests, each once."""
    specs: list[CellSpec] = []
    for item in request.session.items:
        if item.module is not request.module or item.get_closest_marker("skip"):
            continue
        callspec = getattr(item, "callspec", None)
        spec = callspec.params.get("spec") if callspec else None
        if spec is None or spec in specs:
            continue
        if spec.relay_impl == "coturn" and shutil.which("turnserver") is None:
            continue
        specs.append(spec)
    return specs


def _run_cells(specs: list[CellSpec], workdir: Path) -> list[dict[str, Any]]:
    # Made here, once: cells started together on a fresh work directory would each create the
    # lab CA at the same time and overwrite each other's files (lab.certs has no lock).
    lab_certs(workdir / "certs")
    return MatrixRunner(workdir, jobs=JOBS).run(specs)


def row_for(rows: list[dict[str, Any]], spec: CellSpec) -> dict[str, Any]:
    transports = "+".join(spec.turn_transports) or "none"
    found = [
        r
        for r in rows
        if all(r.get(k) == getattr(spec, k) for k in _ROW_KEYS)
        and r.get("turn_transports") == transports
    ]
    assert len(found) == 1, f"{spec.name}: {len(found)} rows match"
    return found[0]


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _print_table(rows: list[dict[str, Any]], title: str) -> None:
    print(f"\n{title}")
    head = f"{'relay':7} {'cell':46} {'expected':9} {'outcome':9} {'proto':5} {'dur_s':>6}  error"
    print(head)
    for r in rows:
        cell = f"{r['scenario']} {r['firewall_a']}/{r['firewall_b']} {r['ice_policy']}"
        cell += f" {r['turn_transports']}"
        error = _one_line(r.get("error"))[:90]
        print(
            f"{r['relay_impl']:7} {cell:46} {r['expected']!s:9} {r['outcome']!s:9} "
            f"{r.get('relay_protocol')!s:5} {r['duration_s']:6.1f}  {error}"
        )


@pytest.fixture(scope="module")
def ladder_run(
    request: pytest.FixtureRequest, record_rows: Any
) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    workdir = _workdir("ladder")
    specs = _selected_specs(request)
    rows = _run_cells(specs, workdir)
    record_rows(rows)  # into the session's result table and report
    _print_table(rows, f"fallback ladder: {len(rows)} cells in {workdir}")
    yield workdir, rows
    _tidy(workdir)


def _explain(spec: CellSpec, row: dict[str, Any], workdir: Path) -> str:
    return (
        f"{spec.name}: expected {row['expected']}, outcome {row['outcome']} "
        f"(path {row.get('path')}, relay protocol {row.get('relay_protocol')}); "
        f"error: {row.get('error')}; artifacts: {workdir / spec.name}"
    )


def _assert_rung(spec: CellSpec, want: str, run: tuple[Path, list[dict[str, Any]]]) -> None:
    workdir, rows = run
    # the prediction is the seed's ladder, not whatever the lab did
    assert expected_outcome(spec.intent) == want, f"{spec.name}: expectation drifted from seed"
    row = row_for(rows, spec)
    assert row["expected"] == want
    outcome = row["outcome"]
    why = _explain(spec, row, workdir)
    assert LADDER.get(outcome, -1) >= LADDER[want], f"lower rung than the policy allows: {why}"
    assert outcome == want, f"higher rung than the policy allows: {why}"
    assert not row.get("error"), why
    if outcome.startswith("relay-"):
        assert row["relay_protocol"] == outcome.removeprefix("relay-"), why
        assert "relay" in (row.get("path") or ""), why
    else:
        assert row["local_type"] != "relay" and row["remote_type"] != "relay", why


# ---------------------------------------------------------------------- tests


@pytest.mark.parametrize(("spec", "want"), LADDER_CASES)
def test_ladder_highest_rung_the_policy_allows(
    spec: CellSpec, want: str, ladder_run: tuple[Path, list[dict[str, Any]]]
) -> None:
    _assert_rung(spec, want, ladder_run)


@pytest.mark.parametrize(("spec", "want"), RELAY_ONLY_CASES)
def test_relay_only_policy(
    spec: CellSpec, want: str, ladder_run: tuple[Path, list[dict[str, Any]]]
) -> None:
    _assert_rung(spec, want, ladder_run)
