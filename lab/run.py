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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lab.agents.relays import RelaySpec, start_relay
from lab.certs import lab_certs
from lab.expectations import CellIntent, combine_sides, expected_outcome
from lab.natcheck import declared
from lab.session import LabError, LabNetwork
from lab.topologies.addressing import RELAY_IPS, SIGNALING_IP
from lab.topologies.base import SideSpec
from lab.topologies.catalog import topology

TURN_SECRET = "natlab-rest-secret"
AGENT_TIMEOUT = 25.0
FAULTS = ("kill-relay", "kill-signaling", "kill-agent-b")
_SHORT = {
    "endpoint-independent": "EIM",
    "address-dependent": "ADM",
    "address-and-port-dependent": "APDM",
}
_SHORT_F = {
    "endpoint-independent": "EIF",
    "address-dependent": "ADF",
    "address-and-port-dependent": "APDF",
}


@dataclass(frozen=True)
class CellSpec:
    scenario: str = "adhoc"
    topology: str = "two-nats"
    nat_a: str = "port-restricted-cone"
    nat_b: str = "port-restricted-cone"
    firewall_a: str = "open"
    firewall_b: str = "open"
    relay_impl: str = "inrepo"
    ice_policy: str = "all"
    turn_transports: tuple[str, ...] = ("udp", "tcp", "tls")
    trial: int = 0
    seed: int = 0
    run_id: str = ""
    relay_config_file: str | None = None  # a turnserver.conf used verbatim (denied-peer cells)
    relay_refuses_lab_peers: bool = False
    allowed_peer_ips: tuple[str, ...] = ()
    throughput_mbps: float | None = None  # agent stream rate
    bandwidth_cap_mbps: float | None = None  # tbf on both routers' WAN links
    verify_nats: bool = True
    fault: str | None = None  # FAULTS: kill one component mid-run
    fault_after_s: float = 2.0
    agent_timeout: float = AGENT_TIMEOUT
    keep_artifacts: bool = False  # keep the cell's directory even when it went as expected

    def __post_init__(self) -> None:
        topology(self.topology)
        SideSpec(self.nat_a, self.firewall_a)
        SideSpec(self.nat_b, self.firewall_b)
        if self.ice_policy not in ("all", "relay"):
            raise ValueError(f"ice policy {self.ice_policy!r}; valid: all, relay")
        bad = set(self.turn_transports) - {"udp", "tcp", "tls"}
        if bad:
            raise ValueError(f"unknown TURN transports {sorted(bad)}; valid: udp, tcp, tls")
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; valid: {', '.join(FAULTS)}")

    @property
    def intent(self) -> CellIntent:
        return CellIntent(
            topology=self.topology,
            nat_a=self.nat_a,
            nat_b=self.nat_b,
            firewall_a=self.firewall_a,
            firewall_b=self.firewall_b,
            ice_policy=self.ice_policy,
            turn_transports=self.turn_transports,
            relay_refuses_lab_peers=self.relay_refuses_lab_peers,
        )

    @property
    def name(self) -> str:
        parts = [self.scenario, self.topology, self.nat_a, self.nat_b]
        if (self.firewall_a, self.firewall_b) != ("open", "open"):
            parts += [f"fw-{self.firewall_a}", f"fw-{self.firewall_b}"]
        parts += [self.relay_impl, self.ice_policy, "+".join(self.turn_transports) or "stun"]
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
class CellResult:
    row: dict[str, Any]
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    artifacts: Path | None = None

    @property
    def as_expected(self) -> bool:
        """The outcome matches, and nothing went wrong beyond what a failing cell implies."""
        if self.row["outcome"] != self.row["expected"]:
            return False
        error = str(self.row["error"] or "")
        return not error or (self.row["expected"] == "fail" and not error.startswith("lab-error"))


def relay_version(impl: str) -> str | None:
    if impl == "inrepo":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"natlab-relay {version('natlab')}"
        except PackageNotFoundError:
            return None
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "coturn"], capture_output=True, text=True
    )
    return f"coturn {out.stdout.strip()}" if out.returncode == 0 and out.stdout else None


def spec_columns(spec: CellSpec, started: float, version: str | None) -> dict[str, Any]:
    """The result columns a cell's spec and start fix before anything runs (reports.schema)."""
    return {
        "run_id": spec.run_id or None,
        "scenario": spec.scenario,
        "topology": spec.topology,
        "nat_a": spec.nat_a,
        "nat_b": spec.nat_b,
        "firewall_a": spec.firewall_a,
        "firewall_b": spec.firewall_b,
        "relay_impl": spec.relay_impl,
        "relay_version": version,
        "ice_policy": spec.ice_policy,
        "turn_transports": "+".join(spec.turn_transports) or "none",
        "trial": spec.trial,
        "seed": spec.seed,
        "expected": expected_outcome(spec.intent),
        "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
    }


def run_cell(spec: CellSpec, workdir: Path) -> CellResult:
    """Run one trial of one cell; never raises for a traversal failure or a lab error."""
    started = time.time()
    cell_dir = workdir / spec.name
    shutil.rmtree(cell_dir, ignore_errors=True)
    cell_dir.mkdir(parents=True)
    row = spec_columns(spec, started, relay_version(spec.relay_impl))
    result = CellResult(row)
    keep = False
    try:
        keep = _run(spec, workdir, cell_dir, result)
    except LabError as err:
        row.update(outcome=None, error=f"lab-error: {err}")
        (cell_dir / "lab-error.txt").write_text(f"{err}\n\n{err.evidence}")
        keep = True
    finally:
        row["duration_s"] = round(time.time() - started, 3)
    for column in ("outcome", "path", "local_type", "remote_type", "relay_protocol"):
        row.setdefault(column, None)
    for column in ("time_to_connect_s", "checks_sent", "rtt_ms", "throughput_mbps", "error"):
        row.setdefault(column, None)
    for column in ("nat_a_observed", "nat_b_observed"):
        row.setdefault(column, None)
    (cell_dir / "row.json").write_text(json.dumps(row, indent=2, default=str))
    keep = keep or spec.keep_artifacts or not result.as_expected
    if keep:
        result.artifacts = cell_dir
    else:
        shutil.rmtree(cell_dir, ignore_errors=True)
    return result


def _run(spec: CellSpec, workdir: Path, cell_dir: Path, result: CellResult) -> bool:
    row = result.row
    certs = lab_certs(workdir / "certs")
    topo = topology(spec.topology)
    sides = {"a": SideSpec(spec.nat_a, spec.firewall_a), "b": SideSpec(spec.nat_b, spec.firewall_b)}
    with LabNetwork(topo, defer_firewalls=True, **sides) as lab:
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
            _verify_nats(lab, spec, row)
        lab.reset_nat_state()
        lab.apply_firewalls()
        if spec.bandwidth_cap_mbps:
            _cap_bandwidth(lab, spec.bandwidth_cap_mbps)
        agents = _run_agents(lab, spec, certs.ca, cell_dir, relay, signaling)
        result.agents = agents
        _fill_row(row, agents)
        if spec.fault:
            row["error"] = "; ".join(
                e
                for e in (f"fault injected: {spec.fault} at {spec.fault_after_s}s", row["error"])
                if e
            )
        failed = not result.as_expected
        if failed or spec.keep_artifacts:
            (cell_dir / "evidence.txt").write_text(lab.evidence())
            (cell_dir / "relay.log").write_text(relay.log())
        _stop_capture(pcap)
        return failed


# ---------------------------------------------------------------------- pieces


def _verify_nats(lab: LabNetwork, spec: CellSpec, row: dict[str, Any]) -> None:
    from lab.natcheck import probe_with_natprobe

    peers = lab.topo.roles.peers if lab.topo else {}
    mismatches = []
    sides = (
        [("a", spec.nat_a)]
        if spec.topology == "same-lan"
        else [("a", spec.nat_a), ("b", spec.nat_b)]
    )
    # both probes at once: they use different NATs (or one NAT, for same-lan)
    with ThreadPoolExecutor(max_workers=2) as pool:
        probes = {
            side: pool.submit(probe_with_natprobe, lab, peers.get(side, f"p{side}"))
            for side, _ in sides
        }
    if spec.topology == "same-lan":
        probes["b"] = probes["a"]
        sides.append(("b", spec.nat_b))
    for side, nat in sides:
        mapping, filtering, error = probes[side].result()
        observed = (
            None
            if error
            else f"{_SHORT.get(mapping, mapping)}/{_SHORT_F.get(filtering, filtering)}"
        )
        row[f"nat_{side}_observed"] = observed
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


def _agent_argv(spec: CellSpec, side: str, ca: Path, room: str) -> list[str]:
    relay = RELAY_IPS[0]
    argv = [
        sys.executable,
        "-m",
        "lab.agents.ice_agent",
        "--peer",
        side,
        "--controlling" if side == "a" else "--controlled",
        "--room",
        room,
        "--signaling",
        f"{SIGNALING_IP}:443",
        "--cafile",
        str(ca),
        "--stun",
        f"{relay}:443",
        "--turn-secret",
        TURN_SECRET,
        "--policy",
        spec.ice_policy,
        "--timeout",
        str(_agent_timeout(spec)),
        "--nomination-wait",
        "1.0",
    ]
    endpoints = {
        "udp": ("--turn-udp", 443),
        "tcp": ("--turn-tcp", 3478),
        "tls": ("--turn-tls", 443),
    }
    for transport in spec.turn_transports:
        flag, port = endpoints[transport]
        argv += [flag, f"{relay}:{port}"]
    if spec.throughput_mbps:
        argv += ["--throughput-mbps", str(spec.throughput_mbps), "--throughput-seconds", "3"]
    return argv


def _agent_timeout(spec: CellSpec) -> float:
    """Cells predicted to fail get a shorter leash: a lab connect takes 2-3 s, so a cell that
    has not connected after 12 s will not (and the row still records what happened)."""
    if expected_outcome(spec.intent) == "fail" and not spec.fault:
        return min(spec.agent_timeout, 12.0)
    return spec.agent_timeout


def _run_agents(
    lab: LabNetwork,
    spec: CellSpec,
    ca: Path,
    cell_dir: Path,
    relay: Any,
    signaling: subprocess.Popen[Any],
) -> dict[str, dict[str, Any]]:
    room = secrets.token_hex(4)
    peers = lab.topo.roles.peers if lab.topo else {"a": "pa", "b": "pb"}
    procs = {}
    for side in ("a", "b"):
        err = (cell_dir / f"agent-{side}.log").open("wb")
        procs[side] = lab.popen(
            peers[side], _agent_argv(spec, side, ca, room), stdout=subprocess.PIPE, stderr=err
        )
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
            results[side] = _parse_agent(out, proc.returncode)
    finally:
        if timer is not None:
            timer.cancel()
    return results


def _kill(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)


def _parse_agent(out: bytes, code: int | None) -> dict[str, Any]:
    for line in reversed(out.decode(errors="replace").strip().splitlines()):
        with contextlib.suppress(ValueError):
            data = json.loads(line)
            if isinstance(data, dict):
                return data
    return {"outcome": "fail", "error": f"agent ended without a result (exit {code})"}


def _fill_row(row: dict[str, Any], agents: dict[str, dict[str, Any]]) -> None:
    a, b = agents.get("a", {}), agents.get("b", {})
    views = [r.get("outcome") if not r.get("error") else "fail" for r in (a, b)]
    row["outcome"] = combine_sides(*views)
    row["local_type"] = a.get("local_type")
    row["remote_type"] = a.get("remote_type")
    if a.get("local_type") and a.get("remote_type"):
        row["path"] = f"{a['local_type']}->{a['remote_type']}"
    protocols = [p for p in (a.get("relay_protocol"), b.get("relay_protocol")) if p]
    order = {"udp": 3, "tcp": 2, "tls": 1}
    row["relay_protocol"] = min(protocols, key=order.__getitem__) if protocols else None
    row["time_to_connect_s"] = a.get("time_to_connect_s")
    checks = [r.get("checks_sent") for r in (a, b) if r.get("checks_sent") is not None]
    row["checks_sent"] = sum(checks) if checks else None
    row["rtt_ms"] = a.get("rtt_ms")
    row["throughput_mbps"] = a.get("throughput_mbps") or b.get("throughput_mbps")
    errors = [f"{side}: {r['error']}" for side, r in (("a", a), ("b", b)) if r.get("error")]
    row["error"] = "; ".join(errors) or None


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


def spec_from_dict(data: dict[str, Any]) -> CellSpec:
    if "turn_transports" in data and isinstance(data["turn_transports"], str):
        value = data["turn_transports"]
        data = {**data, "turn_transports": tuple(t for t in value.split("+") if t and t != "none")}
    return replace(CellSpec(), **data)


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
    print(json.dumps({"row": result.row, "artifacts": str(result.artifacts or "")}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
