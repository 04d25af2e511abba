"""The relay over UDP on loopback: aioice clients, hostile datagrams, denied peers.

Everything binds 127.0.0.1 (or another loopback address); every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aioice import Connection, TransportPolicy
from aioicepair import AIOICE_MESSAGES, SelectedPair, relay_pair_exchange
from conftest import StartRelay, require_relay_server
from rawturn import RawTurnClient, assert_success, error_code
from relayproc import counter, relay_subprocess, wait_counter

from relay.stun.attributes import (
    Data,
    RawAttribute,
    RequestedAddressFamily,
    RequestedTransport,
    UnknownAttributes,
    XorMappedAddress,
    XorPeerAddress,
)
from relay.stun.channeldata import ChannelData
from relay.stun.constants import MAGIC_COOKIE, AddressFamily, MessageClass, Method
from relay.stun.message import Message, encode_message
from relay.turn.auth import rest_password

if TYPE_CHECKING:
    from relay.server.app import RelayServer

USER, PASSWORD, REALM = "user", "pass", "natlab"
REST_SECRET = "natlab-rest-secret"
LT_OPTIONS = {"lt_cred_mech": True, "users": ((USER, PASSWORD),), "realm": REALM}
NO_RESPONSE_WAIT_S = 0.3

# --- aioice through the relay --------------------------------------------------------------


def _check_relay_pairs(pairs: list[SelectedPair], relay_host: str) -> None:
    (a_local, a_remote, a_laddr, a_raddr), (b_local, b_remote, b_laddr, b_raddr) = pairs
    assert (a_local, a_remote, b_local, b_remote) == ("relay",) * 4, pairs
    assert a_laddr[0] == b_laddr[0] == relay_host, pairs
    assert a_laddr == b_raddr and b_laddr == a_raddr, pairs


def test_aioice_long_term_credentials_relay_pair(start_relay: StartRelay) -> None:
    server, addr = start_relay(**LT_OPTIONS, allow_loopback_peers=True)
    pairs = asyncio.run(relay_pair_exchange(addr, USER, PASSWORD))
    _check_relay_pairs(pairs, addr[0])
    assert counter(server, "allocations_total") >= 2
    assert counter(server, "relayed_to_peer_packets") >= 2 * AIOICE_MESSAGES
    assert counter(server, "relayed_to_client_packets") >= 2 * AIOICE_MESSAGES


def test_aioice_rest_secret_relay_pair(start_relay: StartRelay) -> None:
    server, addr = start_relay(
        use_auth_secret=True,
        static_auth_secrets=(REST_SECRET,),
        realm=REALM,
        allow_loopback_peers=True,
    )
    username = f"{int(time.time()) + 3600}:alice"
    pairs = asyncio.run(relay_pair_exchange(addr, username, rest_password(REST_SECRET, username)))
    _check_relay_pairs(pairs, addr[0])
    assert counter(server, "relayed_to_client_packets") >= 2 * AIOICE_MESSAGES


def test_aioice_subprocess_relay_pair() -> None:
    require_relay_server()
    args = ("-a", "-u", f"{USER}:{PASSWORD}", "-r", REALM, "--allow-loopback-peers")
    with relay_subprocess(*args) as proc:
        try:
            pairs = asyncio.run(relay_pair_exchange(("127.0.0.1", proc.port), USER, PASSWORD))
        except BaseException:
            print(proc.log)
            raise
        _check_relay_pairs(pairs, "127.0.0.1")
    assert proc.proc.returncode == 0, f"exit status {proc.proc.returncode} on SIGTERM\n{proc.log}"


async def _aioice_gather_types(server: tuple[str, int], username: str, password: str) -> list[str]:
    agent = Connection(
        ice_controlling=True,
        turn_server=server,
        turn_username=username,
        turn_password=password,
        transport_policy=TransportPolicy.RELAY,
        use_ipv6=False,
    )
    try:
        await asyncio.wait_for(agent.gather_candidates(), 15)
        return [c.type for c in agent.local_candidates]
    finally:
        await asyncio.wait_for(agent.close(), 10)


def test_aioice_wrong_password_no_relay_candidate(start_relay: StartRelay) -> None:
    server, addr = start_relay(**LT_OPTIONS, allow_loopback_peers=True)
    assert asyncio.run(_aioice_gather_types(addr, USER, "wrong")) == []
    assert counter(server, "auth_failed") >= 1
    assert counter(server, "allocations_total") == 0


def test_aioice_rest_expired_no_relay_candidate(start_relay: StartRelay) -> None:
    server, addr = start_relay(
        use_auth_secret=True, static_auth_secrets=(REST_SECRET,), realm=REALM
    )
    username = f"{int(time.time()) - 60}:alice"  # expired a minute ago
    password = rest_password(REST_SECRET, username)
    assert asyncio.run(_aioice_gather_types(addr, username, password)) == []
    assert counter(server, "auth_failed") >= 1
    assert counter(server, "allocations_total") == 0


# --- hostile and malformed datagrams ---------------------------------------------------------


def _binding_request(tid: bytes | None = None) -> bytes:
    return encode_message(Message.request(Method.BINDING, tid or os.urandom(12)))


def _header(length: int, cookie: int = MAGIC_COOKIE, msg_type: int = 0x0001) -> bytes:
    return struct.pack("!HHI", msg_type, length, cookie) + os.urandom(12)


def _truncated_header() -> bytes:
    return _binding_request()[:12]


def _length_not_multiple_of_4() -> bytes:
    return _header(21) + bytes(21)


def _attribute_past_end() -> bytes:
    # SOFTWARE claims 20 bytes of value, the message carries 4.
    return _header(8) + struct.pack("!HH", 0x8022, 20) + b"abcd"


def _wrong_magic_cookie() -> bytes:
    return _header(0, cookie=MAGIC_COOKIE ^ 0x1)


def _bad_fingerprint() -> bytes:
    data = bytearray(
        encode_message(Message.request(Method.BINDING, os.urandom(12)), fingerprint=True)
    )
    data[-1] ^= 0xFF
    return bytes(data)


MALFORMED = {
    "empty": lambda: b"",
    "one-byte": lambda: b"\x00",
    "first-bits-11": lambda: b"\xc0" + bytes(23),  # neither STUN (00) nor ChannelData (01)
    "channeldata-length-past-end": lambda: b"\x40\x00\x00\x10abcd",
    "truncated-header": _truncated_header,
    "length-not-multiple-of-4": _length_not_multiple_of_4,
    "attribute-past-end": _attribute_past_end,
    "wrong-magic-cookie": _wrong_magic_cookie,
    "bad-fingerprint": _bad_fingerprint,
}


def _assert_dropped(
    server: RelayServer, client: RawTurnClient, datagram: bytes, counter_name: str
) -> None:
    before = counter(server, counter_name)
    client.send_raw(datagram)
    after = wait_counter(server, counter_name, before + 1)
    answer = client.recv_raw(NO_RESPONSE_WAIT_S)
    assert answer is None, f"expected a silent drop, got a {len(answer)}-byte answer: {answer!r}"
    assert after == before + 1, f"counter {counter_name!r}: {before} -> {after}, expected +1"


def _assert_fresh_allocate(addr: tuple[str, int]) -> None:
    with RawTurnClient(addr, USER, PASSWORD) as fresh:
        host, port = fresh.allocate()
        assert host == "127.0.0.1" and port > 0


def test_relay_binding_maps_client_address(start_relay: StartRelay) -> None:
    _, addr = start_relay(**LT_OPTIONS)
    with RawTurnClient(addr) as client:
        tid = os.urandom(12)
        client.send_raw(_binding_request(tid))
        response = client.recv_response(tid)
        assert response is not None and response.msg_class == MessageClass.SUCCESS, response
        mapped = response.get(XorMappedAddress)
        assert mapped is not None, response
        assert (str(mapped.ip), mapped.port) == client.address


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_relay_malformed_datagram_dropped(start_relay: StartRelay, case: str) -> None:
    server, addr = start_relay(**LT_OPTIONS)
    with RawTurnClient(addr, USER, PASSWORD) as client:
        _assert_dropped(server, client, MALFORMED[case](), "malformed_dropped")
    _assert_fresh_allocate(addr)


def test_relay_unknown_method_request_400(start_relay: StartRelay) -> None:
    _, addr = start_relay(**LT_OPTIONS)
    with RawTurnClient(addr) as client:
        tid = os.urandom(12)
        client.send_raw(encode_message(Message(0x0FF, MessageClass.REQUEST, tid)))
        response = client.recv_response(tid)
        assert response is not None and error_code(response) == 400, response
    _assert_fresh_allocate(addr)


@pytest.mark.parametrize("msg_class", [MessageClass.SUCCESS, MessageClass.ERROR])
def test_relay_unsolicited_response_ignored(start_relay: StartRelay, msg_class: int) -> None:
    _, addr = start_relay(**LT_OPTIONS)
    with RawTurnClient(addr) as client:
        client.send_raw(
            encode_message(Message(Method.ALLOCATE, MessageClass(msg_class), os.urandom(12)))
        )
        client.send_raw(encode_message(Message(0x0FF, MessageClass.INDICATION, os.urandom(12))))
        assert client.recv_raw(NO_RESPONSE_WAIT_S) is None
    _assert_fresh_allocate(addr)


def test_relay_unknown_comprehension_required_attribute_420(start_relay: StartRelay) -> None:
    _, addr = start_relay(**LT_OPTIONS)
    unknown = 0x7F01
    with RawTurnClient(addr, USER, PASSWORD) as client:
        response = client.request(
            Method.ALLOCATE, RequestedTransport(17), RawAttribute(unknown, b"\x00\x00\x00\x01")
        )
        assert error_code(response) == 420, response
        listed = response.get(UnknownAttributes)
        assert listed is not None and unknown in listed.types, response
    _assert_fresh_allocate(addr)


@pytest.mark.parametrize(("first", "second", "expected"), [(17, 6, None), (6, 17, 442)])
def test_relay_duplicate_attribute_first_wins(
    start_relay: StartRelay, first: int, second: int, expected: int | None
) -> None:
    # RFC 8489 §14: only the first occurrence of an attribute is processed.
    _, addr = start_relay(**LT_OPTIONS)
    with RawTurnClient(addr, USER, PASSWORD) as client:
        response = client.request(
            Method.ALLOCATE, RequestedTransport(first), RequestedTransport(second)
        )
        if expected is None:
            assert_success(response)
        else:
            assert error_code(response) == expected, response
    _assert_fresh_allocate(addr)


def test_relay_channel_data_unbound_channel_dropped(start_relay: StartRelay) -> None:
    server, addr = start_relay(**LT_OPTIONS, allow_loopback_peers=True)
    with RawTurnClient(addr, USER, PASSWORD) as client:
        client.allocate()
        frame = ChannelData(0x4001, b"unbound channel").encode()
        _assert_dropped(server, client, frame, "channel_unbound_dropped")
    _assert_fresh_allocate(addr)


def test_relay_oversize_datagram(start_relay: StartRelay) -> None:
    # 65,000 bytes: a well-formed Binding request padded with a DATA attribute (fits loopback's
    # 65,536-byte MTU). Either answered correctly or dropped and counted as oversize.
    server, addr = start_relay(**LT_OPTIONS)
    tid = os.urandom(12)
    datagram = encode_message(Message.request(Method.BINDING, tid, Data(bytes(64976))))
    assert len(datagram) == 65000
    with RawTurnClient(addr, USER, PASSWORD) as client:
        before = counter(server, "oversize_dropped")
        client.send_raw(datagram)
        response = client.recv_response(tid, 1.0)
        if response is None:
            after = wait_counter(server, "oversize_dropped", before + 1)
            assert after == before + 1, f"dropped silently but oversize_dropped {before}->{after}"
        else:
            assert response.msg_class == MessageClass.SUCCESS, response
            mapped = response.get(XorMappedAddress)
            assert mapped is not None and (str(mapped.ip), mapped.port) == client.address
    _assert_fresh_allocate(addr)


def test_relay_all_hostile_inputs_then_allocate(start_relay: StartRelay) -> None:
    server, addr = start_relay(**LT_OPTIONS, allow_loopback_peers=True)
    with RawTurnClient(addr, USER, PASSWORD) as client:
        for build in MALFORMED.values():
            _assert_dropped(server, client, build(), "malformed_dropped")
        client.allocate()
        _assert_dropped(
            server, client, ChannelData(0x4FFF, b"x").encode(), "channel_unbound_dropped"
        )
        junk = [b"\xff" * 64, b"\x80\x00", b"", bytes(3), b"\x40"]
        for datagram in junk:
            client.send_raw(datagram)
        assert client.recv_raw(NO_RESPONSE_WAIT_S) is None
        client.send_raw(
            encode_message(Message.request(Method.BINDING, os.urandom(12), Data(bytes(64976))))
        )
    _assert_fresh_allocate(addr)
    assert counter(server, "allocations_total") == 2


# --- denied peers (seed 003 turnserver.conf) -------------------------------------------------

# The active denied-peer-ip lines of the seed's turnserver.conf (seed 003, coturn guide), read
# from the verbatim copy in tests/data so the list has one source: 18 ranges, in order. The
# guide also sets no-loopback-peers and no-multicast-peers; its CVE-2020-26262 lines are
# commented out there.
SEED_CONF = Path(__file__).resolve().parents[1] / "data" / "seed_turnserver.conf"
SEED_DENIED_PEER_IPS = tuple(
    line.split("=", 1)[1].strip()
    for line in SEED_CONF.read_text().splitlines()
    if line.startswith("denied-peer-ip=")
)
assert len(SEED_DENIED_PEER_IPS) == 18, SEED_DENIED_PEER_IPS
DENIED_OPTIONS = {
    **LT_OPTIONS,
    "denied_peer_ips": SEED_DENIED_PEER_IPS,
    "allow_loopback_peers": False,
    "no_multicast_peers": True,
}

# Loopback, unspecified, multicast and metadata addresses, plain and disguised as IPv6
# (CVE-2020-26262: 0.0.0.0 / :: ; CVE-2026-27624-style folding: mapped, compatible, 6to4, NAT64).
DENIED_ENCODINGS = (
    "127.0.0.1",
    "127.1.2.3",
    "0.0.0.0",
    "::1",
    "::",
    "::ffff:127.0.0.1",
    "::127.0.0.1",
    "2002:7f00:1::",
    "64:ff9b::7f00:1",
    "224.0.0.1",
    "ff02::1",
    "169.254.169.254",
    "10.1.2.3",
)
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def _folded_ipv4(ip: IP) -> ipaddress.IPv4Address | None:
    """Test oracle, independent of relay.turn.peer_policy: the IPv4 address an IPv6 one hides."""
    if ip.version == 4:
        return None
    assert isinstance(ip, ipaddress.IPv6Address)
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64 or (ip.packed[:12] == bytes(12) and int(ip) > 1):
        return ipaddress.IPv4Address(ip.packed[12:])
    return None


def _expected_codes(ip: IP, allocation_family: int) -> set[int]:
    # A peer written in the allocation's family must be refused with 403. Written in the other
    # family it may be refused as such (403) or first fail the RFC 8656 §7.2/§9.2 family check
    # (443 Peer Address Family Mismatch); lead's note: the relay checks the family as written,
    # before folding, so ::ffff:127.0.0.1 on an IPv4 allocation gives 443.
    return {403} if ip.version == allocation_family else {403, 443}


def _loopback_v6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def _denied_relay(start_relay: StartRelay, family: int) -> tuple[RelayServer, tuple[str, int]]:
    if family == 4:
        return start_relay(**DENIED_OPTIONS)
    if not _loopback_v6_available():
        pytest.skip("::1 is not usable here: no IPv6 relay address for an IPv6 allocation")
    # Listens on 127.0.0.1 only; relays from 127.0.0.1 and ::1 (loopback both).
    return start_relay(**DENIED_OPTIONS, relay_ips=("127.0.0.1", "::1"))


def _allocate(client: RawTurnClient, family: int) -> tuple[str, int]:
    if family == 4:
        return client.allocate()
    relayed = client.allocate(RequestedAddressFamily(AddressFamily.IPV6))
    assert ipaddress.ip_address(relayed[0]) == ipaddress.IPv6Address("::1"), relayed
    return relayed


@contextlib.contextmanager
def _catchers(ip: IP) -> Iterator[list[socket.socket]]:
    """UDP sockets on one port at the written address and at its folded IPv4, where bindable."""
    targets = [ip]
    folded = _folded_ipv4(ip)
    if folded is not None:
        targets.append(folded)
    socks: list[socket.socket] = []
    port = 0
    try:
        for target in targets:
            family = socket.AF_INET if target.version == 4 else socket.AF_INET6
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((str(target), port))
            except OSError:  # not a local address here, or covered by a mapped bind already
                sock.close()
                continue
            port = sock.getsockname()[1]
            sock.setblocking(False)
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _refuse_everything(
    server: RelayServer, client: RawTurnClient, ip: IP, port: int, channel: int, family: int
) -> None:
    expected = _expected_codes(ip, family)
    for what in ("CreatePermission", "ChannelBind"):
        refused_before = counter(server, "peer_refused")
        if what == "CreatePermission":
            response = client.create_permission(ip, port)
        else:
            response = client.channel_bind(channel, ip, port)
        code = error_code(response)
        assert code in expected, f"{what} to {ip}: got {code} {response}, expected {expected}"
        if code == 403:
            refused_after = wait_counter(server, "peer_refused", refused_before + 1)
            assert refused_after == refused_before + 1, f"peer_refused after {what} 403"
    _assert_dropped(server, client, _send_indication(ip, port), "send_refused_dropped")
    _assert_dropped(
        server, client, ChannelData(channel, b"via refused channel").encode(),
        "channel_unbound_dropped",
    )  # fmt: skip


def _send_indication(ip: IP, port: int) -> bytes:
    msg = Message.indication(
        Method.SEND, os.urandom(12), XorPeerAddress(ip, port), Data(b"must not arrive")
    )
    return encode_message(msg, fingerprint=True)


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4-allocation", "ipv6-allocation"])
@pytest.mark.parametrize("encoding", DENIED_ENCODINGS)
def test_denied_peer_refused(start_relay: StartRelay, encoding: str, family: int) -> None:
    server, addr = _denied_relay(start_relay, family)
    ip = ipaddress.ip_address(encoding)
    with RawTurnClient(addr, USER, PASSWORD) as client:
        _allocate(client, family)
        _refuse_everything(server, client, ip, 9, 0x4000, family)
    assert counter(server, "relayed_to_peer_packets") == 0


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4-allocation", "ipv6-allocation"])
@pytest.mark.parametrize("encoding", DENIED_ENCODINGS)
def test_denied_peer_listener_receives_nothing(
    start_relay: StartRelay, encoding: str, family: int
) -> None:
    ip = ipaddress.ip_address(encoding)
    with _catchers(ip) as socks:
        if not socks:
            pytest.skip(
                f"{encoding} (folded: {_folded_ipv4(ip)}) is not a local address on this host: "
                "a leak would leave the host and cannot be observed on loopback"
            )
        port = socks[0].getsockname()[1]
        server, addr = _denied_relay(start_relay, family)
        with RawTurnClient(addr, USER, PASSWORD) as client:
            _allocate(client, family)
            _refuse_everything(server, client, ip, port, 0x4321, family)
            time.sleep(NO_RESPONSE_WAIT_S)
        for sock in socks:
            try:
                leaked = sock.recvfrom(70000)
            except BlockingIOError:
                continue
            pytest.fail(f"{encoding}: listener {sock.getsockname()} received {leaked}")
    assert counter(server, "relayed_to_peer_packets") == 0


def test_allowed_peer_control_listener_receives(start_relay: StartRelay) -> None:
    # Control for the test above: with loopback allowed, the same listener does receive.
    server, addr = start_relay(**LT_OPTIONS, allow_loopback_peers=True)
    ip = ipaddress.ip_address("127.1.2.3")
    with _catchers(ip) as socks, RawTurnClient(addr, USER, PASSWORD) as client:
        assert socks, "127.1.2.3 should be bindable on Linux loopback"
        port = socks[0].getsockname()[1]
        relayed = client.allocate()
        assert_success(client.create_permission(ip, port))
        client.send_raw(_send_indication(ip, port))
        socks[0].settimeout(2.0)
        data, source = socks[0].recvfrom(70000)
        assert data == b"must not arrive"
        assert source == relayed
    assert counter(server, "relayed_to_peer_packets") == 1
