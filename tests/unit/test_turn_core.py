"""TurnCore without sockets: every RFC 8656 error code and the relay paths, with time passed in."""

from __future__ import annotations

import ipaddress
import os
import random

import pytest

from relay.stun.attributes import (
    AdditionalAddressFamily,
    AddressErrorCode,
    Attribute,
    ChannelNumber,
    Data,
    DontFragment,
    ErrorCodeAttr,
    EvenPort,
    Lifetime,
    Nonce,
    PasswordAlgorithmAttr,
    PasswordAlgorithms,
    RawAttribute,
    Realm,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    Software,
    UnknownAttributes,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
)
from relay.stun.channeldata import ChannelData, decode_channel_data
from relay.stun.constants import MessageClass, Method, PasswordAlgorithm
from relay.stun.integrity import long_term_key, verify_integrity, verify_integrity_sha256
from relay.stun.message import Message, decode_message, encode_message
from relay.turn.addresses import FiveTuple, Transport
from relay.turn.auth import RestSecret, StaticUsers, rest_password
from relay.turn.config import TurnConfig
from relay.turn.core import TurnCore
from relay.turn.effects import SendToClient, SendToPeer
from relay.turn.nonce import FEATURE_PASSWORD_ALGORITHMS, NonceFactory
from relay.turn.peer_policy import PeerPolicy
from relay.turn.ports import MemoryRelayPorts, PortPool

REALM = "natlab"
T0 = 1_800_000_000.0
CLIENT = FiveTuple(("198.18.1.10", 40000), ("198.18.0.2", 3478), Transport.UDP)
PEER = ("198.18.2.20", 50000)


def make_core(
    *,
    users: tuple[tuple[str, str], ...] = (("alice", "wonderland"), ("bob", "builder")),
    relay_hosts: tuple[str, ...] = ("198.18.0.2",),
    policy: PeerPolicy | None = None,
    authenticator: object | None = None,
    **config: object,
) -> TurnCore:
    cfg = TurnConfig(
        realm=REALM,
        authenticator=authenticator if authenticator is not None else StaticUsers(users),  # type: ignore[arg-type]
        nonces=NonceFactory(secret=b"k" * 32, features=FEATURE_PASSWORD_ALGORITHMS),
        peer_policy=policy or PeerPolicy(),
        **config,  # type: ignore[arg-type]
    )
    ports = MemoryRelayPorts(relay_hosts, PortPool(50000, 50009, random.Random(1)))
    return TurnCore(cfg, ports)


class Client:
    """A minimal TURN client over the core, doing the 401/438 dance of RFC 8489 §9.2.3."""

    def __init__(
        self,
        core: TurnCore,
        five_tuple: FiveTuple = CLIENT,
        username: str = "alice",
        password: str = "wonderland",
    ) -> None:
        self.core = core
        self.five_tuple = five_tuple
        self.username = username
        self.key = long_term_key(username, REALM, password)
        self.nonce: str | None = None
        self.now = T0

    def raw(self, data: bytes) -> list[object]:
        return list(self.core.handle_client(self.now, self.five_tuple, data))

    def send(self, data: bytes) -> Message | None:
        effects = self.raw(data)
        replies = [e for e in effects if isinstance(e, SendToClient)]
        return decode_message(replies[0].data) if replies else None

    def request(
        self, method: int, *attrs: Attribute, auth: bool = True, tid: bytes | None = None
    ) -> Message:
        tid = tid or os.urandom(12)
        for _ in range(3):
            if not auth:
                data = encode_message(Message.request(method, tid, *attrs), fingerprint=True)
            else:
                if self.nonce is None:
                    self.nonce = self._challenge()
                msg = Message.request(
                    method, tid, *attrs, Username(self.username), Realm(REALM), Nonce(self.nonce)
                )
                data = encode_message(msg, key=self.key, fingerprint=True)
            reply = self.send(data)
            assert reply is not None
            err = reply.get(ErrorCodeAttr)
            if auth and err is not None and err.code == 438:
                nonce = reply.get(Nonce)
                assert nonce is not None
                self.nonce = nonce.value
                tid = os.urandom(12)
                continue
            return reply
        raise AssertionError("no answer after stale nonces")

    def _challenge(self) -> str:
        reply = self.send(
            encode_message(Message.request(Method.ALLOCATE, os.urandom(12), RequestedTransport(17)))
        )
        assert reply is not None and error_code(reply) == 401
        nonce = reply.get(Nonce)
        assert nonce is not None
        return nonce.value

    def allocate(self, *attrs: Attribute) -> Message:
        return self.request(Method.ALLOCATE, RequestedTransport(17), *attrs)

    def relayed(self) -> tuple[str, int]:
        reply = self.allocate()
        assert reply.msg_class is MessageClass.SUCCESS, reply
        relayed = reply.get(XorRelayedAddress)
        assert relayed is not None
        return (str(relayed.ip), relayed.port)


def error_code(msg: Message) -> int | None:
    err = msg.get(ErrorCodeAttr)
    return err.code if err is not None else None


def peer_attr(host: str, port: int = 50000) -> XorPeerAddress:
    return XorPeerAddress(ipaddress.ip_address(host), port)


# ---------------------------------------------------------------- success paths


def test_core_binding_reflects_source_without_auth() -> None:
    reply = Client(make_core()).request(Method.BINDING, auth=False)
    mapped = reply.get(XorMappedAddress)
    assert reply.msg_class is MessageClass.SUCCESS
    assert mapped is not None and (str(mapped.ip), mapped.port) == CLIENT.client


def test_core_allocate_challenge_then_success_is_integrity_protected() -> None:
    client = Client(make_core())
    reply = client.allocate()
    assert reply.msg_class is MessageClass.SUCCESS
    assert verify_integrity(reply, client.key)
    lifetime = reply.get(Lifetime)
    assert lifetime is not None and lifetime.seconds == 600
    relayed = reply.get(XorRelayedAddress)
    assert relayed is not None and str(relayed.ip) == "198.18.0.2"
    assert 50000 <= relayed.port <= 50009
    mapped = reply.get(XorMappedAddress)
    assert mapped is not None and mapped.port == CLIENT.client[1]


def test_core_allocate_retransmission_replays_response() -> None:
    client = Client(make_core())
    client.allocate()  # primes the nonce
    core = client.core
    tid = os.urandom(12)
    client2 = Client(core, FiveTuple(("198.18.1.11", 1), CLIENT.server, Transport.UDP))
    client2.nonce = client2._challenge()
    first = client2.request(Method.ALLOCATE, RequestedTransport(17), tid=tid)
    again = client2.request(Method.ALLOCATE, RequestedTransport(17), tid=tid)
    assert first.msg_class is MessageClass.SUCCESS
    assert again.get(XorRelayedAddress) == first.get(XorRelayedAddress)
    assert len(core.allocations) == 2


def test_core_allocate_lifetime_clamped_to_default_and_max() -> None:
    client = Client(make_core())
    short = client.allocate(Lifetime(30)).get(Lifetime)
    assert short is not None and short.seconds == 600
    long = client.request(Method.REFRESH, Lifetime(99999)).get(Lifetime)
    assert long is not None and long.seconds == 3600


def test_core_refresh_zero_deletes_and_frees_port() -> None:
    client = Client(make_core())
    relay = client.relayed()
    reply = client.request(Method.REFRESH, Lifetime(0))
    assert reply.msg_class is MessageClass.SUCCESS
    assert len(client.core.allocations) == 0
    ports = client.core.ports
    assert isinstance(ports, MemoryRelayPorts) and relay not in ports.open_addresses


def test_core_send_and_data_indication_round_trip() -> None:
    client = Client(make_core())
    relay = client.relayed()
    ok = client.request(Method.CREATE_PERMISSION, peer_attr(PEER[0]))
    assert ok.msg_class is MessageClass.SUCCESS
    send = Message.indication(Method.SEND, os.urandom(12), peer_attr(*PEER), Data(b"hello"))
    effects = client.raw(encode_message(send))
    assert effects == [SendToPeer(relay, PEER, b"hello")]
    back = client.core.handle_peer(client.now, relay, PEER, b"world")
    assert len(back) == 1 and isinstance(back[0], SendToClient)
    data_ind = decode_message(back[0].data)
    assert (data_ind.msg_class, data_ind.method) == (MessageClass.INDICATION, Method.DATA)
    data = data_ind.get(Data)
    assert data is not None and data.data == b"world"


def test_core_channel_data_both_ways() -> None:
    client = Client(make_core())
    relay = client.relayed()
    ok = client.request(Method.CHANNEL_BIND, ChannelNumber(0x4001), peer_attr(*PEER))
    assert ok.msg_class is MessageClass.SUCCESS
    effects = client.raw(ChannelData(0x4001, b"ping").encode())
    assert effects == [SendToPeer(relay, PEER, b"ping")]
    back = client.core.handle_peer(client.now, relay, PEER, b"pong")
    assert isinstance(back[0], SendToClient)
    assert decode_channel_data(back[0].data) == ChannelData(0x4001, b"pong")


def test_core_channel_data_over_tcp_is_padded() -> None:
    tcp = FiveTuple(CLIENT.client, CLIENT.server, Transport.TCP)
    client = Client(make_core(), tcp)
    relay = client.relayed()
    client.request(Method.CHANNEL_BIND, ChannelNumber(0x4002), peer_attr(*PEER))
    back = client.core.handle_peer(client.now, relay, PEER, b"abc")
    assert isinstance(back[0], SendToClient) and len(back[0].data) == 8


def test_core_peer_without_permission_is_dropped_and_counted() -> None:
    core = make_core()
    relay = Client(core).relayed()
    assert core.handle_peer(T0, relay, PEER, b"x") == []
    assert core.counters["peer_no_permission_dropped"] == 1


def test_core_permission_expires_after_300s() -> None:
    client = Client(make_core())
    relay = client.relayed()
    client.request(Method.CREATE_PERMISSION, peer_attr(PEER[0]))
    assert client.core.handle_peer(T0 + 299, relay, PEER, b"x")
    client.core.tick(T0 + 301)
    assert client.core.handle_peer(T0 + 301, relay, PEER, b"x") == []


def test_core_allocation_expires_and_releases_relay() -> None:
    client = Client(make_core())
    relay = client.relayed()
    client.core.tick(T0 + 599)
    assert len(client.core.allocations) == 1
    client.core.tick(T0 + 601)
    assert len(client.core.allocations) == 0
    ports = client.core.ports
    assert isinstance(ports, MemoryRelayPorts) and relay not in ports.open_addresses


def test_core_channel_expires_and_is_held_before_rebinding() -> None:
    client = Client(make_core())
    client.relayed()
    client.request(Method.CHANNEL_BIND, ChannelNumber(0x4001), peer_attr(*PEER))
    client.request(Method.REFRESH, Lifetime(3600))
    client.now = T0 + 700  # channel (600 s) expired, but held for 5 more minutes (RFC 8656 §12)
    client.core.tick(client.now)
    other = client.request(Method.CHANNEL_BIND, ChannelNumber(0x4001), peer_attr("198.18.2.21"))
    assert error_code(other) == 400
    client.now = T0 + 901
    client.core.tick(client.now)
    again = client.request(Method.CHANNEL_BIND, ChannelNumber(0x4001), peer_attr("198.18.2.21"))
    assert again.msg_class is MessageClass.SUCCESS


def test_core_even_port_reservation_token_claims_next_port() -> None:
    core = make_core()
    first = Client(core).allocate(EvenPort(reserve=True))
    relayed = first.get(XorRelayedAddress)
    token = first.get(ReservationToken)
    assert relayed is not None and relayed.port % 2 == 0 and token is not None
    other = Client(core, FiveTuple(("198.18.1.12", 2), CLIENT.server, Transport.UDP))
    second = other.allocate(token)
    relayed2 = second.get(XorRelayedAddress)
    assert relayed2 is not None and relayed2.port == relayed.port + 1


def test_core_sha256_password_algorithm_and_integrity() -> None:
    client = Client(make_core())
    client.nonce = client._challenge()
    key = long_term_key("alice", REALM, "wonderland", PasswordAlgorithm.SHA256)
    algorithms = PasswordAlgorithms(((PasswordAlgorithm.MD5, b""), (PasswordAlgorithm.SHA256, b"")))
    msg = Message.request(
        Method.ALLOCATE,
        os.urandom(12),
        RequestedTransport(17),
        Username("alice"),
        Realm(REALM),
        Nonce(client.nonce),
        algorithms,
        PasswordAlgorithmAttr(PasswordAlgorithm.SHA256),
    )
    reply = client.send(encode_message(msg, key=key, sha1=False, sha256=True))
    assert reply is not None and reply.msg_class is MessageClass.SUCCESS
    assert verify_integrity_sha256(reply, key)


def test_core_rest_secret_credentials() -> None:
    core = make_core(authenticator=RestSecret(("s3cret",)))
    username = f"{int(T0) + 3600}:carol"
    client = Client(core, username=username, password=rest_password("s3cret", username))
    assert client.allocate().msg_class is MessageClass.SUCCESS


def test_core_dual_allocation_without_ipv6_reports_address_error() -> None:
    client = Client(make_core())
    reply = client.allocate(AdditionalAddressFamily(2))
    assert reply.msg_class is MessageClass.SUCCESS
    err = reply.get(AddressErrorCode)
    assert err is not None and err.code == 440 and err.family == 2


def test_core_dual_allocation_with_ipv6() -> None:
    client = Client(make_core(relay_hosts=("198.18.0.2", "2001:db8::2")))
    reply = client.allocate(AdditionalAddressFamily(2))
    assert {r.ip.version for r in reply.get_all(XorRelayedAddress)} == {4, 6}


# ---------------------------------------------------------------- each error code


def test_core_400_allocate_without_requested_transport() -> None:
    assert error_code(Client(make_core()).request(Method.ALLOCATE)) == 400


def test_core_400_channel_number_out_of_range() -> None:
    client = Client(make_core())
    client.relayed()
    reply = client.request(Method.CHANNEL_BIND, ChannelNumber(0x3FFF), peer_attr(*PEER))
    assert error_code(reply) == 400


def test_core_400_channel_number_above_rfc5766_range() -> None:
    client = Client(make_core())
    client.relayed()
    reply = client.request(Method.CHANNEL_BIND, ChannelNumber(0x8000), peer_attr(*PEER))
    assert error_code(reply) == 400


def test_core_channel_number_rfc5766_range_accepted_unless_strict() -> None:
    client = Client(make_core())
    client.relayed()
    ok = client.request(Method.CHANNEL_BIND, ChannelNumber(0x6C7F), peer_attr(*PEER))
    assert ok.msg_class is MessageClass.SUCCESS
    strict = Client(make_core(channel_max=0x4FFF))
    strict.relayed()
    reply = strict.request(Method.CHANNEL_BIND, ChannelNumber(0x5000), peer_attr(*PEER))
    assert error_code(reply) == 400


def test_core_400_missing_realm_with_integrity() -> None:
    client = Client(make_core())
    client.nonce = client._challenge()
    msg = Message.request(
        Method.ALLOCATE, os.urandom(12), RequestedTransport(17), Username("alice")
    )
    reply = client.send(encode_message(msg, key=client.key))
    assert reply is not None and error_code(reply) == 400


def test_core_401_without_integrity_carries_realm_and_nonce() -> None:
    client = Client(make_core())
    reply = client.request(Method.ALLOCATE, RequestedTransport(17), auth=False)
    assert error_code(reply) == 401
    assert reply.get(Realm) == Realm(REALM) and reply.get(Nonce) is not None


def test_core_401_wrong_password() -> None:
    client = Client(make_core(), password="not-it")
    assert error_code(client.allocate()) == 401
    assert client.core.counters["auth_failed:bad-integrity"] >= 1


def test_core_401_expired_rest_username() -> None:
    core = make_core(authenticator=RestSecret(("s3cret",)))
    username = f"{int(T0) - 1}:carol"
    client = Client(core, username=username, password=rest_password("s3cret", username))
    assert error_code(client.allocate()) == 401
    assert core.counters["auth_failed:expired"] == 1


def test_core_403_denied_peer() -> None:
    policy = PeerPolicy.from_strings(["198.18.0.0-198.19.255.255"], [])
    client = Client(make_core(policy=policy))
    client.relayed()
    reply = client.request(Method.CREATE_PERMISSION, peer_attr(PEER[0]))
    assert error_code(reply) == 403
    assert client.core.counters["peer_refused"] == 1


def test_core_403_refused_peer_blocks_all_permissions_of_the_request() -> None:
    client = Client(make_core())  # loopback is refused by default
    client.relayed()
    reply = client.request(
        Method.CREATE_PERMISSION, peer_attr("198.18.2.20"), peer_attr("127.0.0.1")
    )
    assert error_code(reply) == 403
    allocation = next(iter(client.core.allocations.by_five_tuple.values()))
    assert allocation.permissions == {}


def test_core_420_unknown_comprehension_required_attribute() -> None:
    client = Client(make_core())
    reply = client.request(Method.ALLOCATE, RequestedTransport(17), RawAttribute(0x7F01, b"abcd"))
    assert error_code(reply) == 420
    unknown = reply.get(UnknownAttributes)
    assert unknown is not None and unknown.types == (0x7F01,)


def test_core_dont_fragment_sets_df_on_the_relay_socket() -> None:
    client = Client(make_core())
    reply = client.allocate(DontFragment())
    relayed = reply.get(XorRelayedAddress)
    assert relayed is not None
    ports = client.core.ports
    assert isinstance(ports, MemoryRelayPorts)
    assert (str(relayed.ip), relayed.port) in ports.dont_fragment


def test_core_437_second_allocate_on_same_five_tuple() -> None:
    client = Client(make_core())
    client.relayed()
    assert error_code(client.allocate()) == 437


def test_core_437_refresh_without_allocation() -> None:
    assert error_code(Client(make_core()).request(Method.REFRESH)) == 437


def test_core_438_stale_nonce_then_retry_succeeds() -> None:
    client = Client(make_core())
    client.nonce = client._challenge()
    client.now = T0 + 601  # past the nonce lifetime
    tid = os.urandom(12)
    msg = Message.request(
        Method.ALLOCATE,
        tid,
        RequestedTransport(17),
        Username("alice"),
        Realm(REALM),
        Nonce(client.nonce),
    )
    reply = client.send(encode_message(msg, key=client.key))
    assert reply is not None and error_code(reply) == 438
    assert client.allocate().msg_class is MessageClass.SUCCESS  # the helper retries


def test_core_440_unsupported_address_family() -> None:
    reply = Client(make_core()).allocate(RequestedAddressFamily(2))
    assert error_code(reply) == 440


def test_core_441_other_username_on_existing_allocation() -> None:
    core = make_core()
    Client(core).relayed()
    bob = Client(core, username="bob", password="builder")
    assert error_code(bob.request(Method.REFRESH)) == 441


def test_core_442_tcp_relay_not_supported() -> None:
    reply = Client(make_core()).request(Method.ALLOCATE, RequestedTransport(6))
    assert error_code(reply) == 442


def test_core_443_peer_family_mismatch() -> None:
    client = Client(make_core())
    client.relayed()
    reply = client.request(Method.CREATE_PERMISSION, peer_attr("2001:db8::20"))
    assert error_code(reply) == 443


def test_core_486_user_quota() -> None:
    core = make_core(user_quota=1)
    Client(core).relayed()
    other = Client(core, FiveTuple(("198.18.1.13", 3), CLIENT.server, Transport.UDP))
    assert error_code(other.allocate()) == 486


def test_core_508_total_quota() -> None:
    core = make_core(total_quota=1)
    Client(core).relayed()
    bob = Client(
        core, FiveTuple(("198.18.1.14", 4), CLIENT.server, Transport.UDP), "bob", "builder"
    )
    assert error_code(bob.allocate()) == 508


def test_core_508_port_range_exhausted() -> None:
    core = make_core()
    for i in range(10):
        Client(core, FiveTuple((f"198.18.1.{20 + i}", 5), CLIENT.server, Transport.UDP)).relayed()
    late = Client(core, FiveTuple(("198.18.1.99", 5), CLIENT.server, Transport.UDP))
    assert error_code(late.allocate()) == 508


# ---------------------------------------------------------------- drops


def test_core_malformed_datagram_dropped_and_counted() -> None:
    client = Client(make_core())
    assert client.raw(b"\x00\x01\x00") == []
    assert client.core.counters["malformed_dropped"] == 1


def test_core_channel_data_on_unbound_channel_dropped_and_counted() -> None:
    client = Client(make_core())
    client.relayed()
    assert client.raw(ChannelData(0x4005, b"x").encode()) == []
    assert client.core.counters["channel_unbound_dropped"] == 1


def test_core_send_without_permission_dropped_and_counted() -> None:
    client = Client(make_core())
    client.relayed()
    send = Message.indication(Method.SEND, os.urandom(12), peer_attr(*PEER), Data(b"x"))
    assert client.raw(encode_message(send)) == []
    assert client.core.counters["send_no_permission_dropped"] == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "::ffff:127.0.0.1", "0.0.0.0", "::"])
def test_core_send_to_refused_peer_dropped_and_counted(host: str) -> None:
    client = Client(make_core())
    client.relayed()
    send = Message.indication(Method.SEND, os.urandom(12), peer_attr(host), Data(b"x"))
    assert client.raw(encode_message(send)) == []
    assert client.core.counters["send_refused_dropped"] == 1


def test_core_error_response_to_authenticated_request_is_protected() -> None:
    client = Client(make_core())
    client.relayed()
    reply = client.request(Method.CREATE_PERMISSION, peer_attr("2001:db8::20"))
    assert error_code(reply) == 443 and verify_integrity(reply, client.key)


# ---------------------------------------------------------------- Send fast path


def test_core_send_fast_path_agrees_with_full_decode() -> None:
    client = Client(make_core())
    relay = client.relayed()
    client.request(Method.CREATE_PERMISSION, peer_attr(PEER[0]))
    send = encode_message(
        Message.indication(Method.SEND, os.urandom(12), peer_attr(*PEER), Data(b"fast"))
    )
    assert client.core.relay_send_indication(client.now, CLIENT, send)[:3] == (relay, PEER, b"fast")
    assert client.raw(send) == [SendToPeer(relay, PEER, b"fast")]


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "198.18.9.9"])
def test_core_send_fast_path_drops_like_full_decode(host: str) -> None:
    client = Client(make_core())
    client.relayed()
    send = encode_message(
        Message.indication(Method.SEND, os.urandom(12), peer_attr(host), Data(b"x"))
    )
    assert client.core.relay_send_indication(client.now, CLIENT, send) is None
    refused = client.core.counters["send_refused_dropped"]
    unpermitted = client.core.counters["send_no_permission_dropped"]
    assert refused + unpermitted == 1


def test_core_send_fast_path_falls_back_for_fingerprint_and_ipv6() -> None:
    from relay.turn.core import Fallback

    client = Client(make_core())
    client.relayed()
    with_fp = encode_message(
        Message.indication(Method.SEND, os.urandom(12), peer_attr(*PEER), Data(b"x")),
        fingerprint=True,
    )
    v6 = encode_message(
        Message.indication(Method.SEND, os.urandom(12), peer_attr("2001:db8::1"), Data(b"x"))
    )
    for data in (with_fp, v6, with_fp[:30]):
        assert client.core.relay_send_indication(client.now, CLIENT, data) is Fallback.FULL_DECODE


# ---------------------------------------------------------------- pre-encoded responses
# The 401 challenge, the Allocate success and the Data indication are built from encoded
# attributes; they must be byte for byte what encoding the attribute objects gives.

ALGORITHMS = PasswordAlgorithms(((PasswordAlgorithm.MD5, b""), (PasswordAlgorithm.SHA256, b"")))


@pytest.mark.parametrize(("software", "fingerprint"), [("natlab-relay", True), (None, False)])
def test_core_challenge_bytes_equal_attribute_encoding(
    software: str | None, fingerprint: bool
) -> None:
    core = make_core(software=software, fingerprint=fingerprint)
    tid = bytes(range(12))
    bare = encode_message(Message.request(Method.ALLOCATE, tid, RequestedTransport(17)))
    [effect] = core.handle_client(T0, CLIENT, bare)
    assert isinstance(effect, SendToClient)
    nonce = decode_message(effect.data).get(Nonce)
    assert nonce is not None
    attrs: tuple[Attribute, ...] = (
        ErrorCodeAttr(401, "Unauthenticated"),
        Realm(REALM),
        nonce,
        ALGORITHMS,
        *((Software(software),) if software else ()),
    )
    expected = Message(Method.ALLOCATE, MessageClass.ERROR, tid, attrs)
    assert effect.data == encode_message(expected, fingerprint=fingerprint)


@pytest.mark.parametrize(
    ("client_address", "relay_public"),
    [(("198.18.1.10", 40000), {}), (("2001:db8::5", 4000), {"198.18.0.2": "203.0.113.7"})],
)
def test_core_allocate_success_bytes_equal_attribute_encoding(
    client_address: tuple[str, int], relay_public: dict[str, str]
) -> None:
    core = make_core(relay_public=relay_public)
    client = Client(core, FiveTuple(client_address, CLIENT.server, Transport.UDP))
    client.nonce = client._challenge()
    tid = bytes(range(12))
    reply = client.request(Method.ALLOCATE, RequestedTransport(17), tid=tid)
    allocation = core.allocations.by_five_tuple[client.five_tuple]
    (host, port) = allocation.relays[0]
    shown = relay_public.get(host, host)
    attrs = (
        XorRelayedAddress(ipaddress.ip_address(shown), port),
        Lifetime(600),
        XorMappedAddress(ipaddress.ip_address(client_address[0]), client_address[1]),
        Software("natlab-relay"),
    )
    expected = Message(Method.ALLOCATE, MessageClass.SUCCESS, tid, attrs)
    assert allocation.response == encode_message(expected, key=client.key, fingerprint=True)
    assert reply == decode_message(allocation.response)


def test_core_data_indication_bytes_equal_attribute_encoding() -> None:
    client = Client(make_core())
    relay = client.relayed()
    client.request(Method.CREATE_PERMISSION, peer_attr(PEER[0]))
    hop = client.core.relay_to_client(client.now, relay, PEER, b"world")
    assert hop is not None
    tid = hop[1][8:20]
    expected = Message.indication(Method.DATA, tid, peer_attr(*PEER), Data(b"world"))
    assert hop[1] == encode_message(expected, fingerprint=True)


@pytest.mark.parametrize("host", ["198.18.1.10", "0.0.0.0", "255.255.255.255", "2001:db8::1"])
def test_core_packed_ip_agrees_with_ipaddress(host: str) -> None:
    from relay.turn.addresses import packed_ip

    assert packed_ip(host) == ipaddress.ip_address(host).packed


@pytest.mark.parametrize("host", ["010.0.0.1", "1.2.3", "256.0.0.1", "-1.0.0.0", "x", ""])
def test_core_packed_ip_refuses_what_ipaddress_refuses(host: str) -> None:
    from relay.turn.addresses import packed_ip

    with pytest.raises(ValueError):
        ipaddress.ip_address(host)
    with pytest.raises(ValueError):
        packed_ip(host)
