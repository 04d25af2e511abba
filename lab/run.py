"""One scenario cell: build the network, start the relay and signaling, verify the NATs, run
two ICE agents, collect one result row (reports.schema), tear everything down.

Every step is bounded in time. A cell whose NATs do not behave as declared is a lab error
(row ``error`` starts with "lab-error"), never a traversal result. On a failed or unexpected
cell the artifacts (agent logs, relay log, each router's ruleset and conntrack table, a pcap
of the relay's interfaces) are kept under the cell's directory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import secrets
import select
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lab.agents.agent_result import AgentResult
from lab.agents.contract import AgentInputs, HostPort, TurnServer, read_events
from lab.agents.launch import hosts_file, with_hosts
from lab.agents.registry import implementation, skip_reason
from lab.agents.relays import RelaySpec, start_relay
from lab.certs import lab_certs
from lab.expectations import CellIntent, combine_sides, expected_outcome
from lab.nat.behavior import declared, declared_short, short_form
from lab.session import LabError, LabNetwork
from lab.topologies.addressing import LAB_NAMES, RELAY_IPS, RELAY_NAME, SIGNALING_IP
from lab.topologies.base import SideSpec
from lab.topologies.catalog import topology
from reports.schema import ResultRow
from reports.vocabulary import AGENT_IMPLS, RELAY_IMPLS, SKIPPED, AgentImpl, Outcome, RelayImpl

TURN_SECRET = "natlab-rest-secret"
AGENT_TIMEOUT = 25.0
FAULTS = ("kill-relay", "kill-signaling", "kill-agent-b")
SIDES = ("a", "b")
# The weaker relay transport of the two sides names the cell's relay_protocol.
_RELAY_PROTOCOL_RANK = {"udp": 3, "tcp": 2, "tls": 1}
# flags only one implementation takes (beyond the contract's)
_EXTRA_FLAGS: dict[str, tuple[str, ...]] = {AgentImpl.AIOICE: ("--nomination-wait", "1.0")}
TIMELINE_MAX_EVENTS = 400  # per cell, in the row; the cell's events files keep them all


@dataclass(frozen=True)
class CellSpec:
    """One trial of one cell: what to build (``intent``, which also fixes the expected
    outcome) and how to run it."""

    intent: CellIntent = field(default_factory=CellIntent)
    scenario: str = "adhoc"
    relay_impl: str = RelayImpl.INREPO
    agent_a: str = AgentImpl.AIOICE  # the ICE implementation on each side (lab.agents)
    agent_b: str = AgentImpl.AIOICE
    trial: int = 0
    seed: int = 0
    run_id: str = ""
    relay_config_file: str | None = None  # a turnserver.conf used verbatim (denied-peer cells)
    allowed_peer_ips: tuple[str, ...] = ()
    throughput_mbps: float | None = None  # agent stream rate
    bandwidth_cap_mbps: float | None = None  # tbf on both routers' WAN links
    verify_nats: bool = True
    fault: str | None = None  # FAULTS: kill one component mid-run
    fault_after_s: float = 2.0
    agent_timeout: float = AGENT_TIMEOUT
    keep_artifacts: bool = False  # keep the cell's directory even when it went as expected

    def __post_init__(self) -> None:
        intent = self.intent
        topology(intent.topology)
        SideSpec(intent.nat_a, intent.firewall_a)
        SideSpec(intent.nat_b, intent.firewall_b)
        if intent.ice_policy not in ("all", "relay"):
            raise ValueError(f"ice policy {intent.ice_policy!r}; valid: all, relay")
        bad = set(intent.turn_transports) - {"udp", "tcp", "tls"}
        if bad:
            raise ValueError(f"unknown TURN transports {sorted(bad)}; valid: udp, tcp, tls")
        if self.relay_impl not in RELAY_IMPLS:
            raise ValueError(f"unknown relay {self.relay_impl!r}; valid: {', '.join(RELAY_IMPLS)}")
        for agent in (self.agent_a, self.agent_b):
            if agent not in AGENT_IMPLS:
                raise ValueError(
                    f"unknown agent implementation {agent!r}; valid: {', '.join(AGENT_IMPLS)}"
                )
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; valid: {', '.join(FAULTS)}")

    @property
    def expected(self) -> str:
        return expected_outcome(self.intent)

    @property
    def name(self) -> str:
        i = self.intent
        parts = [self.scenario, i.topology, i.nat_a, i.nat_b]
        if (i.firewall_a, i.firewall_b) != ("open", "open"):
            parts += [f"fw-{i.firewall_a}", f"fw-{i.firewall_b}"]
        parts += [self.relay_impl, i.ice_policy, "+".join(i.turn_transports) or "stun"]
        if (self.agent_a, self.agent_b) != (AgentImpl.AIOICE, AgentImpl.AIOICE):
            parts.append(f"{self.agent_a}-x-{self.agent_b}")
        if self.fault:
            parts.append(f"{self.fault}@{self.fault_after_s:g}s")
        if self.throughput_mbps:
            parts.append(f"tp{self.throughput_mbps:g}")
        if self.bandwidth_cap_mbps:
            parts.append(f"cap{self.bandwidth_cap_mbps:g}")
        if self.relay_config_file:
            parts.append("conf-" + hashlib.sha1(self.relay_config_file.encode()).hexdigest()[:6])
        if self.allowed_peer_ips:
            parts.append("allowed")
        return "_".join([*parts, f"t{self.trial}"])


@dataclass
class CellRun:
    """What a running cell has learned so far; ``build_row`` turns it into the row."""

    observed: dict[str, str | None] = field(default_factory=dict)  # side -> "EIM/APDF"
    agents: dict[str, AgentResult] = field(default_factory=dict)  # side -> its result
    timeline: str | None = None  # both sides' events, as the row's timeline column
    lab_error: str | None = None
    skipped: str | None = None  # why the cell could not run here


@dataclass(frozen=True)
class CellResult:
    row: ResultRow
    agents: dict[str, AgentResult] = field(default_factory=dict)
    artifacts: Path | None = None

    @property
    def as_expected(self) -> bool:
        return row_as_expected(self.row)


def row_skipped(row: ResultRow) -> bool:
    """The cell did not run here (an implementation is not installed): neither pass nor fail."""
    return (row.error or "").startswith(f"{SKIPPED}:")


def row_as_expected(row: ResultRow) -> bool:
    """The outcome matches, and nothing went wrong beyond what a failing cell implies."""
    if row.outcome != row.expected:
        return False
    error = row.error or ""
    return not error or (row.expected == Outcome.FAIL and not error.startswith("lab-error"))


def relay_version(impl: str) -> str | None:
    if impl == RelayImpl.INREPO:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"natlab-relay {version('natlab')}"
        except PackageNotFoundError:
            return None
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "coturn"], capture_output=True, text=True
    )
    return f"coturn {out.stdout.strip()}" if out.returncode == 0 and out.stdout else None


def build_row(
    spec: CellSpec,
    run: CellRun,
    *,
    relay_version: str | None,
    started: float,
    duration_s: float,
) -> ResultRow:
    """The cell's one result row (reports.schema.ResultRow), from its spec, the NAT
    observations, the agents' results, the error and the timings. The only place a row's
    columns are filled in."""
    intent = spec.intent
    a, b = run.agents.get("a"), run.agents.get("b")
    errors = [f"{side}: {r.error}" for side, r in run.agents.items() if r.error]
    if run.skipped:
        errors = [f"{SKIPPED}: {run.skipped}"]
    if spec.fault and run.lab_error is None:
        errors.insert(0, f"fault injected: {spec.fault} at {spec.fault_after_s}s")
    protocols = [r.relay_protocol for r in (a, b) if r is not None and r.relay_protocol]
    checks = [r.checks_sent for r in (a, b) if r is not None and r.checks_sent is not None]
    outcome: str | None = None
    if run.lab_error is None and run.skipped is None:
        views = [None if r is None or r.error else r.outcome for r in (a, b)]
        outcome = combine_sides(*views)
    path = f"{a.local_type}->{a.remote_type}" if a and a.local_type and a.remote_type else None
    return ResultRow(
        run_id=spec.run_id or None,
        scenario=spec.scenario,
        topology=intent.topology,
        nat_a=intent.nat_a,
        nat_b=intent.nat_b,
        firewall_a=intent.firewall_a,
        firewall_b=intent.firewall_b,
        relay_impl=spec.relay_impl,
        relay_version=relay_version,
        ice_policy=intent.ice_policy,
        turn_transports="+".join(intent.turn_transports) or "none",
        trial=spec.trial,
        seed=spec.seed,
        expected=spec.expected,
        outcome=outcome,
        path=path,
        local_type=a.local_type if a else None,
        remote_type=a.remote_type if a else None,
        relay_protocol=(
            min(protocols, key=_RELAY_PROTOCOL_RANK.__getitem__) if protocols else None
        ),
        time_to_connect_s=a.time_to_connect_s if a else None,
        checks_sent=sum(checks) if checks else None,
        rtt_ms=a.rtt_ms if a else None,
        throughput_mbps=(a.throughput_mbps if a else None) or (b.throughput_mbps if b else None),
        nat_a_observed=run.observed.get("a"),
        nat_b_observed=run.observed.get("b"),
        error=f"lab-error: {run.lab_error}" if run.lab_error else "; ".join(errors) or None,
        started_at=dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
        duration_s=round(duration_s, 3),
        nat_a_declared=declared_short(intent.nat_a),
        nat_b_declared=declared_short(intent.nat_b),
        agent_a_impl=spec.agent_a,
        agent_a_version=a.impl_version if a else None,
        agent_b_impl=spec.agent_b,
        agent_b_version=b.impl_version if b else None,
        timeline=run.timeline,
    )


def timeline_json(cell_dir: Path, limit: int = TIMELINE_MAX_EVENTS) -> str | None:
    """Both sides' events, merged in time order, as the row's ``timeline`` column: JSON
    ``[[seconds since the first event, side, event, detail], ...]``, at most ``limit`` (the
    first ones, and the last of each side, which say how a call ended)."""
    events = sorted(
        (e for side in SIDES for e in read_events(cell_dir / f"events-{side}.jsonl")),
        key=lambda e: e.t,
    )
    if not events:
        return None
    if len(events) > limit:
        last = {e.peer: e for e in events}
        kept = events[: limit - len(last)]
        events = sorted(kept + [e for e in last.values() if e not in kept], key=lambda e: e.t)
    t0 = events[0].t
    return json.dumps(
        [[round(e.t - t0, 4), e.peer, e.event, e.detail] for e in events], separators=(",", ":")
    )


def run_cell(spec: CellSpec, workdir: Path) -> CellResult:
    """Run one trial of one cell; never raises for a traversal failure or a lab error."""
    started = time.time()
    cell_dir = workdir / spec.name
    shutil.rmtree(cell_dir, ignore_errors=True)
    cell_dir.mkdir(parents=True)
    run = CellRun(skipped=skip_reason((spec.agent_a, spec.agent_b)))
    keep = False
    try:
        if run.skipped is None:
            keep = _run(spec, workdir, cell_dir, run)
    except LabError as err:
        run.lab_error = str(err)
        (cell_dir / "lab-error.txt").write_text(f"{err}\n\n{err.evidence}")
        keep = True
    row = build_row(
        spec,
        run,
        relay_version=relay_version(spec.relay_impl),
        started=started,
        duration_s=time.time() - started,
    )
    (cell_dir / "row.json").write_text(json.dumps(row.as_dict(), indent=2, default=str))
    result = CellResult(row, dict(run.agents))
    keep = keep or spec.keep_artifacts or not (result.as_expected or row_skipped(row))
    if not keep:
        shutil.rmtree(cell_dir, ignore_errors=True)
        return result
    return replace(result, artifacts=cell_dir)


def _run(spec: CellSpec, workdir: Path, cell_dir: Path, run: CellRun) -> bool:
    """Build, start and drive the cell, filling ``run``; True when its artifacts are kept."""
    intent = spec.intent
    certs = lab_certs(workdir / "certs")
    topo = topology(intent.topology)
    side_a = SideSpec(intent.nat_a, intent.firewall_a)
    side_b = SideSpec(intent.nat_b, intent.firewall_b)
    with LabNetwork(topo, defer_firewalls=True, a=side_a, b=side_b) as lab:
        pcap = _start_capture(lab, cell_dir)
        relay_spec = RelaySpec(
            impl=spec.relay_impl,
            secret=TURN_SECRET,
            cert=str(certs.cert),
            pkey=str(certs.key),
            config_file=spec.relay_config_file,
            allowed_peer_ips=spec.allowed_peer_ips,
        )
        try:
            relay = start_relay(lab, relay_spec, cell_dir)
        except RuntimeError as err:
            raise LabError(str(err)) from err
        signaling = _start_signaling(lab, certs.cert, certs.key, cell_dir)
        if spec.verify_nats:
            _verify_nats(lab, intent, run)
        lab.reset_nat_state()
        lab.apply_firewalls()
        if spec.bandwidth_cap_mbps:
            _cap_bandwidth(lab, spec.bandwidth_cap_mbps)
        run.agents = _run_agents(lab, spec, certs.ca, cell_dir, relay, signaling)
        run.timeline = timeline_json(cell_dir)
        provisional = build_row(spec, run, relay_version=None, started=0.0, duration_s=0.0)
        failed = not row_as_expected(provisional)
        if failed or spec.keep_artifacts:
            (cell_dir / "evidence.txt").write_text(lab.evidence())
            (cell_dir / "relay.log").write_text(relay.log())
        _stop_capture(pcap)
        return failed


# ---------------------------------------------------------------------- pieces


def _verify_nats(lab: LabNetwork, intent: CellIntent, run: CellRun) -> None:
    from lab.natcheck import probe_with_natprobe

    peers = lab.topo.roles.peers if lab.topo else {}
    mismatches = []
    sides = (
        [("a", intent.nat_a)]
        if intent.topology == "same-lan"
        else [("a", intent.nat_a), ("b", intent.nat_b)]
    )
    # both probes at once: they use different NATs (or one NAT, for same-lan)
    with ThreadPoolExecutor(max_workers=2) as pool:
        probes = {
            side: pool.submit(probe_with_natprobe, lab, peers.get(side, f"p{side}"))
            for side, _ in sides
        }
    if intent.topology == "same-lan":
        probes["b"] = probes["a"]
        sides.append(("b", intent.nat_b))
    for side, nat in sides:
        mapping, filtering, error = probes[side].result()
        run.observed[side] = None if error else short_form(mapping, filtering)
        want = declared(nat)
        if error or (mapping, filtering) != want:
            mismatches.append(
                f"NAT {side} ({nat}) declared {want[0]}/{want[1]}, observed {mapping}/{filtering}"
                + (f" ({error})" if error else "")
            )
    if mismatches:
        raise LabError("; ".join(mismatches), lab.evidence())


def _start_signaling(
    lab: LabNetwork, cert: Path, key: Path, cell_dir: Path
) -> subprocess.Popen[Any]:
    log = (cell_dir / "signaling.log").open("wb")
    argv = [
        sys.executable,
        "-m",
        "lab.agents.signaling",
        "--listen",
        f"{SIGNALING_IP}:443",
        "--cert",
        str(cert),
        "--key",
        str(key),
    ]
    proc = lab.popen("sig", argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    deadline = time.monotonic() + 10
    buffered = b""
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stderr], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 4096)
            buffered += chunk
            log.write(chunk)
            if b"ready" in buffered:
                # keep draining its log in the background so the pipe never fills
                threading.Thread(target=_drain, args=(proc.stderr, log), daemon=True).start()
                return proc
    raise LabError(f"signaling server did not start: {buffered.decode(errors='replace')[-1000:]}")


def _drain(stream: Any, sink: Any) -> None:
    with contextlib.suppress(OSError, ValueError):
        for chunk in iter(lambda: os.read(stream.fileno(), 4096), b""):
            sink.write(chunk)
            sink.flush()


def _agent_inputs(spec: CellSpec, side: str, ca: Path, room: str, cell_dir: Path) -> AgentInputs:
    """The contract's inputs for one side (lab.agents.contract): the lab's signaling, relay and
    credentials, the cell's policy, and the side's own directory and timeline file."""
    impl = spec.agent_a if side == "a" else spec.agent_b
    relay = RELAY_IPS[0]
    # TLS by name, as browsers need it (Firefox refuses an IP in turns:); every agent resolves
    # it through the cell's hosts file and checks the certificate against it
    endpoints = {"udp": (relay, 443), "tcp": (relay, 3478), "tls": (RELAY_NAME, 443)}
    workdir = cell_dir / f"agent-{side}"
    workdir.mkdir(exist_ok=True)
    return AgentInputs(
        peer=side,
        controlling=side == "a",
        room=room,
        signaling=HostPort(SIGNALING_IP, 443),
        cafile=str(ca),
        stun=HostPort(relay, 443),
        turn=tuple(TurnServer(t, HostPort(*endpoints[t])) for t in spec.intent.turn_transports),
        turn_secret=TURN_SECRET,
        policy=spec.intent.ice_policy,
        timeout=_agent_timeout(spec),
        throughput_mbps=spec.throughput_mbps,
        throughput_seconds=3.0 if spec.throughput_mbps else None,
        events=str(cell_dir / f"events-{side}.jsonl"),
        workdir=str(workdir),
        extra=_EXTRA_FLAGS.get(impl, ()),
    )


def _agent_argv(spec: CellSpec, side: str, ca: Path, room: str, cell_dir: Path) -> list[str]:
    impl = implementation(spec.agent_a if side == "a" else spec.agent_b)
    argv = impl.argv(_agent_inputs(spec, side, ca, room, cell_dir))
    return with_hosts(argv, hosts_file(cell_dir / "hosts", LAB_NAMES))


def _agent_timeout(spec: CellSpec) -> float:
    """Cells predicted to fail get a shorter leash: a lab connect takes 2-3 s, so a cell that
    has not connected after 12 s will not (and the row still records what happened)."""
    if spec.expected == Outcome.FAIL and not spec.fault:
        return min(spec.agent_timeout, 12.0)
    return spec.agent_timeout


def _run_agents(
    lab: LabNetwork,
    spec: CellSpec,
    ca: Path,
    cell_dir: Path,
    relay: Any,
    signaling: subprocess.Popen[Any],
) -> dict[str, AgentResult]:
    room = secrets.token_hex(4)
    peers = lab.topo.roles.peers if lab.topo else {"a": "pa", "b": "pb"}
    procs = {}
    for side in SIDES:
        err = (cell_dir / f"agent-{side}.log").open("wb")
        argv = _agent_argv(spec, side, ca, room, cell_dir)
        procs[side] = lab.popen(peers[side], argv, stdout=subprocess.PIPE, stderr=err)
    timer = None
    if spec.fault:
        victim = {"kill-relay": relay.proc, "kill-signaling": signaling, "kill-agent-b": procs["b"]}
        timer = threading.Timer(spec.fault_after_s, _kill, args=(victim[spec.fault],))
        timer.start()
    results = {}
    deadline = time.monotonic() + _agent_timeout(spec) + 5
    try:
        for side, proc in procs.items():
            try:
                out, _ = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill(proc)
                out, _ = proc.communicate()
            results[side] = _parse_agent(side, out, proc.returncode)
    finally:
        if timer is not None:
            timer.cancel()
    return results


def _kill(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)


def _parse_agent(side: str, out: bytes, code: int | None) -> AgentResult:
    """The agent's result: its last stdout line that is a result JSON object."""
    for line in reversed(out.decode(errors="replace").strip().splitlines()):
        with contextlib.suppress(ValueError, TypeError):
            return AgentResult.from_json(line)
    return AgentResult(
        peer=side,
        role="controlling" if side == "a" else "controlled",
        started_at="",
        error=f"agent ended without a result (exit {code})",
    )


def _cap_bandwidth(lab: LabNetwork, mbps: float) -> None:
    from lab.nat.impairments import Impairment, tc_commands

    for router in lab.routers():
        for argv in tc_commands(router.wan_intf, Impairment(rate_mbit=mbps)):
            proc = router.popen(argv, text=True)
            _, err = proc.communicate(timeout=10)
            # removing a root qdisc that is not there fails, and is fine
            if proc.returncode != 0 and argv[:3] != ["tc", "qdisc", "del"]:
                raise LabError(f"tc failed on {router.name}: {err}")


def _start_capture(lab: LabNetwork, cell_dir: Path) -> subprocess.Popen[Any] | None:
    if shutil.which("tcpdump") is None:
        return None
    pcap = cell_dir / "relay.pcap"
    # bounded: at most 20000 packets of 256 bytes; stopped at the end of the cell
    return lab.popen(
        "rly",
        ["tcpdump", "-i", "any", "-U", "-s", "256", "-c", "20000", "-w", str(pcap)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop_capture(proc: subprocess.Popen[Any] | None) -> None:
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=3)


_INTENT_FIELDS = frozenset(f.name for f in fields(CellIntent))
SPEC_KEYS = tuple(sorted(_INTENT_FIELDS | {f.name for f in fields(CellSpec) if f.name != "intent"}))


def spec_to_dict(spec: CellSpec) -> dict[str, Any]:
    """A spec as plain JSON-able data (``intent`` nested), read back by ``spec_from_dict``."""
    return asdict(spec)


def spec_from_dict(data: dict[str, Any]) -> CellSpec:
    """A spec from ``spec_to_dict`` data, or from flat keys (``natlab run nat_a=symmetric``):
    the intent's keys may be given inside ``intent`` or beside the others."""
    data = dict(data)
    intent_data = dict(data.pop("intent", None) or {})
    for key in _INTENT_FIELDS & set(data):
        intent_data[key] = data.pop(key)
    unknown = set(data) - set(SPEC_KEYS) | set(intent_data) - _INTENT_FIELDS
    if unknown:
        raise ValueError(f"unknown cell keys {sorted(unknown)}; valid: {', '.join(SPEC_KEYS)}")
    transports = intent_data.get("turn_transports")
    if isinstance(transports, str):  # "udp+tcp", as the row writes it; "none" for STUN only
        transports = [t for t in transports.split("+") if t and t != "none"]
    if transports is not None:
        intent_data["turn_transports"] = tuple(transports)
    if "allowed_peer_ips" in data:
        data["allowed_peer_ips"] = tuple(data["allowed_peer_ips"])
    return CellSpec(intent=CellIntent(**intent_data), **data)


def main(argv: list[str] | None = None) -> int:
    """``python -m lab.run --spec JSON --workdir DIR``: run one cell, print its row as JSON."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="python -m lab.run")
    parser.add_argument("--spec", required=True, help="CellSpec fields as a JSON object")
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args(argv)
    try:
        spec = spec_from_dict(json.loads(args.spec))
    except (ValueError, TypeError) as err:
        parser.error(f"bad --spec: {err}")
    # SIGTERM (a stopped matrix) tears the lab down through the context managers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run_cell(spec, Path(args.workdir))
    report = {"row": result.row.as_dict(), "artifacts": str(result.artifacts or "")}
    print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
