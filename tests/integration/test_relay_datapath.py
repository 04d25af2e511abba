"""The relay's two packet loops, C (relay/server/_datapath.c) and Python, end to end on loopback.

An in-process relay on 127.0.0.1, real UDP (and TCP) sockets, no mocks: every test runs for
``datapath="c"`` and ``datapath="python"``; the C case proves its fast path ran (its own
counters) and that it never relays what the core would refuse. Every wait is bounded.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from conftest import StartRelay
from rawturn import RawTurnClient, assert_success, error_code
from relayproc import counter, wait_counter
from streamutil import StreamTurnClient

from relay.server import datapath as datapaths
from relay.stun.attributes import ChannelNumber, Data, Lifetime, XorPeerAddress
from relay.stun.channeldata import ChannelData, decode_channel_data
from relay.stun.constants import CHANNEL_MAX_RFC5766, Method
from relay.stun.message import Message, encode_message
from relay.turn import allocation as allocation_module

if TYPE_CHECKING:
    from relay.server.app import RelayServer

USER, PASSWORD, REALM = "user", "pass", "natlab"
LT_OPTIONS = {"lt_cred_mech": True, "users": ((USER, PASSWORD),), "realm": REALM}
LOOPBACK = "127.0.0.1"
LOOPBACK_IP = ipaddress.ip_address(LOOPBACK)
CH = 0x4000
N = 200
BURST = 20
RECV_S = 2.0  # per receive
QUIET_S = 0.5  # "nothing arrives" is watched this long


@pytest.fixture(params=["c", "python"])
def datapath(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv(datapaths.ENV, raising=False)  # the option must decide
    if request.param == "c" and datapaths.C_MODULE is None:
        pytest.skip("relay/server/_datapath is not built (python setup.py build_ext --inplace)")
    return str(request.param)


@pytest.fixture
def peer() -> Iterator[socket.socket]:
    yield from _udp_socket()


@pytest.fixture
def peer2() -> Iterator[socket.socket]:
    yield from _udp_socket()


def _udp_socket() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((LOOPBACK, 0))
        yield sock
    finally:
        sock.close()


def _addr(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    return (str(host), int(port))


def _recv(sock: socket.socket, timeout: float = RECV_S) -> tuple[bytes, tuple[str, int]] | None:
    sock.settimeout(timeout)
    try:
        data, addr = sock.recvfrom(70000)
    except (TimeoutError, ConnectionRefusedError):
        return None
    return data, (addr[0], addr[1])


def _client(addr: tuple[str, int]) -> RawTurnClient:
    client = RawTurnClient(addr, USER, PASSWORD)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return client


def _plain_send(peer: tuple[str, int], payload: bytes) -> bytes:
    """A Send indication without FINGERPRINT: the shape the fast paths take (RFC 8656 §11.2)."""
    msg = Message.indication(
        Method.SEND,
        os.urandom(12),
        XorPeerAddress(ipaddress.ip_address(peer[0]), peer[1]),
        Data(payload),
    )
    return encode_message(msg)


def _c_counter(server: RelayServer, key: str) -> int:
    """The C forwarder's own counter (0 when the Python loop runs)."""
    return 0 if server.datapath is None else int(server.datapath.counters()[key])


def _read(fn: Callable[[], Any]) -> Any:
    """A snapshot of server state that the server thread may change meanwhile."""
    for _ in range(100):
        try:
            return fn()
        except RuntimeError:  # changed size during iteration
            time.sleep(0.001)
    raise RuntimeError("server state kept changing")


def _relay_fd_routes(server: RelayServer, relay_fd: int) -> list[tuple[bytes, Any]]:
    """Client-side routes, in every listener's tables, that go out through relay_fd."""
    routes = []
    for listener in list(server.udp.values()):
        for table in (listener.channel_routes, listener.send_routes):
            routes += [(k, r) for k, r in list(table.items()) if r[0] == relay_fd]
    return routes


def _exchange(
    send: Callable[[bytes], object],
    receive: Callable[[], bytes | None],
    payloads: list[bytes],
) -> list[bytes]:
    """The first payload alone (the core's slow path learns the route), then bursts."""
    got: list[bytes] = []
    bursts = [payloads[:1]] + [payloads[i : i + BURST] for i in range(1, len(payloads), BURST)]
    for burst in bursts:
        for payload in burst:
            send(payload)
        for _ in burst:
            data = receive()
            if data is None:
                return got
            got.append(data)
    return got


def _silent(sock: socket.socket, timeout: float = QUIET_S) -> None:
    leaked = _recv(sock, timeout)
    assert leaked is None, f"{_addr(sock)} received {leaked}"


# ---------------------------------------------------------------- ChannelData both ways


def test_channel_data_both_ways(
    start_relay: StartRelay, datapath: str, peer: socket.socket
) -> None:
    server, addr = start_relay(**LT_OPTIONS, allow_loopback_peers=True, datapath=datapath)
    assert (server.datapath is not None) == (datapath == "c")
    with _client(addr) as client:
        relayed = client.allocate()
        assert_success(client.channel_bind(CH, LOOPBACK_IP, _addr(peer)[1]))

        to_peer = [b"c2p %03d " % i + os.urandom(i % 50) for i in range(N)]
        sources: set[tuple[str, int]] = set()

        def at_peer() -> bytes | None:
            got = _recv(peer)
            if got is None:
                return None
            sources.add(got[1])
            return got[0]

        got = _exchange(lambda p: client.send_raw(ChannelData(CH, p).encode()), at_peer, to_peer)
        assert sorted(got) == sorted(to_peer)
        assert sources == {relayed}

        to_client = [b"p2c %03d " % i + os.urandom(i % 61) for i in range(N)]
        frames: list[ChannelData] = []

        def at_client() -> bytes | None:
            data = client.recv_raw(RECV_S)
            if data is None:
                return None
            frame = decode_channel_data(data, channel_max=CHANNEL_MAX_RFC5766)
            frames.append(frame)
            return frame.data

        got = _exchange(lambda p: peer.sendto(p, relayed), at_client, to_client)
        assert sorted(got) == sorted(to_client)
        assert {f.channel for f in frames} == {CH}

    assert wait_counter(server, "relayed_to_peer_packets", N) == N
    assert wait_counter(server, "relayed_to_client_packets", N) == N
    if datapath == "c":
        # the C loop took all but the first packet(s) of each direction
        assert _c_counter(server, "relayed_to_peer_packets") >= N - 10
        assert _c_counter(server, "relayed_to_client_packets") >= N - 10
        assert server.core is not None
        assert server.core.counters["relayed_to_peer_packets"] <= 10


# ---------------------------------------------------------------- Send indications


def test_send_indications_to_peer(
    start_relay: StartRelay, datapath: str, peer: socket.socket
) -> None:
    server, addr = start_relay(**LT_OPTIONS, allow_loopback_peers=True, datapath=datapath)
    with _client(addr) as client:
        relayed = client.allocate()
        assert_success(client.create_permission(LOOPBACK_IP, _addr(peer)[1]))
        payloads = [b"send %03d " % i + os.urandom(i % 37) for i in range(N)]

        def at_peer() -> bytes | None:
            got = _recv(peer)
            assert got is None or got[1] == relayed, got
            return None if got is None else got[0]

        got = _exchange(lambda p: client.send_raw(_plain_send(_addr(peer), p)), at_peer, payloads)
        assert sorted(got) == sorted(payloads)
        fast = _c_counter(server, "relayed_to_peer_packets")
        if datapath == "c":
            assert fast >= N - 10

        # with FINGERPRINT the full path decides (and still relays), never the C loop
        for i in range(10):
            client.send_indication(LOOPBACK_IP, _addr(peer)[1], b"fingerprinted %d" % i)
        full = [_recv(peer) for _ in range(10)]
        assert sorted(g[0] for g in full if g) == sorted(b"fingerprinted %d" % i for i in range(10))
        assert _c_counter(server, "relayed_to_peer_packets") == fast
    assert wait_counter(server, "relayed_to_peer_packets", N + 10) == N + 10


# ---------------------------------------------------------------- deletion


def test_refresh_zero_drops_every_route(
    start_relay: StartRelay, datapath: str, peer: socket.socket
) -> None:
    server, addr = start_relay(**LT_OPTIONS, allow_loopback_peers=True, datapath=datapath)
    ports, dp = server.ports, server.datapath
    assert ports is not None
    with _client(addr) as client:
        relayed = client.allocate()
        relay_fd = ports.fd_of(relayed)
        assert relay_fd is not None
        assert_success(client.channel_bind(CH, LOOPBACK_IP, _addr(peer)[1]))
        # routes learned both ways, and Send-indication routes too
        for i in range(5):
            client.send_raw(ChannelData(CH, b"before %d" % i).encode())
            assert _recv(peer) is not None
            client.send_raw(_plain_send(_addr(peer), b"send before %d" % i))
            assert _recv(peer) is not None
            peer.sendto(b"reply %d" % i, relayed)
            assert client.recv_raw(RECV_S) is not None
        if dp is not None:
            assert len(_read(lambda: _relay_fd_routes(server, relay_fd))) == 2
            assert relayed in _read(lambda: dict(dp.peer_routes))

        assert_success(client.request(Method.REFRESH, Lifetime(0)))
        assert _read(lambda: ports.fd_of(relayed)) is None

        if dp is not None:
            assert _read(lambda: _relay_fd_routes(server, relay_fd)) == []
            assert relayed not in _read(lambda: dict(dp.peer_routes))
            assert relayed not in _read(lambda: dict(dp._client_entries))
        relayed_before = counter(server, "relayed_to_peer_packets")
        unbound_before = counter(server, "channel_unbound_dropped")
        no_alloc_before = counter(server, "send_no_allocation_dropped")
        for i in range(10):
            client.send_raw(ChannelData(CH, b"after %d" % i).encode())
            client.send_raw(_plain_send(_addr(peer), b"send after %d" % i))
        _silent(peer)
        assert wait_counter(server, "channel_unbound_dropped", unbound_before + 10) == (
            unbound_before + 10
        )
        assert wait_counter(server, "send_no_allocation_dropped", no_alloc_before + 10) == (
            no_alloc_before + 10
        )
        assert counter(server, "relayed_to_peer_packets") == relayed_before

        # the old relayed address is closed: a peer's datagram reaches nobody
        relayed_to_client = counter(server, "relayed_to_client_packets")
        for i in range(5):
            peer.sendto(b"too late %d" % i, relayed)
        assert client.recv_raw(QUIET_S) is None
        assert counter(server, "relayed_to_client_packets") == relayed_to_client


# ---------------------------------------------------------------- expiry

PERMISSION_S = 1.5


def test_permission_expiry_stops_the_fast_path(
    start_relay: StartRelay, datapath: str, peer: socket.socket
) -> None:
    server, addr = start_relay(
        **LT_OPTIONS,
        allow_loopback_peers=True,
        datapath=datapath,
        permission_lifetime=PERMISSION_S,
    )
    core, ports, dp = server.core, server.ports, server.datapath
    assert core is not None and ports is not None
    assert (dp is not None) == (datapath == "c")
    with _client(addr) as client:
        relayed = client.allocate()
        assert_success(client.channel_bind(CH, LOOPBACK_IP, _addr(peer)[1]))
        for i in range(5):
            client.send_raw(ChannelData(CH, b"before %d" % i).encode())
            assert _recv(peer) is not None
            client.send_raw(_plain_send(_addr(peer), b"send %d" % i))
            assert _recv(peer) is not None
            peer.sendto(b"reply %d" % i, relayed)
            assert client.recv_raw(RECV_S) is not None

        allocation = _read(lambda: dict(core.allocations.by_relay))[relayed]
        permission = allocation.permissions[LOOPBACK]
        binding = allocation.channels[CH]
        deadline = min(allocation.expires, permission, binding.expires)
        assert deadline == permission  # the short permission is what ends the routes
        if dp is not None:
            relay_fd = ports.fd_of(relayed)
            assert relay_fd is not None
            routes = _read(lambda: _relay_fd_routes(server, relay_fd))
            # the channel route and the Send route both stop at the core's deadline
            assert sorted(r[2] for _, r in routes) == [permission, permission]
            peer_routes = _read(lambda: dict(dp.peer_routes[relayed]))
            assert [r[2] for r in peer_routes.values()] == [deadline]

        time.sleep(max(0.0, permission - time.time()) + 0.2)
        fast_to_peer = _c_counter(server, "relayed_to_peer_packets")
        fast_to_client = _c_counter(server, "relayed_to_client_packets")
        relayed_to_peer = counter(server, "relayed_to_peer_packets")
        dropped = counter(server, "send_no_permission_dropped")
        peer_dropped = counter(server, "peer_no_permission_dropped")
        for i in range(10):
            client.send_raw(ChannelData(CH, b"expired %d" % i).encode())
            client.send_raw(_plain_send(_addr(peer), b"expired send %d" % i))
            peer.sendto(b"expired reply %d" % i, relayed)
        _silent(peer)
        assert client.recv_raw(0.1) is None
        assert wait_counter(server, "send_no_permission_dropped", dropped + 20) == dropped + 20
        assert wait_counter(server, "peer_no_permission_dropped", peer_dropped + 10) == (
            peer_dropped + 10
        )
        assert counter(server, "relayed_to_peer_packets") == relayed_to_peer
        assert _c_counter(server, "relayed_to_peer_packets") == fast_to_peer
        assert _c_counter(server, "relayed_to_client_packets") == fast_to_client


CHANNEL_S = 1.0


def test_channel_rebound_to_another_peer_after_expiry(
    start_relay: StartRelay,
    datapath: str,
    peer: socket.socket,
    peer2: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # RFC 8656 §12: once a binding expired (and its hold, shortened here), the number may be
    # bound to another peer; frames on it must then reach the new peer only.
    monkeypatch.setattr(allocation_module, "CHANNEL_REBIND_HOLD", 0.0)
    _, addr = start_relay(
        **LT_OPTIONS, allow_loopback_peers=True, datapath=datapath, channel_lifetime=CHANNEL_S
    )
    with _client(addr) as client:
        client.allocate()
        assert_success(client.channel_bind(CH, LOOPBACK_IP, _addr(peer)[1]))
        for i in range(3):
            client.send_raw(ChannelData(CH, b"to first %d" % i).encode())
            got = _recv(peer)
            assert got is not None and got[0] == b"to first %d" % i
        time.sleep(CHANNEL_S + 0.2)
        assert_success(client.channel_bind(CH, LOOPBACK_IP, _addr(peer2)[1]))
        # one at a time: the first takes the core's path (and relearns the route), the
        # rest the learned route
        got2 = []
        for i in range(5):
            client.send_raw(ChannelData(CH, b"to second %d" % i).encode())
            got = _recv(peer2, 0.5)
            got2.append(got[0] if got else None)
        _silent(peer, 0.2)
        assert got2 == [b"to second %d" % i for i in range(5)]


# ---------------------------------------------------------------- refused peers


def test_denied_peer_learns_no_route(
    start_relay: StartRelay, datapath: str, peer: socket.socket
) -> None:
    server, addr = start_relay(**LT_OPTIONS, allow_loopback_peers=False, datapath=datapath)
    with _client(addr) as client:
        relayed = client.allocate()
        assert error_code(client.create_permission(LOOPBACK_IP, _addr(peer)[1])) == 403
        assert error_code(client.channel_bind(CH, LOOPBACK_IP, _addr(peer)[1])) == 403
        for i in range(50):
            client.send_raw(_plain_send(_addr(peer), b"refused %d" % i))
            client.send_raw(ChannelData(CH, b"refused frame %d" % i).encode())
        peer.sendto(b"unsolicited", relayed)
        _silent(peer)
        assert client.recv_raw(0.1) is None
        assert wait_counter(server, "send_refused_dropped", 50) == 50
        assert wait_counter(server, "channel_unbound_dropped", 50) == 50
        assert wait_counter(server, "peer_no_permission_dropped", 1) == 1
    assert counter(server, "relayed_to_peer_packets") == 0
    assert counter(server, "relayed_to_client_packets") == 0
    for listener in list(server.udp.values()):
        assert listener.channel_routes == {} and listener.send_routes == {}
    if datapath == "c":
        assert server.datapath is not None
        assert server.datapath.peer_routes == {}
        assert server.datapath.counters()["relayed_to_peer_packets"] == 0


# ---------------------------------------------------------------- TCP clients

TCP_N = 50


def test_tcp_client_channel_data(
    start_relay: StartRelay, datapath: str, peer: socket.socket
) -> None:
    server, _ = start_relay(**LT_OPTIONS, allow_loopback_peers=True, no_tls=True, datapath=datapath)
    tcp = server.addresses("tcp")[0]
    with StreamTurnClient(tcp, USER, PASSWORD) as client:
        relayed = client.allocate()
        assert_success(
            client.request(
                Method.CHANNEL_BIND,
                ChannelNumber(CH),
                XorPeerAddress(LOOPBACK_IP, _addr(peer)[1]),
            )
        )
        to_peer = [b"tcp %02d " % i + os.urandom(i % 7) for i in range(TCP_N)]
        for payload in to_peer:
            client.send_raw(ChannelData(CH, payload).encode(pad=True))
        got = [_recv(peer) for _ in to_peer]
        assert [g[0] if g else None for g in got] == to_peer
        assert {g[1] for g in got if g} == {relayed}

        to_client = [b"back %02d " % i + os.urandom(i % 5) for i in range(TCP_N)]
        for payload in to_client:
            peer.sendto(payload, relayed)
        frames = [client.recv_frame(RECV_S) for _ in to_client]
        decoded = [decode_channel_data(f, channel_max=CHANNEL_MAX_RFC5766) for f in frames if f]
        # odd lengths: the framer stays in step only if every frame was padded (§12.5)
        assert [(f.channel, f.data) for f in decoded] == [(CH, p) for p in to_client]

    assert wait_counter(server, "relayed_to_peer_packets", TCP_N) == TCP_N
    assert wait_counter(server, "relayed_to_client_packets", TCP_N) == TCP_N
    # streams are the Python path's: the C loop learned nothing and relayed nothing
    assert _c_counter(server, "relayed_to_peer_packets") == 0
    assert _c_counter(server, "relayed_to_client_packets") == 0
    if datapath == "c":
        assert server.datapath is not None and server.datapath.peer_routes == {}
