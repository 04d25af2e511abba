"""The relay's C packet loop and its shell, without a relay: relay/server/datapath.py,
relay/server/_datapath.c and the deadlines ``TurnCore`` gives the routes.

The Forwarder runs on plain UDP sockets bound to 127.0.0.1 (no root); every wait is bounded.
"""

from __future__ import annotations

import collections
import ipaddress
import os
import random
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

from relay.server import datapath
from relay.server.datapath import Datapath, address_key, resolve, xor_peer_value
from relay.stun.attributes import (
    Attribute,
    ChannelNumber,
    Data,
    DontFragment,
    Lifetime,
    Nonce,
    RawAttribute,
    Realm,
    RequestedTransport,
    Software,
    Username,
    XorPeerAddress,
    XorRelayedAddress,
)
from relay.stun.channeldata import ChannelData
from relay.stun.constants import MessageClass, Method
from relay.stun.integrity import long_term_key
from relay.stun.message import Message, decode_message, encode_message
from relay.turn.addresses import Address, FiveTuple, Transport
from relay.turn.auth import StaticUsers
from relay.turn.config import TurnConfig
from relay.turn.core import SEND_SHAPE, TurnCore
from relay.turn.effects import SendToClient
from relay.turn.ports import MemoryRelayPorts, PortPool

SHAPE = (SEND_SHAPE.peer_type, SEND_SHAPE.data_type, SEND_SHAPE.ignored_types)

LOOPBACK = "127.0.0.1"
Routes = dict[bytes, Any]  # a route table as the C loop reads it (values may be ill-formed)
WAIT_S = 1.0  # a datagram on loopback that should arrive
QUIET_S = 0.05  # how long "nothing arrived" is watched after the C call has returned
CH = 0x4000


@pytest.fixture
def c_module() -> ModuleType:
    if datapath.C_MODULE is None:
        pytest.skip(
            "relay/server/_datapath is not built "
            "(python setup.py build_ext --inplace): the C loop cannot be tested"
        )
    return datapath.C_MODULE


# ------------------------------------------------------------------ resolve


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(datapath.ENV, raising=False)
    return monkeypatch


@pytest.mark.parametrize("built", [True, False], ids=["built", "not-built"])
def test_resolve_auto_picks_c_when_built(no_env: pytest.MonkeyPatch, built: bool) -> None:
    no_env.setattr(datapath, "C_MODULE", object() if built else None)
    assert resolve("auto") == ("c" if built else "python")


def test_resolve_auto_follows_this_build(no_env: pytest.MonkeyPatch) -> None:
    assert resolve("auto") == ("python" if datapath.C_MODULE is None else "c")


@pytest.mark.parametrize("built", [True, False], ids=["built", "not-built"])
def test_resolve_python_always_python(no_env: pytest.MonkeyPatch, built: bool) -> None:
    no_env.setattr(datapath, "C_MODULE", object() if built else None)
    assert resolve("python") == "python"


def test_resolve_c_when_not_built_raises(no_env: pytest.MonkeyPatch) -> None:
    no_env.setattr(datapath, "C_MODULE", None)
    with pytest.raises(ValueError, match="not built"):
        resolve("c")


def test_resolve_c_when_built(no_env: pytest.MonkeyPatch) -> None:
    no_env.setattr(datapath, "C_MODULE", object())
    assert resolve("c") == "c"


def test_resolve_env_overrides_option(no_env: pytest.MonkeyPatch) -> None:
    no_env.setattr(datapath, "C_MODULE", object())
    no_env.setenv(datapath.ENV, "python")
    assert resolve("c") == "python"
    assert resolve("auto") == "python"
    no_env.setenv(datapath.ENV, "c")
    assert resolve("python") == "c"
    no_env.setattr(datapath, "C_MODULE", None)
    with pytest.raises(ValueError, match="not built"):
        resolve("python")  # the environment asked for c


def test_resolve_empty_env_counts_as_unset(no_env: pytest.MonkeyPatch) -> None:
    no_env.setattr(datapath, "C_MODULE", object())
    no_env.setenv(datapath.ENV, "")
    assert resolve("python") == "python"
    assert resolve("auto") == "c"


@pytest.mark.parametrize("bad", ["C", "fast", "pypy", " c"])
def test_resolve_bad_value_raises(no_env: pytest.MonkeyPatch, bad: str) -> None:
    with pytest.raises(ValueError, match="datapath must be one of"):
        resolve(bad)
    no_env.setenv(datapath.ENV, bad)
    with pytest.raises(ValueError, match="datapath must be one of"):
        resolve("auto")


# ------------------------------------------------------------------ keys


def _attribute_value(message: bytes, attr_type: int) -> bytes:
    """The value of the first attribute of that type, walking the encoded message by hand."""
    offset = 20
    while offset + 4 <= len(message):
        kind, length = struct.unpack_from("!HH", message, offset)
        if kind == attr_type:
            return message[offset + 4 : offset + 4 + length]
        offset += 4 + length + (-length % 4)
    raise AssertionError(f"no attribute 0x{attr_type:04x} in {message.hex()}")


@pytest.mark.parametrize(
    "peer",
    [
        ("127.0.0.1", 5000),
        ("198.18.2.20", 50000),
        ("0.0.0.0", 0),
        ("255.255.255.255", 65535),
        ("33.18.164.66", 0x2112),  # XORs to 0.0.0.0:0
        ("10.0.0.1", 1),
    ],
)
def test_xor_peer_value_matches_codec(peer: Address) -> None:
    msg = Message.indication(
        Method.SEND,
        os.urandom(12),
        XorPeerAddress(ipaddress.ip_address(peer[0]), peer[1]),
        Data(b"x"),
    )
    encoded = encode_message(msg)
    value = _attribute_value(encoded, 0x0012)
    assert len(value) == 8
    assert xor_peer_value(peer) == value


def test_address_key_ipv4() -> None:
    assert address_key("127.0.0.1", 0x1234) == b"\x7f\x00\x00\x01\x12\x34"
    assert address_key("198.18.1.10", 65535) == bytes([198, 18, 1, 10, 0xFF, 0xFF])


def test_address_key_ipv6() -> None:
    key = address_key("2001:db8::5", 3478)
    assert len(key) == 18
    assert key == ipaddress.IPv6Address("2001:db8::5").packed + (3478).to_bytes(2, "big")
    assert address_key("::1", 1) == bytes(15) + b"\x01\x00\x01"


# ------------------------------------------------------------------ sockaddr (C)


def test_sockaddr_ipv4_layout(c_module: ModuleType) -> None:
    raw = c_module.sockaddr("192.0.2.33", 0x1F90)
    assert len(raw) == 16
    (family,) = struct.unpack_from("=H", raw, 0)  # sa_family_t, host order
    assert family == socket.AF_INET
    assert raw[2:4] == b"\x1f\x90"  # network order
    assert raw[4:8] == bytes([192, 0, 2, 33])
    assert raw[8:] == bytes(8)


def test_sockaddr_ipv6_layout(c_module: ModuleType) -> None:
    raw = c_module.sockaddr("2001:db8::7", 443)
    assert len(raw) == 28
    (family,) = struct.unpack_from("=H", raw, 0)
    assert family == socket.AF_INET6
    assert raw[2:4] == (443).to_bytes(2, "big")
    assert raw[4:8] == bytes(4)  # flowinfo
    assert raw[8:24] == ipaddress.IPv6Address("2001:db8::7").packed
    assert raw[24:28] == bytes(4)  # scope id


@pytest.mark.parametrize("port", [0, 1, 65535])
def test_sockaddr_port_bounds_accepted(c_module: ModuleType, port: int) -> None:
    assert c_module.sockaddr("127.0.0.1", port)[2:4] == port.to_bytes(2, "big")


@pytest.mark.parametrize(
    "host", ["", "nope", "1.2.3", "256.1.1.1", "::zz", "1::2::3", "fe80::1%lo"]
)
def test_sockaddr_bad_host_raises(c_module: ModuleType, host: str) -> None:
    with pytest.raises(ValueError):
        c_module.sockaddr(host, 80)


@pytest.mark.parametrize("port", [-1, 65536, 1 << 20])
def test_sockaddr_port_out_of_range_raises(c_module: ModuleType, port: int) -> None:
    with pytest.raises(ValueError, match="port out of range"):
        c_module.sockaddr("127.0.0.1", port)


def test_forwarder_rejects_bad_channel_max(c_module: ModuleType) -> None:
    for channel_max in (0x3FFF, 0x8000):
        with pytest.raises(ValueError, match="channel_max"):
            c_module.Forwarder(65535, channel_max, *SHAPE)


def test_forwarder_counters_start_at_zero(c_module: ModuleType) -> None:
    counters = c_module.Forwarder(65535, 0x7FFF, *SHAPE).counters()
    assert counters == {
        "relayed_to_peer_packets": 0,
        "relayed_to_peer_bytes": 0,
        "relayed_to_client_packets": 0,
        "relayed_to_client_bytes": 0,
        "peer_send_dropped": 0,
        "client_send_dropped": 0,
        "datapath_recv_errors": 0,
    }


# ------------------------------------------------------------------ Datapath route tables

RELAY_A = ("198.18.0.2", 50000)
RELAY_B = ("198.18.0.2", 50001)
PEER = ("198.18.2.20", 5000)
OTHER_PEER = ("198.18.2.21", 6000)


def _client_key(i: int) -> bytes:
    return address_key(f"198.18.1.{i % 250}", 40000 + i) + CH.to_bytes(2, "big")


def test_learn_to_peer_adds_route_and_reverse_index(c_module: ModuleType) -> None:
    dp = Datapath(65535, 0x7FFF)
    table: datapath.ToPeerTable = {}
    key = _client_key(1)
    dp.learn_to_peer(table, key, RELAY_A, 7, PEER, 1000.0)
    assert table == {key: (7, c_module.sockaddr(*PEER), 1000.0)}
    assert dp._client_entries == {RELAY_A: [(table, key)]}


def test_learn_to_peer_again_same_fd_only_moves_deadline(c_module: ModuleType) -> None:
    dp = Datapath(65535, 0x7FFF)
    table: datapath.ToPeerTable = {}
    key = _client_key(1)
    dp.learn_to_peer(table, key, RELAY_A, 7, PEER, 1000.0)
    dp.learn_to_peer(table, key, RELAY_A, 7, PEER, 2000.0)
    assert table == {key: (7, c_module.sockaddr(*PEER), 2000.0)}
    assert dp._client_entries == {RELAY_A: [(table, key)]}  # no second index entry


def test_learn_to_peer_other_fd_replaces_route(c_module: ModuleType) -> None:
    dp = Datapath(65535, 0x7FFF)
    table: datapath.ToPeerTable = {}
    key = _client_key(1)
    dp.learn_to_peer(table, key, RELAY_A, 7, PEER, 1000.0)
    dp.learn_to_peer(table, key, RELAY_B, 8, OTHER_PEER, 500.0)
    assert table == {key: (8, c_module.sockaddr(*OTHER_PEER), 500.0)}
    dp.forget_relay(RELAY_B)
    assert table == {}


def test_learn_to_peer_same_fd_new_peer_takes_new_peer(c_module: ModuleType) -> None:
    dp = Datapath(65535, 0x7FFF)
    table: datapath.ToPeerTable = {}
    key = _client_key(1)  # client + channel number: the peer is not part of the key
    dp.learn_to_peer(table, key, RELAY_A, 7, PEER, 1000.0)
    dp.learn_to_peer(table, key, RELAY_A, 7, OTHER_PEER, 2000.0)
    assert table[key] == (7, c_module.sockaddr(*OTHER_PEER), 2000.0)


def test_learn_to_client_stores_listener_route(c_module: ModuleType) -> None:
    dp = Datapath(65535, 0x7FFF)
    client = ("198.18.1.10", 40000)
    dp.learn_to_client(RELAY_A, PEER, 5, client, 0x4001, 900.0)
    assert dp.peer_routes == {
        RELAY_A: {address_key(*PEER): (5, c_module.sockaddr(*client), 900.0, 0x4001)}
    }
    dp.learn_to_client(RELAY_A, PEER, 5, client, 0x4002, 950.0)  # rebound: overwritten
    assert dp.peer_routes[RELAY_A][address_key(*PEER)] == (
        5,
        c_module.sockaddr(*client),
        950.0,
        0x4002,
    )


def test_forget_relay_drops_client_entries_and_peer_table(c_module: ModuleType) -> None:
    dp = Datapath(65535, 0x7FFF)
    channels: datapath.ToPeerTable = {}
    sends: datapath.ToPeerTable = {}
    other_listener: datapath.ToPeerTable = {}
    a1, a2, a3, b1 = (_client_key(i) for i in range(4))
    dp.learn_to_peer(channels, a1, RELAY_A, 7, PEER, 1000.0)
    dp.learn_to_peer(sends, a2, RELAY_A, 7, PEER, 1000.0)
    dp.learn_to_peer(other_listener, a3, RELAY_A, 7, PEER, 1000.0)
    dp.learn_to_peer(channels, b1, RELAY_B, 8, OTHER_PEER, 1000.0)
    dp.learn_to_client(RELAY_A, PEER, 5, ("198.18.1.10", 40000), CH, 1000.0)
    dp.learn_to_client(RELAY_B, OTHER_PEER, 5, ("198.18.1.11", 40000), CH, 1000.0)

    dp.forget_relay(RELAY_A)
    assert channels == {b1: (8, c_module.sockaddr(*OTHER_PEER), 1000.0)}
    assert sends == {}
    assert other_listener == {}
    assert RELAY_A not in dp.peer_routes
    assert RELAY_B in dp.peer_routes
    assert RELAY_A not in dp._client_entries

    dp.forget_relay(RELAY_A)  # twice: nothing left, no error
    dp.forget_relay(RELAY_B)
    assert channels == {} and dp.peer_routes == {} and dp._client_entries == {}


def test_route_cap_stops_learning(c_module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datapath, "MAX_ROUTES_PER_RELAY", 3)
    dp = Datapath(65535, 0x7FFF)
    table: datapath.ToPeerTable = {}
    keys = [_client_key(i) for i in range(6)]
    for key in keys:
        dp.learn_to_peer(table, key, RELAY_A, 7, PEER, 1000.0)
    assert set(table) == set(keys[:3])
    assert len(dp._client_entries[RELAY_A]) == 3
    # at the cap a known route still moves its deadline, and peer routes are refused too
    dp.learn_to_peer(table, keys[0], RELAY_A, 7, PEER, 5000.0)
    assert table[keys[0]][2] == 5000.0
    dp.learn_to_client(RELAY_A, PEER, 5, ("198.18.1.10", 40000), CH, 1000.0)
    assert dp.peer_routes.get(RELAY_A, {}) == {}
    # the cap is per relayed address
    dp.learn_to_peer(table, keys[5], RELAY_B, 8, PEER, 1000.0)
    dp.learn_to_client(RELAY_B, PEER, 5, ("198.18.1.10", 40000), CH, 1000.0)
    assert keys[5] in table and address_key(*PEER) in dp.peer_routes[RELAY_B]
    # forgetting frees the room
    dp.forget_relay(RELAY_A)
    dp.learn_to_peer(table, keys[4], RELAY_A, 7, PEER, 1000.0)
    assert keys[4] in table


def test_route_cap_counts_peer_routes(
    c_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datapath, "MAX_ROUTES_PER_RELAY", 2)
    dp = Datapath(65535, 0x7FFF)
    table: datapath.ToPeerTable = {}
    dp.learn_to_client(RELAY_A, PEER, 5, ("198.18.1.10", 40000), CH, 1000.0)
    dp.learn_to_client(RELAY_A, OTHER_PEER, 5, ("198.18.1.10", 40000), CH + 1, 1000.0)
    dp.learn_to_peer(table, _client_key(0), RELAY_A, 7, PEER, 1000.0)
    assert table == {}
    assert len(dp.peer_routes[RELAY_A]) == 2


# ------------------------------------------------------------------ TurnCore deadlines

T0 = 1_800_000_000.0
CORE_CLIENT = FiveTuple(("198.18.1.10", 4000), ("198.18.0.2", 3478), Transport.UDP)


class CoreClient:
    """A core built as in bench/core.py ``_core()``, and one authenticated client of it."""

    def __init__(self, **config: Any) -> None:
        cfg = TurnConfig(realm="bench", authenticator=StaticUsers((("u", "p"),)), **config)
        ports = MemoryRelayPorts(("198.18.0.2",), PortPool(1024, 65535, random.Random(0)))
        self.core = TurnCore(cfg, ports)
        self.key = long_term_key("u", "bench", "p")

    def request(self, now: float, method: int, *attrs: Attribute) -> Message:
        nonce = self.core.config.nonces.issue(now, CORE_CLIENT.client[0])
        creds = (Username("u"), Realm("bench"), Nonce(nonce))
        msg = Message.request(method, os.urandom(12), *attrs, *creds)
        effects = self.core.handle_client(now, CORE_CLIENT, encode_message(msg, key=self.key))
        replies = [e for e in effects if isinstance(e, SendToClient)]
        assert len(replies) == 1, effects
        reply = decode_message(replies[0].data)
        assert reply.msg_class is MessageClass.SUCCESS, reply
        return reply

    def allocate(self, now: float) -> Address:
        relayed = self.request(now, Method.ALLOCATE, RequestedTransport(17)).get(XorRelayedAddress)
        assert relayed is not None
        return (str(relayed.ip), relayed.port)

    def permit(self, now: float, peer: Address) -> None:
        self.request(now, Method.CREATE_PERMISSION, _peer_attr(peer))

    def bind(self, now: float, number: int, peer: Address) -> None:
        self.request(now, Method.CHANNEL_BIND, ChannelNumber(number), _peer_attr(peer))


def _peer_attr(peer: Address) -> XorPeerAddress:
    return XorPeerAddress(ipaddress.ip_address(peer[0]), peer[1])


def test_route_deadline_zero_without_allocation() -> None:
    core = CoreClient().core
    assert core.route_deadline(CORE_CLIENT, PEER, None) == 0.0
    assert core.route_deadline(CORE_CLIENT, PEER, CH) == 0.0
    assert core.peer_route_deadline(RELAY_A, PEER) == 0.0


def test_route_deadline_zero_without_permission_or_binding() -> None:
    client = CoreClient()
    relay = client.allocate(T0)
    core = client.core
    assert core.route_deadline(CORE_CLIENT, PEER, None) == 0.0
    assert core.route_deadline(CORE_CLIENT, PEER, CH) == 0.0
    assert core.peer_route_deadline(relay, PEER) == 0.0
    # a permission alone: Send indications have a route, channels and peers' ChannelData not
    client.permit(T0 + 10, PEER)
    assert core.route_deadline(CORE_CLIENT, PEER, None) == T0 + 10 + 300
    assert core.route_deadline(CORE_CLIENT, PEER, CH) == 0.0
    assert core.peer_route_deadline(relay, PEER) == 0.0


@pytest.mark.parametrize(
    ("permission_lifetime", "expected"),
    [(300.0, T0 + 10 + 300), (1000.0, T0 + 600)],
    ids=["permission-first", "allocation-first"],
)
def test_send_route_deadline_is_earliest_of_allocation_and_permission(
    permission_lifetime: float, expected: float
) -> None:
    client = CoreClient(permission_lifetime=permission_lifetime)
    client.allocate(T0)  # expires T0 + 600
    client.permit(T0 + 10, PEER)
    assert client.core.route_deadline(CORE_CLIENT, PEER, None) == expected
    # the permission is per IP (RFC 8656 §9): any port of that host
    assert client.core.route_deadline(CORE_CLIENT, (PEER[0], 1), None) == expected
    assert client.core.route_deadline(CORE_CLIENT, OTHER_PEER, None) == 0.0


@pytest.mark.parametrize(
    ("permission_lifetime", "channel_lifetime", "expected"),
    [
        (300.0, 600.0, T0 + 10 + 300),
        (1000.0, 100.0, T0 + 10 + 100),
        (1000.0, 1000.0, T0 + 600),
    ],
    ids=["permission-first", "channel-first", "allocation-first"],
)
def test_channel_route_deadline_is_earliest_of_three(
    permission_lifetime: float, channel_lifetime: float, expected: float
) -> None:
    client = CoreClient(permission_lifetime=permission_lifetime, channel_lifetime=channel_lifetime)
    relay = client.allocate(T0)  # expires T0 + 600
    client.bind(T0 + 10, CH, PEER)  # installs the permission too
    core = client.core
    allocation = core.allocations.by_five_tuple[CORE_CLIENT]
    binding = allocation.channels[CH]
    assert expected == min(allocation.expires, allocation.permissions[PEER[0]], binding.expires)
    assert core.route_deadline(CORE_CLIENT, PEER, CH) == expected
    assert core.peer_route_deadline(relay, PEER) == expected
    assert core.route_deadline(CORE_CLIENT, PEER, None) == min(
        allocation.expires, allocation.permissions[PEER[0]]
    )


def test_channel_bound_to_another_peer_is_no_route() -> None:
    client = CoreClient()
    relay = client.allocate(T0)
    client.bind(T0 + 1, CH, PEER)
    client.permit(T0 + 1, OTHER_PEER)
    core = client.core
    assert core.route_deadline(CORE_CLIENT, OTHER_PEER, CH) == 0.0
    assert core.route_deadline(CORE_CLIENT, (PEER[0], PEER[1] + 1), CH) == 0.0  # other port
    assert core.route_deadline(CORE_CLIENT, PEER, CH + 1) == 0.0  # unbound number
    assert core.peer_route_deadline(relay, OTHER_PEER) == 0.0
    assert core.route_deadline(CORE_CLIENT, OTHER_PEER, None) == T0 + 1 + 300
    assert core.peer_route_deadline(("198.18.0.99", relay[1]), PEER) == 0.0  # unknown relay


def test_route_deadline_zero_after_refresh_zero() -> None:
    client = CoreClient()
    relay = client.allocate(T0)
    client.bind(T0 + 1, CH, PEER)
    assert client.core.route_deadline(CORE_CLIENT, PEER, CH) > 0.0
    client.request(T0 + 2, Method.REFRESH, Lifetime(0))
    assert client.core.route_deadline(CORE_CLIENT, PEER, CH) == 0.0
    assert client.core.route_deadline(CORE_CLIENT, PEER, None) == 0.0
    assert client.core.peer_route_deadline(relay, PEER) == 0.0


# ------------------------------------------------------------------ the C Forwarder


@dataclass
class Sockets:
    """A client, the listener the C loop reads, two relayed sockets and two peers."""

    client: socket.socket
    listener: socket.socket
    relay: socket.socket
    relay2: socket.socket
    peer: socket.socket
    peer2: socket.socket

    def addr(self, name: str) -> Address:
        host, port = getattr(self, name).getsockname()[:2]
        return (host, port)


@pytest.fixture
def udp() -> Iterator[Sockets]:
    socks: list[socket.socket] = []
    try:
        for _ in range(6):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.bind((LOOPBACK, 0))
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        yield Sockets(*socks)
    finally:
        for sock in socks:
            sock.close()


def _send(src: socket.socket, dst: socket.socket, datagrams: list[bytes]) -> None:
    """Send, then wait until the destination has the first one queued (loopback)."""
    target = dst.getsockname()
    for data in datagrams:
        src.sendto(data, target)
    ready, _, _ = select.select([dst], [], [], WAIT_S)
    assert ready, "datagram not queued on loopback"
    time.sleep(0.005)


def _drain(sock: socket.socket, expect: int = 0) -> list[tuple[bytes, Address]]:
    """Everything queued on sock: waits up to WAIT_S for ``expect`` datagrams, then QUIET_S more
    for any extra."""
    got: list[tuple[bytes, Address]] = []
    deadline = time.monotonic() + WAIT_S
    while True:
        wait = (deadline - time.monotonic()) if len(got) < expect else QUIET_S
        ready, _, _ = select.select([sock], [], [], max(0.0, wait))
        if not ready:
            if len(got) >= expect or time.monotonic() >= deadline:
                return got
            continue
        while True:
            try:
                data, addr = sock.recvfrom(70000)
            except BlockingIOError:
                break
            got.append((data, (addr[0], addr[1])))


def _channel_routes(s: Sockets, number: int = CH, deadline: float | None = None) -> Routes:
    assert datapath.C_MODULE is not None
    key = address_key(*s.addr("client")) + number.to_bytes(2, "big")
    when = time.time() + 60 if deadline is None else deadline
    return {key: (s.relay.fileno(), datapath.C_MODULE.sockaddr(*s.addr("peer")), when)}


def _send_routes(s: Sockets, peer: Address | None = None, deadline: float | None = None) -> Routes:
    assert datapath.C_MODULE is not None
    peer = peer or s.addr("peer")
    key = address_key(*s.addr("client")) + xor_peer_value(peer)
    when = time.time() + 60 if deadline is None else deadline
    return {key: (s.relay.fileno(), datapath.C_MODULE.sockaddr(*s.addr("peer")), when)}


def _peer_routes(s: Sockets, number: int = 0x4001, deadline: float | None = None) -> Routes:
    assert datapath.C_MODULE is not None
    when = time.time() + 60 if deadline is None else deadline
    route = (s.listener.fileno(), datapath.C_MODULE.sockaddr(*s.addr("client")), when, number)
    return {address_key(*s.addr("peer")): route}


def _send_indication(peer: Address, payload: bytes, *extra: Attribute, **encode: Any) -> bytes:
    msg = Message.indication(Method.SEND, os.urandom(12), _peer_attr(peer), Data(payload), *extra)
    return encode_message(msg, **encode)


def _from_clients(
    fwd: Any, s: Sockets, channels: Routes, sends: Routes, n: int = 64
) -> list[tuple[bytes, Address]]:
    rest: list[tuple[bytes, Address]] = fwd.from_clients(s.listener.fileno(), channels, sends, n)
    return rest


def test_forwarder_channel_data_forwarded_padding_stripped(
    c_module: ModuleType, udp: Sockets
) -> None:
    fwd = c_module.Forwarder(65535, 0x7FFF, *SHAPE)
    frames = [
        ChannelData(CH, b"hello").encode() + b"\x00\x00\x00",  # padded as over a stream
        ChannelData(CH, b"exact").encode(),
        ChannelData(CH, b"").encode(),
        ChannelData(CH, b"trailing junk").encode() + b"\xff" * 40,
    ]
    _send(udp.client, udp.listener, frames)
    assert _from_clients(fwd, udp, _channel_routes(udp), {}) == []
    got = _drain(udp.peer, expect=4)
    relay = udp.addr("relay")
    assert got == [(b"hello", relay), (b"exact", relay), (b"", relay), (b"trailing junk", relay)]
    counters = fwd.counters()
    assert counters["relayed_to_peer_packets"] == 4
    assert counters["relayed_to_peer_bytes"] == 5 + 5 + 0 + 13
    assert counters["relayed_to_client_packets"] == 0
    assert counters["peer_send_dropped"] == 0


CHANNEL_MISSES = {
    "expired": (CH, -1.0, ChannelData(CH, b"late").encode()),
    "unknown-channel": (CH, 60.0, ChannelData(CH + 1, b"other").encode()),
    "above-channel-max": (0x5000, 60.0, ChannelData(0x5000, b"rfc5766").encode()),
    "length-beyond-datagram": (CH, 60.0, b"\x40\x00\x00\x0aabc"),
    "length-one-beyond": (CH, 60.0, b"\x40\x00\x00\x04abc"),
    "three-bytes": (CH, 60.0, b"\x40\x00\x00"),
    "one-byte": (CH, 60.0, b"\x40"),
    "non-stun": (CH, 60.0, b"\xff" * 32),
    "stun-binding": (CH, 60.0, encode_message(Message.request(Method.BINDING, bytes(12)))),
    "empty": (CH, 60.0, b""),
}


@pytest.mark.parametrize("case", list(CHANNEL_MISSES))
def test_forwarder_channel_data_miss_comes_back(
    c_module: ModuleType, udp: Sockets, case: str
) -> None:
    number, ttl, frame = CHANNEL_MISSES[case]
    fwd = c_module.Forwarder(65535, 0x4FFF, *SHAPE)  # RFC 8656 channel_max
    routes = _channel_routes(udp, number, time.time() + ttl)
    _send(udp.client, udp.listener, [frame])
    assert _from_clients(fwd, udp, routes, {}) == [(frame, udp.addr("client"))]
    assert _drain(udp.peer) == []
    assert fwd.counters()["relayed_to_peer_packets"] == 0


SEND_FORWARDED = {
    "plain": (b"payload", ()),
    "unpadded-payload": (b"12345", ()),
    "empty-payload": (b"", ()),
    "software": (b"with software", (Software("client 1.0"),)),
    "dont-fragment": (b"with DF", (DontFragment(),)),
}


@pytest.mark.parametrize("case", list(SEND_FORWARDED))
def test_forwarder_plain_send_indication_forwarded(
    c_module: ModuleType, udp: Sockets, case: str
) -> None:
    payload, extra = SEND_FORWARDED[case]
    fwd = c_module.Forwarder(65535, 0x7FFF, *SHAPE)
    datagram = _send_indication(udp.addr("peer"), payload, *extra)
    _send(udp.client, udp.listener, [datagram])
    assert _from_clients(fwd, udp, {}, _send_routes(udp)) == []
    assert _drain(udp.peer, expect=1) == [(payload, udp.addr("relay"))]
    assert fwd.counters()["relayed_to_peer_packets"] == 1
    assert fwd.counters()["relayed_to_peer_bytes"] == len(payload)


def test_forwarder_send_indication_software_first_forwarded(
    c_module: ModuleType, udp: Sockets
) -> None:
    msg = Message.indication(
        Method.SEND,
        os.urandom(12),
        Software("x"),
        _peer_attr(udp.addr("peer")),
        Data(b"software first"),
    )
    _send(udp.client, udp.listener, [encode_message(msg)])
    fwd = c_module.Forwarder(65535, 0x7FFF, *SHAPE)
    assert _from_clients(fwd, udp, {}, _send_routes(udp)) == []
    assert _drain(udp.peer, expect=1) == [(b"software first", udp.addr("relay"))]


def test_forwarder_send_shape_comes_from_the_core(c_module: ModuleType, udp: Sockets) -> None:
    """The C loop walks the shape it was given (relay.turn.core.SendShape), not one of its own:
    with SOFTWARE not among the ignored types, a Send carrying it goes to the Python path."""
    strict = c_module.Forwarder(65535, 0x7FFF, SEND_SHAPE.peer_type, SEND_SHAPE.data_type, ())
    datagram = _send_indication(udp.addr("peer"), b"x", Software("client 1.0"))
    _send(udp.client, udp.listener, [datagram])
    assert [d for d, _ in _from_clients(strict, udp, {}, _send_routes(udp))] == [datagram]
    with pytest.raises(ValueError, match="16-bit"):
        c_module.Forwarder(65535, 0x7FFF, SEND_SHAPE.peer_type, SEND_SHAPE.data_type, (1 << 16,))


def _send_misses(peer: Address) -> dict[str, bytes]:
    plain = _send_indication(peer, b"abcd")
    v6 = Message.indication(
        Method.SEND,
        os.urandom(12),
        XorPeerAddress(ipaddress.ip_address("::1"), peer[1]),
        Data(b"v6"),
    )
    no_data = Message.indication(Method.SEND, os.urandom(12), _peer_attr(peer))
    no_peer = Message.indication(Method.SEND, os.urandom(12), Data(b"nowhere"))
    reserved = bytearray(plain)  # the XOR-PEER-ADDRESS reserved byte set
    assert reserved[20:22] == b"\x00\x12"
    reserved[24] = 0x80
    return {
        "fingerprint": _send_indication(peer, b"abcd", fingerprint=True),
        "message-integrity": _send_indication(peer, b"abcd", key=b"k" * 16),
        "unknown-optional-attribute": _send_indication(peer, b"abcd", RawAttribute(0x8030, b"x")),
        "unknown-required-attribute": _send_indication(peer, b"abcd", RawAttribute(0x0030, b"")),
        "duplicate-data": _send_indication(peer, b"abcd", Data(b"again")),
        "duplicate-peer": _send_indication(peer, b"abcd", _peer_attr(peer)),
        "ipv6-peer": encode_message(v6),
        "no-data": encode_message(no_data),
        "no-peer": encode_message(no_peer),
        "other-port": _send_indication((peer[0], peer[1] ^ 1), b"abcd"),
        "reserved-byte": bytes(reserved),
        "wrong-cookie": plain[:4] + b"\x21\x12\xa4\x43" + plain[8:],
        "length-field-short": plain[:2] + (len(plain) - 24).to_bytes(2, "big") + plain[4:],
        "length-field-long": plain[:2] + (len(plain) - 16).to_bytes(2, "big") + plain[4:],
        "truncated": plain[:-2],
        "attribute-overrun": plain[:22] + b"\x00\xff" + plain[24:],
        "header-only": plain[:2] + b"\x00\x00" + plain[4:20],
        "nineteen-bytes": plain[:19],
        "send-request": b"\x00\x06" + plain[2:],  # Send method, request class
        "data-indication": b"\x00\x17" + plain[2:],
    }


@pytest.mark.parametrize("case", list(_send_misses(("127.0.0.1", 9))))
def test_forwarder_send_indication_miss_comes_back(
    c_module: ModuleType, udp: Sockets, case: str
) -> None:
    datagram = _send_misses(udp.addr("peer"))[case]
    fwd = c_module.Forwarder(65535, 0x7FFF, *SHAPE)
    _send(udp.client, udp.listener, [datagram])
    assert _from_clients(fwd, udp, {}, _send_routes(udp)) == [(datagram, udp.addr("client"))]
    assert _drain(udp.peer) == []
    assert fwd.counters()["relayed_to_peer_packets"] == 0


def test_forwarder_send_route_expired_comes_back(c_module: ModuleType, udp: Sockets) -> None:
    datagram = _send_indication(udp.addr("peer"), b"late")
    fwd = c_module.Forwarder(65535, 0x7FFF, *SHAPE)
    _send(udp.client, udp.listener, [datagram])
    routes = _send_routes(udp, deadline=time.time() - 0.001)
    assert _from_clients(fwd, udp, {}, routes) == [(datagram, udp.addr("client"))]
    assert _drain(udp.peer) == []


def test_forwarder_channel_route_does_not_take_send_indications(
    c_module: ModuleType, udp: Sockets
) -> None:
    # the two tables are separate: a live route in the wrong table lets nothing through
    datagram = _send_indication(udp.addr("peer"), b"abcd")
    frame = ChannelData(CH, b"abcd").encode()
    fwd = c_module.Forwarder(65535, 0x7FFF, *SHAPE)
    _send(udp.client, udp.listener, [datagram, frame])
    rest = _from_clients(fwd, udp, _send_routes(udp), _channel_routes(udp))  # tables swapped
    assert rest == [(datagram, udp.addr("client")), (frame, udp.addr("client"))]


def test_forwarder_from_peers_builds_channel_data(c_module: ModuleType, udp: Sockets) -> None:
    fwd = c_module.Forwarder(1000, 0x7FFF, *SHAPE)
    payloads = [b"hello", b"", b"x" * 1000, b"odd"]
    _send(udp.peer, udp.relay, payloads)
    assert fwd.from_peers(udp.relay.fileno(), _peer_routes(udp, 0x7ABC), 64) == []
    got = _drain(udp.client, expect=len(payloads))
    listener = udp.addr("listener")
    expected = [(b"\x7a\xbc" + len(p).to_bytes(2, "big") + p, listener) for p in payloads]
    assert got == expected  # UDP: no padding (RFC 8656 §12.5)
    counters = fwd.counters()
    assert counters["relayed_to_client_packets"] == 4
    assert counters["relayed_to_client_bytes"] == 5 + 0 + 1000 + 3
    assert counters["relayed_to_peer_packets"] == 0


PEER_MISSES = {
    "oversize": (0x4001, 60.0, b"y" * 1001),
    "expired": (0x4001, -1.0, b"late"),
    "channel-below-range": (0x3FFF, 60.0, b"low"),
    "channel-above-range": (0x8000, 60.0, b"high"),
    "channel-negative": (-1, 60.0, b"neg"),
    "channel-huge": (1 << 80, 60.0, b"huge"),
    "channel-not-int": ("0x4001", 60.0, b"str"),
}


@pytest.mark.parametrize("case", list(PEER_MISSES))
def test_forwarder_from_peers_miss_comes_back(
    c_module: ModuleType, udp: Sockets, case: str
) -> None:
    number, ttl, datagram = PEER_MISSES[case]
    fwd = c_module.Forwarder(1000, 0x7FFF, *SHAPE)
    routes = _peer_routes(udp, number, time.time() + ttl)  # type: ignore[arg-type]
    _send(udp.peer, udp.relay, [datagram])
    assert fwd.from_peers(udp.relay.fileno(), routes, 64) == [(datagram, udp.addr("peer"))]
    assert _drain(udp.client) == []
    assert fwd.counters()["relayed_to_client_packets"] == 0


def test_forwarder_from_peers_unknown_peer_comes_back(c_module: ModuleType, udp: Sockets) -> None:
    fwd = c_module.Forwarder(1000, 0x7FFF, *SHAPE)
    routes = _peer_routes(udp)
    _send(udp.peer2, udp.relay, [b"stranger"])
    assert fwd.from_peers(udp.relay.fileno(), routes, 64) == [(b"stranger", udp.addr("peer2"))]
    assert _drain(udp.client) == []


Route3 = collections.namedtuple("Route3", ["fd", "sockaddr", "deadline"])
Route4 = collections.namedtuple("Route4", ["fd", "sockaddr", "deadline", "channel"])


def _bad_routes(good: tuple[Any, ...]) -> dict[str, Any]:
    """Ill-formed variants of a well-formed route tuple (fd, sockaddr, deadline[, channel])."""
    fd, sockaddr, deadline, *rest = good
    route_type: Any = Route3 if len(good) == 3 else Route4
    return {
        "none": None,
        "list": [fd, sockaddr, deadline, *rest],
        "too-short": (fd, sockaddr),
        "too-long": (fd, sockaddr, deadline, *rest, 0),
        "tuple-subclass": route_type(*good),
        "fd-str": (str(fd), sockaddr, deadline, *rest),
        "fd-float": (float(fd), sockaddr, deadline, *rest),
        "fd-bool": (True, sockaddr, deadline, *rest),
        "fd-negative": (-1, sockaddr, deadline, *rest),
        "fd-above-int": (1 << 31, sockaddr, deadline, *rest),
        "fd-huge": (1 << 80, sockaddr, deadline, *rest),
        "sockaddr-str": (fd, "127.0.0.1", deadline, *rest),
        "sockaddr-bytearray": (fd, bytearray(sockaddr), deadline, *rest),
        "sockaddr-too-long": (fd, sockaddr + bytes(200), deadline, *rest),
        "deadline-int": (fd, sockaddr, int(deadline), *rest),
        "deadline-nan": (fd, sockaddr, float("nan"), *rest),
        "deadline-str": (fd, sockaddr, str(deadline), *rest),
    }


BAD_ROUTE_CASES = list(_bad_routes((3, b"", 1.0)))


@pytest.mark.parametrize("case", BAD_ROUTE_CASES)
def test_forwarder_malformed_client_routes_are_misses(
    c_module: ModuleType, udp: Sockets, case: str
) -> None:
    fwd = c_module.Forwarder(65535, 0x7FFF, *SHAPE)
    channels = _channel_routes(udp)
    sends = _send_routes(udp)
    ((ckey, good_channel),) = channels.items()
    ((skey, good_send),) = sends.items()
    channels[ckey] = _bad_routes(good_channel)[case]
    sends[skey] = _bad_routes(good_send)[case]
    datagrams = [ChannelData(CH, b"frame").encode(), _send_indication(udp.addr("peer"), b"send")]
    _send(udp.client, udp.listener, datagrams)
    rest = _from_clients(fwd, udp, channels, sends)
    assert rest == [(d, udp.addr("client")) for d in datagrams]
    assert _drain(udp.peer) == []
    assert fwd.counters()["relayed_to_peer_packets"] == 0


@pytest.mark.parametrize("case", BAD_ROUTE_CASES)
def test_forwarder_malformed_peer_routes_are_misses(
    c_module: ModuleType, udp: Sockets, case: str
) -> None:
    fwd = c_module.Forwarder(65535, 0x7FFF, *SHAPE)
    routes = _peer_routes(udp)
    ((key, good),) = routes.items()
    routes[key] = _bad_routes(good)[case]
    _send(udp.peer, udp.relay, [b"from peer"])
    assert fwd.from_peers(udp.relay.fileno(), routes, 64) == [(b"from peer", udp.addr("peer"))]
    assert _drain(udp.client) == []
    assert fwd.counters()["relayed_to_client_packets"] == 0


def test_forwarder_non_dict_tables_raise_type_error(c_module: ModuleType, udp: Sockets) -> None:
    fwd = c_module.Forwarder(65535, 0x7FFF, *SHAPE)
    with pytest.raises(TypeError):
        fwd.from_clients(udp.listener.fileno(), [], {}, 1)
    with pytest.raises(TypeError):
        fwd.from_peers(udp.relay.fileno(), None, 1)


def test_forwarder_route_to_dead_socket_is_counted_loss(c_module: ModuleType, udp: Sockets) -> None:
    # well-formed routes whose send fails (a descriptor that is not open, no address):
    # the datagram is lost and counted, never returned twice or crashed on
    fwd = c_module.Forwarder(65535, 0x7FFF, *SHAPE)
    channels = _channel_routes(udp)
    ((key, (_, sockaddr, deadline)),) = channels.items()
    channels[key] = (1_000_000, sockaddr, deadline)
    sends = _send_routes(udp)
    ((skey, (fd, _, sdeadline)),) = sends.items()
    sends[skey] = (fd, b"", sdeadline)
    datagrams = [ChannelData(CH, b"frame").encode(), _send_indication(udp.addr("peer"), b"send")]
    _send(udp.client, udp.listener, datagrams)
    assert _from_clients(fwd, udp, channels, sends) == []
    assert _drain(udp.peer) == []
    counters = fwd.counters()
    assert counters["relayed_to_peer_packets"] == 2
    assert counters["peer_send_dropped"] == 2


def test_forwarder_bad_listener_fd_is_a_counted_error(c_module: ModuleType) -> None:
    fwd = c_module.Forwarder(65535, 0x7FFF, *SHAPE)
    assert fwd.from_clients(1_000_000, {}, {}, 4) == []
    assert fwd.from_peers(-1, {}, 3) == []
    assert fwd.counters()["datapath_recv_errors"] == 7


@pytest.mark.parametrize("matched", [True, False], ids=["matched", "unmatched"])
def test_forwarder_max_reads_bounds_one_call(
    c_module: ModuleType, udp: Sockets, matched: bool
) -> None:
    fwd = c_module.Forwarder(65535, 0x7FFF, *SHAPE)
    number = CH if matched else CH + 1
    frames = [ChannelData(number, b"frame %d" % i).encode() for i in range(10)]
    routes = _channel_routes(udp)
    _send(udp.client, udp.listener, frames)
    assert _from_clients(fwd, udp, routes, {}, n=0) == []
    first = _from_clients(fwd, udp, routes, {}, n=3)
    forwarded = [data for data, _ in _drain(udp.peer, expect=3 if matched else 0)]
    if matched:
        assert first == [] and forwarded == [b"frame %d" % i for i in range(3)]
    else:
        assert first == [(f, udp.addr("client")) for f in frames[:3]] and forwarded == []
    second = _from_clients(fwd, udp, routes, {}, n=64)
    forwarded = [data for data, _ in _drain(udp.peer, expect=7 if matched else 0)]
    if matched:
        assert second == [] and forwarded == [b"frame %d" % i for i in range(3, 10)]
        assert fwd.counters()["relayed_to_peer_packets"] == 10
    else:
        assert second == [(f, udp.addr("client")) for f in frames[3:]] and forwarded == []
    assert _from_clients(fwd, udp, routes, {}, n=64) == []  # drained


def test_forwarder_from_peers_max_reads(c_module: ModuleType, udp: Sockets) -> None:
    fwd = c_module.Forwarder(65535, 0x7FFF, *SHAPE)
    datagrams = [b"peer %d" % i for i in range(10)]
    _send(udp.peer2, udp.relay, datagrams)  # peer2 has no route: everything comes back
    first = fwd.from_peers(udp.relay.fileno(), _peer_routes(udp), 3)
    assert [d for d, _ in first] == datagrams[:3]
    second = fwd.from_peers(udp.relay.fileno(), _peer_routes(udp), 64)
    assert [d for d, _ in second] == datagrams[3:]


def test_forwarder_bursts_across_batches_and_relays(c_module: ModuleType, udp: Sockets) -> None:
    # more than one recvmmsg batch (64), routes alternating between two relayed sockets (the
    # pending sends are flushed when the descriptor changes), and misses in between
    fwd = c_module.Forwarder(65535, 0x7FFF, *SHAPE)
    sockaddr = c_module.sockaddr
    client_key = address_key(*udp.addr("client"))
    deadline = time.time() + 60
    routes = {
        client_key + CH.to_bytes(2, "big"): (
            udp.relay.fileno(),
            sockaddr(*udp.addr("peer")),
            deadline,
        ),
        client_key + (CH + 1).to_bytes(2, "big"): (
            udp.relay2.fileno(),
            sockaddr(*udp.addr("peer2")),
            deadline,
        ),
    }
    frames, misses = [], []
    for i in range(150):
        number = (CH, CH + 1, CH + 2)[i % 3]
        frame = ChannelData(number, b"n%03d" % i).encode()
        frames.append(frame)
        if number == CH + 2:
            misses.append((frame, udp.addr("client")))
    _send(udp.client, udp.listener, frames)
    rest = _from_clients(fwd, udp, routes, {}, n=256)
    assert rest == misses
    to_peer = _drain(udp.peer, expect=50)
    to_peer2 = _drain(udp.peer2, expect=50)
    assert to_peer == [(b"n%03d" % i, udp.addr("relay")) for i in range(0, 150, 3)]
    assert to_peer2 == [(b"n%03d" % i, udp.addr("relay2")) for i in range(1, 150, 3)]
    assert fwd.counters()["relayed_to_peer_packets"] == 100


# ------------------------------------------------------------------ fuzz-ish


def _plain_send_peer_payload(d: bytes) -> tuple[bytes, bytes] | None:
    """Test oracle for RFC 8656 §11.2's plain Send indication (the shape the C loop takes)."""
    if len(d) < 20 or d[:2] != b"\x00\x16" or d[4:8] != b"\x21\x12\xa4\x42":
        return None
    if int.from_bytes(d[2:4], "big") != len(d) - 20:
        return None
    offset, peer, payload = 20, None, None
    while offset < len(d):
        if offset + 4 > len(d):
            return None
        kind, length = struct.unpack_from("!HH", d, offset)
        end = offset + 4 + length
        if end > len(d):
            return None
        if kind == 0x0012 and peer is None:
            peer = d[offset + 4 : end]
        elif kind == 0x0013 and payload is None:
            payload = d[offset + 4 : end]
        elif kind not in (0x8022, 0x001A):
            return None
        offset = end + (-length % 4)
    if payload is None or peer is None or len(peer) != 8 or peer[1] != 1:
        return None
    return peer, payload


def _expected_forward(
    d: bytes, channel_max: int, channels: set[int], peers: set[bytes]
) -> bytes | None:
    """The payload the C loop must forward for datagram d, or None when it must come back."""
    if len(d) >= 4 and 0x40 <= d[0] <= 0x7F:
        number, length = struct.unpack_from("!HH", d, 0)
        if number <= channel_max and length <= len(d) - 4 and number in channels:
            return d[4 : 4 + length]
        return None
    parsed = _plain_send_peer_payload(d)
    if parsed is not None and parsed[0] in peers:
        return parsed[1]
    return None


def _random_datagram(rng: random.Random, peer: Address) -> bytes:
    size = rng.randint(0, 1500)
    kind = rng.randrange(6)
    if kind == 0:  # anything
        return rng.randbytes(size)
    if kind == 1:  # looks like ChannelData, random numbers and lengths
        return bytes([rng.randint(0x40, 0x7F)]) + rng.randbytes(max(0, size - 1))
    if kind == 2:  # ChannelData on a routed channel, length right, short or too long
        payload = rng.randbytes(rng.randint(0, 1400))
        length = len(payload) + rng.choice((0, 0, 0, 1, -1, 4, 1000))
        length = max(0, min(length, 0xFFFF))
        number = rng.choice((CH, CH, CH + 1, 0x4FFF, 0x5000, 0x7FFF))
        return struct.pack("!HH", number, length) + payload + b"\x00" * rng.randint(0, 3)
    if kind == 3:  # a STUN header with a Send type and a random body
        body = rng.randbytes(size)
        length = len(body) if rng.random() < 0.7 else rng.randint(0, 0xFFFF)
        return struct.pack("!HHI", 0x0016, length, 0x2112A442) + rng.randbytes(12) + body
    valid = _send_indication(peer, rng.randbytes(rng.randint(0, 1200)))
    if kind == 4:  # a plain Send indication to the routed peer (or to a neighbour port)
        if rng.random() < 0.3:
            valid = _send_indication((peer[0], peer[1] ^ rng.randint(1, 255)), b"neighbour")
        return valid
    mutated = bytearray(valid)  # one byte of a valid one changed
    i = rng.randrange(len(mutated))
    mutated[i] = rng.randrange(256)
    if rng.random() < 0.3:
        return bytes(mutated[: rng.randrange(len(mutated) + 1)])
    return bytes(mutated)


def test_forwarder_fuzz_never_crashes_and_returns_misses_intact(
    c_module: ModuleType, udp: Sockets
) -> None:
    rng = random.Random(0x5EED)
    channel_max = 0x7FFF
    fwd = c_module.Forwarder(65535, channel_max, *SHAPE)
    channels = _channel_routes(udp)
    sends = _send_routes(udp)
    peers = {xor_peer_value(udp.addr("peer"))}
    client = udp.addr("client")
    total_forwarded = 0
    for _ in range(40):
        batch = [_random_datagram(rng, udp.addr("peer")) for _ in range(50)]
        expected_rest = []
        expected_payloads = []
        for d in batch:
            payload = _expected_forward(d, channel_max, {CH}, peers)
            if payload is None:
                expected_rest.append((d, client))
            else:
                expected_payloads.append(payload)
        _send(udp.client, udp.listener, batch)
        rest = _from_clients(fwd, udp, channels, sends, n=256)
        assert rest == expected_rest
        got = _drain(udp.peer, expect=len(expected_payloads))
        assert [data for data, _ in got] == expected_payloads
        total_forwarded += len(expected_payloads)
    assert total_forwarded > 100  # the generator did reach the forwarding paths
    assert fwd.counters()["relayed_to_peer_packets"] == total_forwarded


def test_forwarder_fuzz_from_peers(c_module: ModuleType, udp: Sockets) -> None:
    rng = random.Random(0xF00D)
    fwd = c_module.Forwarder(1200, 0x7FFF, *SHAPE)
    routes = _peer_routes(udp, 0x4123)
    forwarded = 0
    for _ in range(10):
        sources = [rng.random() < 0.5 for _ in range(50)]
        batch = [rng.randbytes(rng.randint(0, 1500)) for _ in sources]
        for routed, data in zip(sources, batch, strict=True):
            (udp.peer if routed else udp.peer2).sendto(data, udp.addr("relay"))
        select.select([udp.relay], [], [], WAIT_S)
        time.sleep(0.005)
        rest = fwd.from_peers(udp.relay.fileno(), routes, 256)
        expected_rest, expected_frames = [], []
        for routed, data in zip(sources, batch, strict=True):
            if routed and len(data) <= 1200:
                expected_frames.append(b"\x41\x23" + len(data).to_bytes(2, "big") + data)
            else:
                expected_rest.append((data, udp.addr("peer" if routed else "peer2")))
        assert rest == expected_rest
        got = _drain(udp.client, expect=len(expected_frames))
        assert [data for data, _ in got] == expected_frames
        forwarded += len(expected_frames)
    assert fwd.counters()["relayed_to_client_packets"] == forwarded
