"""coturn's own clients against our relay, with coturn's turnserver as the control.

turnutils_uclient -y makes one client the peer of another (client-to-client), so every
message goes client -> relay -> relay -> client; zero loss and a non-zero received count are
required. The same command against coturn's turnserver, with equivalent flags, tells a client
or environment problem (control fails too) from a relay bug (only ours fails).
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_relay_server, require_tool
from relayproc import LOOPBACK, ManagedProcess, free_port, managed_process, relay_subprocess
from relayproc import wait_stun_ready as _wait_stun_ready
from uclient import (
    AUTH_CLIENT_FLAGS,
    AUTH_SERVER_FLAGS,
    REALM,
    USER,
    UclientSummary,
    coturn_argv,
    parse_uclient,
)
from uclient import run_uclient as run_uclient_with

pytestmark = pytest.mark.interop

UCLIENT_MESSAGES = 100
UCLIENT_TIMEOUT_S = 120
# -y client-to-client, -n messages per session, -m clients, -l message length, -z interval ms.
# Without -c each client also runs an RTCP session: 4 sessions for -m 1 -y.
UCLIENT_BASE = ("-y", "-n", str(UCLIENT_MESSAGES), "-m", "1", "-l", "170", "-z", "10")
COMMON_SERVER_FLAGS = (
    "-n", "-r", REALM, "--allow-loopback-peers", "--min-port", "49152", "--max-port", "65535",
)  # fmt: skip


@contextlib.contextmanager
def coturn_server(*flags: str, tmp: Path) -> Iterator[ManagedProcess]:
    """coturn's turnserver on 127.0.0.1:<free port>, UDP/TCP only, logging to stdout."""
    port = free_port()
    argv = coturn_argv(port, tmp, "--no-tls", *flags)
    with managed_process(
        argv, ready=lambda p: _wait_stun_ready(p, LOOPBACK, port), port=port
    ) as proc:
        yield proc


@contextlib.contextmanager
def server_under_test(kind: str, auth: str, tmp: Path) -> Iterator[ManagedProcess]:
    flags = (*COMMON_SERVER_FLAGS, *AUTH_SERVER_FLAGS[auth])
    if kind == "coturn":
        with coturn_server(*flags, tmp=tmp) as proc:
            yield proc
    else:
        require_relay_server()
        with relay_subprocess(*flags) as proc:
            yield proc


def test_interop_uclient_summary_parser() -> None:
    out = (
        "7: : start_mclient: msz=4, tot_send_msgs=372, tot_recv_msgs=372, tot_send_bytes ~ 1\n"
        "7: : start_mclient: tot_send_msgs=400, tot_recv_msgs=398\n"
        "7: : Total lost packets 2 (0.500000%), total send dropped 0 (0.000000%)\n"
    )
    assert parse_uclient(out) == UclientSummary(400, 398, 2, 0)
    assert parse_uclient("0: : Cannot complete Allocation\n") is None


def run_uclient(port: int, *flags: str) -> tuple[UclientSummary | None, str]:
    return run_uclient_with(port, UCLIENT_BASE, *flags, timeout=UCLIENT_TIMEOUT_S)


@pytest.mark.parametrize("method", ["channel", "send"])
@pytest.mark.parametrize("auth", ["long-term", "rest"])
@pytest.mark.parametrize("kind", ["coturn", "natlab"])
def test_interop_uclient_zero_loss(tmp_path: Path, kind: str, auth: str, method: str) -> None:
    require_tool("turnutils_uclient")
    method_flags = ("-s",) if method == "send" else ()
    with server_under_test(kind, auth, tmp_path) as server:
        summary, output = run_uclient(server.port, *method_flags, *AUTH_CLIENT_FLAGS[auth])
        alive = server.proc.poll() is None
    context = f"{output}\n--- {kind} server log (last lines) ---\n" + "\n".join(
        list(server.lines)[-60:]
    )
    assert alive, f"{kind} server died during the run\n{context}"
    assert summary is not None, f"no uclient summary\n{context}"
    assert summary.sent >= UCLIENT_MESSAGES, f"{summary}\n{context}"
    assert summary.received > 0, f"nothing received: {summary}\n{context}"
    assert summary.lost == 0 and summary.send_dropped == 0, f"{summary}\n{context}"
    assert summary.received == summary.sent, f"{summary}\n{context}"


def test_interop_uclient_wrong_password_fails(tmp_path: Path) -> None:
    # The zero-loss check must be able to fail: bad credentials give no traffic at all.
    require_tool("turnutils_uclient")
    with server_under_test("natlab", "long-term", tmp_path) as server:
        summary, output = run_uclient(server.port, "-u", USER, "-w", "wrong")
    assert summary is None or summary.received == 0, output


# --- turnutils_stunclient ------------------------------------------------------------------

REFLEXIVE = re.compile(r"UDP reflexive addr: ([0-9.]+):(\d+)")


@contextlib.contextmanager
def udp_forwarder(upstream: tuple[str, int]) -> Iterator[tuple[tuple[str, int], tuple[str, int]]]:
    """Forward datagrams 127.0.0.1:front <-> upstream from a socket whose address we know.

    Yields (front address for the client, address the server sees). Runs at most 30 s.
    """
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind((LOOPBACK, 0))
    back.bind((LOOPBACK, 0))
    back.connect(upstream)
    stop = threading.Event()
    client: list[tuple[str, int]] = []

    def pump() -> None:
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([front, back], [], [], 0.05)
            for sock in readable:
                try:
                    if sock is front:
                        data, addr = front.recvfrom(65535)
                        client[:] = [addr]
                        back.send(data)
                    else:
                        data = back.recv(65535)
                        if client:
                            front.sendto(data, client[0])
                except OSError:
                    continue

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield front.getsockname(), back.getsockname()
    finally:
        stop.set()
        thread.join(5)
        front.close()
        back.close()


def run_stunclient(port: int) -> tuple[list[tuple[str, int]], str]:
    binary = require_tool("turnutils_stunclient")
    argv = [binary, "-p", str(port), LOOPBACK]
    result = subprocess.run(
        argv, capture_output=True, text=True, errors="replace", timeout=30, check=False
    )
    output = f"$ {' '.join(argv)}\n(exit {result.returncode})\n{result.stdout}{result.stderr}"
    found = [(ip, int(p)) for ip, p in REFLEXIVE.findall(result.stdout + result.stderr)]
    return found, output


@pytest.mark.parametrize("kind", ["coturn", "natlab"])
def test_interop_stunclient_mapped_address(tmp_path: Path, kind: str) -> None:
    require_tool("turnutils_stunclient")
    with server_under_test(kind, "long-term", tmp_path) as server:
        direct, direct_output = run_stunclient(server.port)
        with udp_forwarder((LOOPBACK, server.port)) as (front, seen_by_server):
            forwarded, forwarded_output = run_stunclient_at(front)
    assert direct, f"no reflexive address printed\n{direct_output}"
    for ip, port in direct:
        assert ip == LOOPBACK and 0 < port != server.port, direct_output
    # Through the forwarder the client's source address is known exactly.
    assert forwarded, f"no reflexive address printed\n{forwarded_output}"
    assert set(forwarded) == {seen_by_server}, f"expected {seen_by_server}\n{forwarded_output}"


def run_stunclient_at(address: tuple[str, int]) -> tuple[list[tuple[str, int]], str]:
    assert address[0] == LOOPBACK
    return run_stunclient(address[1])
