"""Misbehaving TCP/TLS clients against one in-process relay: garbage, stalls, silence, HTTP,
random floods. Fresh clients still get allocations quickly, and the server closes the bad
connections: garbage at once, silent or stalled ones by idle_timeout / STALL_TIMEOUT.

Every loop is bounded in count and time; every server binds 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from rawturn import RawTurnClient
from relayproc import counter, relay_in_thread, wait_counter
from streamutil import StreamTurnClient, assert_success, make_cert

from relay.stun.constants import MAGIC_COOKIE

if TYPE_CHECKING:
    from relay.server.app import RelayServer

USER, PASSWORD, REALM = "user", "pass", "natlab"
IDLE_TIMEOUT_S = 3.0
STALL_TIMEOUT_S = 10.0  # relay.server.app.STALL_TIMEOUT
TICK_S = 1.0  # relay.server.app.TICK_INTERVAL: closing happens on the next sweep
SILENT_CONNECTIONS = 1000
FRESH_ALLOCATION_BUDGET_S = 2.0
FD_NEEDED = 4 * SILENT_CONNECTIONS  # client + server side of each, plus headroom


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayServer]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < FD_NEEDED:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {FD_NEEDED}")
    if soft != resource.RLIM_INFINITY and soft < FD_NEEDED:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_NEEDED, hard))
    cert, key = make_cert(tmp_path_factory.mktemp("robust-cert"))
    options: dict[str, Any] = {
        "lt_cred_mech": True,
        "users": ((USER, PASSWORD),),
        "realm": REALM,
        "cert": str(cert),
        "pkey": str(key),
        "tls_listening_port": 0,
        "idle_timeout": IDLE_TIMEOUT_S,
    }
    try:
        with relay_in_thread(**options) as (server, _):
            yield server
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _readable(sock: socket.socket, timeout: float) -> bool:
    # poll, not select: with 1,000 connections open the descriptors pass FD_SETSIZE (1024)
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def _closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """True once the peer closed (EOF or reset) within timeout; drains whatever arrives."""
    deadline = time.monotonic() + timeout
    for _ in range(10_000):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if not _readable(sock, remaining):
            return False
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def _is_open(sock: socket.socket) -> bool:
    """Non-blocking: True if the server has not closed sock (nothing readable, or data only)."""
    if not _readable(sock, 0):
        return True
    try:
        return bool(sock.recv(65536, socket.MSG_PEEK))
    except (ConnectionResetError, BrokenPipeError):
        return False


@contextlib.contextmanager
def _random_flood(address: tuple[str, int], seconds: float) -> Iterator[dict[str, Any]]:
    """A thread that writes seeded random bytes for `seconds` or until the server closes."""
    result: dict[str, Any] = {"sent": 0, "error": None, "elapsed": None}
    sock = socket.create_connection(address, timeout=2)
    rng = random.Random(20240611)
    chunk = rng.randbytes(16384)

    def run() -> None:
        start = time.monotonic()
        try:
            while time.monotonic() - start < seconds:
                sock.sendall(chunk)
                result["sent"] += len(chunk)
        except OSError as err:
            result["error"] = err
        result["elapsed"] = time.monotonic() - start

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        thread.join(seconds + 5)
        sock.close()


def _timed(fn: Any) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def _stream_count(server: RelayServer) -> int:
    return len(server.streams)


def test_stream_robustness_misbehaving_clients_do_not_block_fresh_allocations(
    relay: RelayServer,
) -> None:
    server = relay
    tcp, tls = server.addresses("tcp")[0], server.addresses("tls")[0]
    udp = server.bound_addresses[0]
    garbage_before = counter(server, "stream_garbage_closed")
    idle_before = counter(server, "connections_idle_closed")
    tcp_before = counter(server, "connections_tcp")
    opened: list[socket.socket] = []
    try:
        # (c) silent TCP connections
        start = time.monotonic()
        for _ in range(SILENT_CONNECTIONS):
            opened.append(socket.create_connection(tcp, timeout=5))
        silent = list(opened)
        seen = wait_counter(server, "connections_tcp", tcp_before + SILENT_CONNECTIONS, 5.0)
        assert seen - tcp_before >= SILENT_CONNECTIONS, f"server saw {seen - tcp_before} of them"
        silent_open_s = time.monotonic() - start
        assert silent_open_s < IDLE_TIMEOUT_S - 0.5, f"opening took {silent_open_s:.1f}s"

        # (a) TLS: 4 KB of garbage instead of a ClientHello
        tls_garbage = socket.create_connection(tls, timeout=5)
        opened.append(tls_garbage)
        tls_garbage.sendall(os.urandom(4096))
        # (b) TCP: half a STUN header, then nothing
        stalled = socket.create_connection(tcp, timeout=5)
        opened.append(stalled)
        stalled.sendall(struct.pack("!HHI", 0x0001, 0, MAGIC_COOKIE)[:6])
        # (b') the same stall on a connection that holds an allocation: idle_timeout does not
        # apply (the allocation's lifetime governs), only the stall timeout does
        stalled_alloc = StreamTurnClient(tcp, USER, PASSWORD)
        opened.append(stalled_alloc.sock)
        stalled_alloc.allocate()
        stalled_alloc.send_raw(struct.pack("!HHI", 0x0003, 8, MAGIC_COOKIE)[:6])
        stall_started = time.monotonic()
        # (d) an HTTP request line on the TURN port
        http = socket.create_connection(tcp, timeout=5)
        opened.append(http)
        http.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")

        # (e) 1 s of random bytes, while fresh clients allocate
        with _random_flood(tcp, 1.0) as flood:
            with RawTurnClient(udp, USER, PASSWORD) as fresh_udp:
                udp_s = _timed(fresh_udp.allocate)
            fresh_tcp = StreamTurnClient(tcp, USER, PASSWORD)
            opened.append(fresh_tcp.sock)
            tcp_s = _timed(fresh_tcp.allocate)
        assert udp_s < FRESH_ALLOCATION_BUDGET_S, f"UDP allocation took {udp_s:.2f}s"
        assert tcp_s < FRESH_ALLOCATION_BUDGET_S, f"TCP allocation took {tcp_s:.2f}s"
        # the flood ended early because the server closed the connection (garbage)
        assert isinstance(flood["error"], ConnectionError | BrokenPipeError), flood
        assert flood["elapsed"] < 1.0, flood

        # garbage is closed at once
        assert _closed_by_server(tls_garbage, 2.0), "TLS garbage connection still open"
        got = wait_counter(server, "stream_garbage_closed", garbage_before + 1, 2.0)
        assert got >= garbage_before + 1, "random flood not counted as stream_garbage_closed"

        # silent, half-header and HTTP connections: closed by idle_timeout (next sweep)
        limit = IDLE_TIMEOUT_S + 2 * TICK_S + 1.0
        assert _closed_by_server(stalled, limit), "half-header connection not closed"
        assert _closed_by_server(http, 1.0), "HTTP connection not closed by idle_timeout"
        still_open = [s for s in silent if not _closed_by_server(s, 0.05)]
        assert not still_open, f"{len(still_open)} silent connections still open"
        idle = counter(server, "connections_idle_closed") - idle_before
        assert idle >= SILENT_CONNECTIONS + 2, f"connections_idle_closed moved by {idle}"

        # connections that hold an allocation outlive idle_timeout...
        assert _is_open(fresh_tcp.sock), "allocating TCP client closed by idle_timeout"
        assert_success(fresh_tcp.refresh(600))
        assert time.monotonic() - stall_started < STALL_TIMEOUT_S - 1.0
        assert _is_open(stalled_alloc.sock), "stalled allocation closed before STALL_TIMEOUT"
        # ...but not a stall mid-frame
        remaining = STALL_TIMEOUT_S - (time.monotonic() - stall_started)
        assert _closed_by_server(stalled_alloc.sock, remaining + 2 * TICK_S + 1.0), (
            "stalled connection with allocation not closed after STALL_TIMEOUT"
        )
        closed_after = time.monotonic() - stall_started
        assert closed_after >= STALL_TIMEOUT_S - 0.1, f"closed after {closed_after:.1f}s"
        assert counter(server, "connections_refused") == 0
        # only the fresh TCP client remains
        deadline = time.monotonic() + 2.0
        while _stream_count(server) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _stream_count(server) == 1, server.streams
        assert_success(fresh_tcp.refresh(600))
    finally:
        for sock in opened:
            sock.close()


def test_stream_random_bytes_closed_immediately(relay: RelayServer) -> None:
    before = counter(relay, "stream_garbage_closed")
    with socket.create_connection(relay.addresses("tcp")[0], timeout=5) as sock:
        sock.sendall(b"\xff" + os.urandom(1023))  # 0xff starts neither STUN nor ChannelData
        assert _closed_by_server(sock, 1.0)
    assert wait_counter(relay, "stream_garbage_closed", before + 1, 1.0) == before + 1


def test_stream_tls_garbage_client_hello_closed_immediately(relay: RelayServer) -> None:
    with socket.create_connection(relay.addresses("tls")[0], timeout=5) as sock:
        sock.sendall(os.urandom(4096))
        assert _closed_by_server(sock, 1.0)
