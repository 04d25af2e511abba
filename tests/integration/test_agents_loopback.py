"""Two ICE agents, the signaling server and the natlab relay as processes on 127.0.0.1.

aioice leaves 127.0.0.1 out of its host candidates; the agents take ``--host-ip 127.0.0.1``
instead, so nothing binds anything but loopback and no network namespace is needed. Relay-only
agents gather no host candidates at all (as in test_relay_udp.py). The relay serves UDP/TCP on
one port and TLS on another, with the TURN REST secret and loopback peers allowed.

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
from typing import Any

import pytest
from conftest import require_relay_server
from relayproc import ROOT, ManagedProcess, free_port, managed_process, relay_subprocess
from streamutil import make_cert

from lab.agents.agent_result import AgentResult
from lab.agents.contract import read_events

LOOPBACK = "127.0.0.1"
SECRET = "natlab-agents-secret"
AGENT_TIMEOUT = 20.0
WALL_SLACK_S = 1.0  # interpreter start-up before the agent's clock starts


@dataclass(frozen=True)
class Lab:
    cert: Path
    key: Path
    relay_port: int
    tls_port: int
    signaling: str

    def turn(self, *transports: str) -> list[str]:
        args: list[str] = []
        for t in transports:
            port = self.tls_port if t == "tls" else self.relay_port
            args += [f"--turn-{t}", f"{LOOPBACK}:{port}"]
        return args


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_relay_server()
    cert, key = make_cert(tmp_path_factory.mktemp("agents"))
    tls_port = free_port()
    relay_args = (
        "-n", "--tls-listening-port", str(tls_port), "--cert", str(cert), "--pkey", str(key),
        "--use-auth-secret", "--static-auth-secret", SECRET, "-r", "natlab",
        "--allow-loopback-peers", "--min-port", "41000", "--max-port", "41999",
    )  # fmt: skip
    sig_port = free_port()
    sig_argv = [
        sys.executable, "-m", "lab.agents.signaling", "--listen", f"{LOOPBACK}:{sig_port}",
        "--cert", str(cert), "--key", str(key),
    ]  # fmt: skip

    def sig_ready(p: ManagedProcess) -> bool:
        return p.wait_for_line(lambda line: line.startswith("[err] ready"), 15.0)

    with (
        relay_subprocess(*relay_args) as relay,
        managed_process(sig_argv, ready=sig_ready, port=sig_port) as sig,
    ):
        yield Lab(cert, key, relay.port, tls_port, f"{LOOPBACK}:{sig_port}")
        if relay.proc.poll() is not None or sig.proc.poll() is not None:
            print(relay.log, sig.log)


@dataclass
class AgentRun:
    argv: list[str]
    proc: subprocess.Popen[str]
    started: float
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0

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
        self.wall_s = time.monotonic() - self.started


def agent_argv(
    lab: Lab, peer: str, room: str, *extra: str, timeout: float = AGENT_TIMEOUT
) -> list[str]:
    role = "--controlling" if peer == "a" else "--controlled"
    return [
        sys.executable, "-m", "lab.agents.aioice", "--peer", peer, role, "--room", room,
        "--signaling", lab.signaling, "--cafile", str(lab.cert), "--turn-secret", SECRET,
        "--realm", "natlab", "--timeout", str(timeout), "--host-ip", LOOPBACK, *extra,
    ]  # fmt: skip


def start(argv: Sequence[str]) -> AgentRun:
    proc = subprocess.Popen(
        list(argv),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return AgentRun(list(argv), proc, time.monotonic())


@contextlib.contextmanager
def agents(*argvs: Sequence[str]) -> Iterator[list[AgentRun]]:
    runs = [start(argv) for argv in argvs]
    try:
        yield runs
    finally:
        for run in runs:
            if run.proc.poll() is None:
                run.proc.kill()
                run.wait(10)


def run_pair(lab: Lab, room: str, *extra: str, timeout: float = AGENT_TIMEOUT) -> list[AgentRun]:
    return run_both(
        agent_argv(lab, "a", room, *extra, timeout=timeout),
        agent_argv(lab, "b", room, *extra, timeout=timeout),
        timeout=timeout,
    )


def run_both(
    argv_a: Sequence[str], argv_b: Sequence[str], timeout: float = AGENT_TIMEOUT
) -> list[AgentRun]:
    with agents(argv_a, argv_b) as runs:
        threads = [threading.Thread(target=r.wait, args=(timeout + 10,)) for r in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout + 20)
    return runs


def logs(runs: Sequence[AgentRun]) -> str:
    return "\n".join(f"--- {r.argv[4]} stdout\n{r.stdout}--- stderr\n{r.stderr}" for r in runs)


def results(runs: Sequence[AgentRun]) -> list[AgentResult]:
    try:
        out = [r.result for r in runs]
    except AssertionError:
        print(logs(runs))
        raise
    return out


def check_both(runs: Sequence[AgentRun], outcome: str, **expected: Any) -> list[AgentResult]:
    a, b = results(runs)
    detail = logs(runs)
    for r, run in ((a, runs[0]), (b, runs[1])):
        assert r.error is None, detail
        assert r.outcome == outcome, detail
        assert run.proc.returncode == 0, detail
        assert r.rtt_ms is not None and r.rtt_ms > 0, detail
        assert r.time_to_connect_s is not None and r.checks_sent and r.checks_sent > 0, detail
        for key, value in expected.items():
            assert getattr(r, key) == value, (key, detail)
    # both sides selected the same pair
    assert a.local_candidate is not None and b.local_candidate is not None
    assert a.local_candidate.split()[0] == b.remote_candidate.split()[0], detail  # type: ignore[union-attr]
    assert b.local_candidate.split()[0] == a.remote_candidate.split()[0], detail  # type: ignore[union-attr]
    return [a, b]


def test_agents_policy_all_direct_host_pair(lab: Lab) -> None:
    runs = run_pair(
        lab, "direct", "--policy", "all", "--stun", f"{LOOPBACK}:{lab.relay_port}",
        *lab.turn("udp", "tcp", "tls"), "--throughput-mbps", "4", "--throughput-seconds", "1",
    )  # fmt: skip
    a, b = check_both(runs, "direct", local_type="host", remote_type="host", relay_protocol=None)
    for r in (a, b):
        assert r.candidates_gathered["host"] == 1
        assert r.candidates_gathered["relay-udp"] == 1
        assert r.candidates_gathered["relay-tcp"] == 1
        assert r.candidates_gathered["relay-tls"] == 1
    # the receiver's figure reaches the sender through signaling
    assert a.throughput_mbps is not None and a.throughput_mbps == b.throughput_mbps
    assert 2.0 < a.throughput_mbps <= 4.5, logs(runs)
    assert (a.role, b.role) == ("controlling", "controlled")


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_agents_relay_only_single_transport(lab: Lab, transport: str) -> None:
    runs = run_pair(lab, f"relay-{transport}", "--policy", "relay", *lab.turn(transport))
    a, b = check_both(
        runs,
        f"relay-{transport}",
        local_type="relay",
        remote_type="relay",
        relay_protocol=transport,
    )
    for r in (a, b):
        assert r.candidates_gathered == {
            "host": 0,
            "srflx": 0,
            "relay-udp": int(transport == "udp"),
            "relay-tcp": int(transport == "tcp"),
            "relay-tls": int(transport == "tls"),
        }
        assert r.throughput_mbps is None


def test_agents_relay_ladder_prefers_udp(lab: Lab) -> None:
    runs = run_pair(lab, "ladder", "--policy", "relay", *lab.turn("udp", "tcp", "tls"))
    check_both(runs, "relay-udp", relay_protocol="udp")


def test_agents_relay_ladder_falls_back_to_tcp_without_turn_udp(lab: Lab) -> None:
    dead_udp = free_port()  # nothing listens there: the UDP allocation never succeeds
    runs = run_pair(
        lab, "ladder-tcp", "--policy", "relay", "--gather-timeout", "2",
        "--turn-udp", f"{LOOPBACK}:{dead_udp}", *lab.turn("tcp", "tls"),
    )  # fmt: skip
    a, _ = check_both(runs, "relay-tcp", relay_protocol="tcp")
    assert a.candidates_gathered["relay-udp"] == 0 and a.candidates_gathered["relay-tls"] == 1


def test_agents_turn_tls_verifies_the_lab_ca(lab: Lab, tmp_path: Path) -> None:
    # a second relay whose TLS certificate is not issued by the agents' --cafile
    cert, key = make_cert(tmp_path, "other", cn="not-the-lab")
    tls_port = free_port()
    relay_args = (
        "-n", "--tls-listening-port", str(tls_port), "--cert", str(cert), "--pkey", str(key),
        "--use-auth-secret", "--static-auth-secret", SECRET, "--allow-loopback-peers",
        "--min-port", "42000", "--max-port", "42099",
    )  # fmt: skip
    with relay_subprocess(*relay_args):
        runs = run_pair(
            lab, "untrusted", "--policy", "relay", "--turn-tls", f"{LOOPBACK}:{tls_port}",
            "--gather-timeout", "3", timeout=10,
        )  # fmt: skip
    a, b = results(runs)
    errors = {a.error, b.error}
    assert "gather-failed" in errors and errors <= {"gather-failed", "peer-gather-failed"}, logs(
        runs
    )
    for r in (a, b):
        assert r.outcome == "fail" and r.candidates_gathered["relay-tls"] == 0
    assert "CERTIFICATE_VERIFY_FAILED" in runs[0].stderr + runs[1].stderr, logs(runs)


def test_agents_signaling_down_fails_within_timeout(tmp_path: Path) -> None:
    cert, _ = make_cert(tmp_path)
    dead = Lab(cert, cert, free_port(), free_port(), f"{LOOPBACK}:{free_port()}")
    timeout = 5.0
    with agents(agent_argv(dead, "a", "nobody", "--policy", "all", timeout=timeout)) as (run,):
        run.wait(timeout + 10)
    r = run.result
    assert (r.error, r.outcome) == ("signaling-failed", "fail"), run.stderr
    assert run.wall_s < timeout + WALL_SLACK_S, run.wall_s
    assert r.duration_s is not None and r.duration_s < timeout
    assert run.proc.returncode == 1


def test_agents_lonely_peer_times_out(lab: Lab) -> None:
    timeout = 4.0
    with agents(agent_argv(lab, "a", "lonely", "--policy", "all", timeout=timeout)) as (run,):
        run.wait(timeout + 10)
    r = run.result
    assert (r.error, r.outcome) == ("timeout", "fail"), run.stderr
    assert r.candidates_gathered["host"] == 1  # what was known is still reported
    assert run.wall_s < timeout + WALL_SLACK_S, run.wall_s


def test_agents_killed_peer_ends_the_other_with_an_error(lab: Lab) -> None:
    extra = ("--policy", "all", "--throughput-mbps", "2", "--throughput-seconds", "8")
    timeout = 25.0
    with agents(
        agent_argv(lab, "a", "killed", *extra, timeout=timeout),
        agent_argv(lab, "b", "killed", *extra, timeout=timeout),
    ) as (a, b):
        # b's stderr is read here until it has connected, then b is killed by PID
        assert b.proc.stderr is not None
        seen = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = b.proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if "peer starts sending" in line:
                break
        assert any("nominated" in line for line in seen), "".join(seen)
        killed_at = time.monotonic()
        b.proc.kill()
        b.wait(10)
        a.wait(timeout + 5)
    r = a.result
    assert r.error == "peer-left", a.stderr
    assert r.outcome == "direct"  # it had connected: the path is known, the trial failed
    assert time.monotonic() - killed_at < 5.0
    assert a.proc.returncode == 1


HUNG_AGENT = """
import sys, time
import lab.agents.aioice.agent as agent
import lab.agents.aioice.process as process

async def hang(self, offer):
    time.sleep(60)  # blocks the event loop: only the watchdog thread can end the process

agent.Agent.describe = hang
sys.exit(process.main(sys.argv[1:]))
"""


def test_agents_watchdog_ends_a_hung_agent(lab: Lab, tmp_path: Path) -> None:
    script = tmp_path / "hung_agent.py"
    script.write_text(HUNG_AGENT)
    timeout = 4.0
    argv = agent_argv(lab, "a", "hung", timeout=timeout)
    argv[1:3] = [str(script)]  # instead of "-m lab.agents.aioice"
    with agents(argv) as (run,):
        run.wait(timeout + 10)
    r = run.result
    assert (r.error, r.outcome) == ("timeout", "fail"), run.stderr
    assert "watchdog" in run.stderr
    assert run.wall_s < timeout + 0.2, run.wall_s  # start-up included
    assert run.proc.returncode == 1


def test_agents_timeline_events_and_implementation(lab: Lab, tmp_path: Path) -> None:
    events = {side: tmp_path / f"events-{side}.jsonl" for side in "ab"}
    extra = ("--policy", "relay", *lab.turn("udp"))
    runs = run_both(
        agent_argv(lab, "a", "timeline", *extra, "--events", str(events["a"])),
        agent_argv(lab, "b", "timeline", *extra, "--events", str(events["b"])),
    )
    check_both(runs, "relay-udp", relay_protocol="udp")
    order = [
        "start", "joined", "gathered", "gathering-done", "description-sent",
        "description-received", "nominated", "connected", "peer-connected", "exchanged", "done",
    ]  # fmt: skip
    for side, run in zip("ab", runs, strict=True):
        r = run.result
        assert r.impl == "aioice" and r.impl_version is not None, logs(runs)
        assert r.impl_version.startswith("aioice 0.13"), r.impl_version
        timeline = read_events(events[side])
        assert {(e.peer, e.impl) for e in timeline} == {(side, "aioice")}
        kinds = [e.event for e in timeline]
        # each kind of the call appears, in the call's order (checks come in between); the
        # peer's "connected" is the peer's news and may come before this side's own
        # nomination (on the controlled side), so it is placed between the descriptions and
        # the exchange, not against the nomination
        own = [k for k in order if k != "peer-connected"]
        assert [k for k in dict.fromkeys(kinds) if k in own] == own, kinds
        assert "peer-connected" in kinds, kinds
        first = kinds.index
        assert first("description-received") < first("peer-connected") < first("exchanged")
        assert "check-sent" in kinds and "check-answered" in kinds, kinds
        assert kinds[-1] == "done" and "failed" not in kinds
        assert sum(k.startswith("check-") for k in kinds) <= 200
        assert [e.t for e in timeline] == sorted(e.t for e in timeline)
        gathered = [e.detail for e in timeline if e.event == "gathered"]
        assert len(gathered) == 1 and gathered[0] and gathered[0].startswith("candidate:")


OTHER_PLANE_AGENT = """
import sys
import lab.agents.aioice.agent as agent
import lab.agents.aioice.process as process

agent.DATA_PLANES = ("pseudotcp",)  # a peer that speaks no datagram plane
sys.exit(process.main(sys.argv[1:]))
"""


def test_agents_no_common_data_plane_skips_pings_and_throughput(lab: Lab, tmp_path: Path) -> None:
    script = tmp_path / "other_plane_agent.py"
    script.write_text(OTHER_PLANE_AGENT)
    events = tmp_path / "events-a.jsonl"
    extra = ("--policy", "relay", *lab.turn("udp"), "--throughput-mbps", "2")
    extra += ("--throughput-seconds", "1")
    argv_b = agent_argv(lab, "b", "planes", *extra)
    argv_b[1:3] = [str(script)]  # instead of "-m lab.agents.aioice"
    runs = run_both(agent_argv(lab, "a", "planes", *extra, "--events", str(events)), argv_b)
    detail = logs(runs)
    for r, run in zip(results(runs), runs, strict=True):
        assert (r.error, r.outcome, run.proc.returncode) == (None, "relay-udp", 0), detail
        assert r.rtt_ms is None and r.throughput_mbps is None, detail
        assert r.time_to_connect_s is not None and r.checks_sent, detail
    exchanged = [e.detail or "" for e in read_events(events) if e.event == "exchanged"]
    assert len(exchanged) == 1 and exchanged[0].startswith("skipped"), exchanged


def _ca_bundle(tmp_path: Path, *certs: Path) -> Path:
    bundle = tmp_path / "ca-bundle.pem"
    bundle.write_text("".join(cert.read_text() for cert in certs))
    return bundle


def test_agents_turn_tls_by_name_verifies_that_name(lab: Lab, tmp_path: Path) -> None:
    # a relay whose certificate names "localhost" (and 127.0.0.1); the agents are given the
    # name, resolve it and must check the certificate against it
    cert, key = make_cert(tmp_path, "named", cn="localhost")
    tls_port = free_port()
    relay_args = (
        "-n", "--tls-listening-port", str(tls_port), "--cert", str(cert), "--pkey", str(key),
        "--use-auth-secret", "--static-auth-secret", SECRET, "--allow-loopback-peers",
        "--min-port", "42100", "--max-port", "42199",
    )  # fmt: skip
    bundle = _ca_bundle(tmp_path, lab.cert, cert)
    with relay_subprocess(*relay_args):
        runs = run_pair(
            lab, "tls-by-name", "--cafile", str(bundle), "--policy", "relay",
            "--turn-tls", f"localhost:{tls_port}",
        )  # fmt: skip
    check_both(runs, "relay-tls", local_type="relay", relay_protocol="tls")
    assert "turn-tls localhost:" in runs[0].stderr, logs(runs)


def test_agents_turn_tls_by_name_refuses_a_certificate_for_another_name(lab: Lab) -> None:
    # the lab relay's certificate is valid for 127.0.0.1 and "natlab-test", not "localhost":
    # reached by the name, it must be refused although the address matches
    runs = run_pair(
        lab, "tls-wrong-name", "--policy", "relay", "--turn-tls", f"localhost:{lab.tls_port}",
        "--gather-timeout", "3", timeout=10,
    )  # fmt: skip
    a, b = results(runs)
    assert {a.error, b.error} <= {"gather-failed", "peer-gather-failed"}, logs(runs)
    assert "gather-failed" in {a.error, b.error}, logs(runs)
    stderr = runs[0].stderr + runs[1].stderr
    assert "CERTIFICATE_VERIFY_FAILED" in stderr, logs(runs)
    assert "certificate is not valid for 'localhost'" in stderr, logs(runs)
