"""The pion agent (Go, pion/ice v2) against itself and against the aioice agent, for real.

Processes on 127.0.0.1: the natlab relay (UDP/TCP on one port, TLS on another, the TURN REST
secret, loopback peers allowed), the signaling server (TLS) and two agents. Both agents take
``--host-ip 127.0.0.1`` (neither gathers loopback by default); relay-only agents gather no host
candidates. The binary is the one ``make setup`` built (``python -m lab.agents.pion.build``);
the tests skip with the reason when it is not there.

Every process is ended by PID; every wait is bounded. A failing test prints the agents' logs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import require_relay_server
from relayproc import ROOT, ManagedProcess, free_port, managed_process, relay_subprocess
from streamutil import make_cert

from lab.agents.agent_result import AgentResult
from lab.agents.contract import EXIT_OK, read_events
from lab.agents.pion import IMPLEMENTATION as PION

pytestmark = pytest.mark.pion

LOOPBACK = "127.0.0.1"
SECRET = "natlab-pion-secret"
AGENT_TIMEOUT = 20.0


@dataclass(frozen=True)
class Lab:
    cafile: Path  # both certificates below: what agents trust
    signaling_cert: Path  # the signaling server's alone
    relay_port: int
    tls_port: int
    signaling: str

    def turn(self, *transports: str, tls_host: str = LOOPBACK) -> list[str]:
        args: list[str] = []
        for t in transports:
            host, port = (tls_host, self.tls_port) if t == "tls" else (LOOPBACK, self.relay_port)
            args += [f"--turn-{t}", f"{host}:{port}"]
        return args


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    why = PION.missing()
    if why:
        pytest.skip(f"pion agent: {why}")
    require_relay_server()
    directory = tmp_path_factory.mktemp("pion")
    # the relay's certificate names "localhost" (and 127.0.0.1), as the lab's names turn.lab.test
    relay_cert, relay_key = make_cert(directory, name="relay", cn="localhost")
    sig_cert, sig_key = make_cert(directory, name="signaling", cn="natlab-signaling")
    cafile = directory / "trusted.pem"
    cafile.write_text(relay_cert.read_text() + sig_cert.read_text())
    tls_port = free_port()
    relay_args = (
        "-n", "--tls-listening-port", str(tls_port), "--cert", str(relay_cert),
        "--pkey", str(relay_key), "--use-auth-secret", "--static-auth-secret", SECRET,
        "-r", "natlab", "--allow-loopback-peers", "--min-port", "42000", "--max-port", "42999",
    )  # fmt: skip
    sig_port = free_port()
    sig_argv = [
        sys.executable, "-m", "lab.agents.signaling", "--listen", f"{LOOPBACK}:{sig_port}",
        "--cert", str(sig_cert), "--key", str(sig_key),
    ]  # fmt: skip

    def sig_ready(p: ManagedProcess) -> bool:
        return p.wait_for_line(lambda line: line.startswith("[err] ready"), 15.0)

    with (
        relay_subprocess(*relay_args) as relay,
        managed_process(sig_argv, ready=sig_ready, port=sig_port) as sig,
    ):
        yield Lab(cafile, sig_cert, relay.port, tls_port, f"{LOOPBACK}:{sig_port}")
        if relay.proc.poll() is not None or sig.proc.poll() is not None:
            print(relay.log, sig.log)


@dataclass
class AgentRun:
    name: str
    argv: list[str]
    proc: subprocess.Popen[str]
    stdout: str = ""
    stderr: str = ""

    @property
    def result(self) -> AgentResult:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one result line:\n{self.stdout}\n{self.stderr}"
        return AgentResult.from_json(lines[0])

    def wait(self, timeout: float) -> None:
        try:
            self.stdout, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.stdout, self.stderr = self.proc.communicate(timeout=10)


def agent_argv(
    impl: str, lab: Lab, peer: str, room: str, *extra: str, cafile: Path | None = None
) -> list[str]:
    role = "--controlling" if peer == "a" else "--controlled"
    head = PION.command() if impl == "pion" else [sys.executable, "-m", "lab.agents.aioice"]
    return [
        *head, "--peer", peer, role, "--room", room, "--signaling", lab.signaling,
        "--cafile", str(cafile or lab.cafile), "--turn-secret", SECRET, "--realm", "natlab",
        "--timeout", f"{AGENT_TIMEOUT:g}", "--host-ip", LOOPBACK, *extra,
    ]  # fmt: skip


def run_pair(
    lab: Lab,
    impls: tuple[str, str],
    room: str,
    *extra: str,
    extra_a: Sequence[str] = (),
    extra_b: Sequence[str] = (),
    cafile_a: Path | None = None,
) -> list[AgentRun]:
    argvs = [
        agent_argv(impls[0], lab, "a", room, *extra, *extra_a, cafile=cafile_a),
        agent_argv(impls[1], lab, "b", room, *extra, *extra_b),
    ]
    runs = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with contextlib.ExitStack() as stack:
        for name, argv in zip(impls, argvs, strict=True):
            proc = subprocess.Popen(
                argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, errors="replace", env=env,
            )  # fmt: skip
            stack.callback(_reap, proc)
            runs.append(AgentRun(name, argv, proc))
        threads = [threading.Thread(target=r.wait, args=(AGENT_TIMEOUT + 10,)) for r in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(AGENT_TIMEOUT + 20)
    return runs


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def logs(runs: Sequence[AgentRun]) -> str:
    return "\n".join(f"--- {r.name} {r.argv[r.argv.index('--peer') + 1]} stdout\n{r.stdout}"
                     f"--- stderr\n{r.stderr[-6000:]}" for r in runs)  # fmt: skip


def check_both(runs: Sequence[AgentRun], outcome: str) -> tuple[AgentResult, AgentResult]:
    detail = logs(runs)
    try:
        a, b = (r.result for r in runs)
    except AssertionError:
        print(detail)
        raise
    for r, run in ((a, runs[0]), (b, runs[1])):
        assert r.error is None, detail
        assert r.outcome == outcome, detail
        assert run.proc.returncode == EXIT_OK, detail
        assert r.rtt_ms is not None and r.rtt_ms > 0, detail
        assert r.time_to_connect_s is not None and r.checks_sent and r.checks_sent > 0, detail
    for mine, theirs in ((a, b), (b, a)):  # both sides selected the same pair
        assert mine.local_candidate and theirs.remote_candidate, detail
        assert mine.local_candidate.split()[0] == theirs.remote_candidate.split()[0], detail
    for r, run in ((a, runs[0]), (b, runs[1])):
        if run.name == "pion":
            assert r.impl == "pion" and (r.impl_version or "").startswith("pion/ice 2."), detail
    return a, b


def test_pion_agent_relay_only_udp_against_aioice(lab: Lab) -> None:
    runs = run_pair(lab, ("pion", "aioice"), "udp-pa", "--policy", "relay", *lab.turn("udp"))
    a, _ = check_both(runs, "relay-udp")
    assert (a.local_type, a.relay_protocol) == ("relay", "udp")
    assert a.candidates_gathered == {
        "host": 0, "srflx": 0, "relay-udp": 1, "relay-tcp": 0, "relay-tls": 0,
    }  # fmt: skip


def test_pion_agent_relay_only_tcp_pion_pair(lab: Lab) -> None:
    runs = run_pair(lab, ("pion", "pion"), "tcp-pp", "--policy", "relay", *lab.turn("tcp"))
    a, b = check_both(runs, "relay-tcp")
    assert a.relay_protocol == b.relay_protocol == "tcp"


def test_pion_agent_relay_only_tls_controlled_by_aioice(lab: Lab) -> None:
    runs = run_pair(lab, ("aioice", "pion"), "tls-ap", "--policy", "relay", *lab.turn("tls"))
    _, b = check_both(runs, "relay-tls")
    assert b.relay_protocol == "tls" and b.candidates_gathered["relay-tls"] == 1


def test_pion_agent_policy_all_direct_with_throughput(lab: Lab, tmp_path: Path) -> None:
    events = tmp_path / "events-a.jsonl"
    runs = run_pair(
        lab, ("pion", "aioice"), "all-pa", "--policy", "all", *lab.turn("udp", "tcp", "tls"),
        "--throughput-mbps", "4", "--throughput-seconds", "1",
        # pion also asks every TURN URL for a srflx address over UDP, and this relay has no
        # UDP on its TLS port (the lab's has): cut that 5 s wait short
        extra_a=("--events", str(events), "--gather-timeout", "2"),
    )  # fmt: skip
    a, b = check_both(runs, "direct")
    assert (a.local_type, a.remote_type) == ("host", "host")
    for kind in ("host", "relay-udp", "relay-tcp", "relay-tls"):
        assert a.candidates_gathered[kind] == 1, logs(runs)
    # the receiver's figure reaches the sender through signaling
    assert a.throughput_mbps is not None and a.throughput_mbps == b.throughput_mbps
    assert 2.0 < a.throughput_mbps <= 4.5, logs(runs)
    kinds = [e.event for e in read_events(events)]
    for kind in ("start", "joined", "gathered", "description-sent", "check-sent", "connected",
                 "peer-connected", "exchanged", "done"):  # fmt: skip
        assert kind in kinds, (kind, kinds)
    assert {e.impl for e in read_events(events)} == {"pion"}


def test_pion_agent_turn_tls_by_name_against_aioice(lab: Lab) -> None:
    """TURN over TLS to a name: pion checks the relay's certificate for it (the lab's
    turn.lab.test; here localhost, from /etc/hosts as Go's resolver reads it)."""
    runs = run_pair(
        lab, ("pion", "aioice"), "tls-name", "--policy", "relay",
        extra_a=lab.turn("tls", tls_host="localhost"), extra_b=lab.turn("tls"),
    )  # fmt: skip
    a, _ = check_both(runs, "relay-tls")
    assert a.relay_protocol == "tls"


def test_pion_agent_turn_tls_unknown_ca_gives_no_candidate(lab: Lab) -> None:
    """--cafile trusting the signaling server only: pion refuses the relay's certificate and,
    with no candidate at all, ends at once (no peer needed)."""
    argv = agent_argv("pion", lab, "a", "tls-bad-ca", "--policy", "relay", *lab.turn("tls"))
    argv[argv.index("--cafile") + 1] = str(lab.signaling_cert)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=AGENT_TIMEOUT + 10)
    detail = f"{proc.stdout}\n{proc.stderr[-4000:]}"
    a = AgentResult.from_json(proc.stdout.strip())
    assert a.candidates_gathered["relay-tls"] == 0, detail
    assert (a.outcome, a.error, proc.returncode) == ("fail", "gather-failed", 1), detail
    assert "x509: certificate signed by unknown authority" in proc.stderr, detail


def _alone(lab: Lab, room: str, timeout: float) -> subprocess.Popen[str]:
    argv = agent_argv("pion", lab, "a", room, "--policy", "relay", *lab.turn("udp"))
    argv[argv.index("--timeout") + 1] = f"{timeout:g}"
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_pion_agent_without_peer_ends_before_timeout(lab: Lab) -> None:
    started = time.monotonic()
    proc = _alone(lab, "alone-timeout", 3.0)
    try:
        out, err = proc.communicate(timeout=15)
    finally:
        _reap(proc)
    wall = time.monotonic() - started
    result = AgentResult.from_json(out.strip())
    assert (result.outcome, result.error, proc.returncode) == ("fail", "timeout", 1), err
    assert wall < 3.0, err


def test_pion_agent_sigterm_prints_terminated(lab: Lab) -> None:
    proc = _alone(lab, "alone-term", AGENT_TIMEOUT)
    try:
        time.sleep(1.0)  # joined and gathered by now, waiting for the peer
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    finally:
        _reap(proc)
    result = AgentResult.from_json(out.strip())
    assert (result.error, proc.returncode) == ("terminated", 1), err
    assert result.duration_s is not None and result.duration_s < 5.0, err
