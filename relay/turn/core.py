"""The TURN server core (RFC 8656 over RFC 8489 STUN), sans-IO.

The shell feeds it bytes with the current time and carries out the effects it returns.
Requests are dispatched on (class, method) through ``TurnCore.handlers``; each check in a
handler cites its step of RFC 8656. A handler raises ``ProtocolError`` and ``_error_response``
turns it into the ERROR-CODE answer, in one place.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from relay.stun.attributes import (
    AdditionalAddressFamily,
    AddressErrorCode,
    Attribute,
    ChangeRequest,
    ChannelNumber,
    Data,
    DontFragment,
    ErrorCodeAttr,
    EvenPort,
    IPAddress,
    Lifetime,
    MappedAddress,
    MessageIntegrity,
    MessageIntegritySha256,
    Nonce,
    OtherAddress,
    Padding,
    PasswordAlgorithmAttr,
    PasswordAlgorithms,
    Realm,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    ResponseOrigin,
    ResponsePort,
    Software,
    UnknownAttributes,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    encode_address_value,
    encode_attribute,
    encode_tlv,
)
from relay.stun.channeldata import is_channel_data
from relay.stun.constants import (
    CHANNEL_MIN,
    MAGIC_COOKIE,
    NONCE_COOKIE,
    UDP_PROTOCOL,
    AddressFamily,
    AttrType,
    MessageClass,
    Method,
    PasswordAlgorithm,
)
from relay.stun.errors import StunDecodeError
from relay.stun.integrity import verify_integrity, verify_integrity_sha256
from relay.stun.message import Message, decode_message, encode_body
from relay.turn.addresses import Address, FiveTuple, Transport, family_of, packed_ip
from relay.turn.allocation import Allocation, AllocationTable, ChannelBinding
from relay.turn.auth import quota_identity
from relay.turn.config import RESERVATION_LIFETIME, TurnConfig
from relay.turn.effects import ClientHop, Effect, PeerHop, SendToClient, SendToPeer
from relay.turn.errors import ProtocolError
from relay.turn.nonce import FEATURE_PASSWORD_ALGORITHMS
from relay.turn.ports import RelayPorts, ReservationBook
from relay.turn.quota import LocalQuota, QuotaLedger


@dataclass(frozen=True, slots=True)
class AuthContext:
    """Who sent an authenticated request, and how to protect the answer."""

    username: str
    key: bytes | None  # None when the server runs without authentication
    sha256: bool  # the request used MESSAGE-INTEGRITY-SHA256, so the response does too


@dataclass(slots=True)
class Reservation:
    address: tuple[str, int]
    expires: float


log = logging.getLogger("relay.turn")  # structured lines: "event key=value ..."
_CHANNEL_HEADER = struct.Struct("!HH")
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
_XOR_PEER_ADDRESS = int(AttrType.XOR_PEER_ADDRESS)
_DATA = int(AttrType.DATA)


@dataclass(frozen=True)
class SendShape:
    """The Send indications a fast path forwards without a full decode (RFC 8656 §11.2): one
    XOR-PEER-ADDRESS of an IPv4 peer, one DATA, and only attributes that change nothing
    here besides. Described once: the core's walk below reads it, and the shell hands the
    same codes to the C packet loop (relay.server.datapath), which walks the same way."""

    peer_type: int = _XOR_PEER_ADDRESS
    data_type: int = _DATA
    ignored_types: tuple[int, ...] = (int(AttrType.SOFTWARE), int(AttrType.DONT_FRAGMENT))


SEND_SHAPE = SendShape()
_SEND_IGNORED = frozenset(SEND_SHAPE.ignored_types)
_ANY_TID = bytes(12)  # for encoding attributes that do not depend on the transaction id


class Fallback(Enum):
    """A fast path's answer when the packet needs the full decoding path."""

    FULL_DECODE = 0  # RFC 8656 §12.4: channel number, length


Handler = Callable[["TurnCore", float, FiveTuple, Message], list[Effect]]


class TurnCore:
    """All allocations of one server (or one worker), driven by ``handle_*`` and ``tick``."""

    def __init__(
        self,
        config: TurnConfig,
        ports: RelayPorts,
        quota: QuotaLedger | None = None,
        shared_reservations: ReservationBook | None = None,
    ) -> None:
        self.shared_reservations = shared_reservations
        # raw XOR-PEER-ADDRESS value -> (host, port, peer policy refusal): the policy is fixed
        self._peer_cache: dict[bytes, tuple[str, int, str | None]] = {}
        self.config = config
        self.ports = ports
        self.quota = quota or LocalQuota(config.user_quota, config.total_quota)
        self.allocations = AllocationTable()
        self.reservations: dict[bytes, Reservation] = {}
        self.counters: Counter[str] = Counter()
        self._password_algorithms = PasswordAlgorithms(
            tuple((int(a), b"") for a in config.password_algorithms)
        )
        # Attributes every response of this server repeats, encoded once (RFC 8489 §14).
        self._software = (
            encode_attribute(Software(config.software), _ANY_TID) if config.software else b""
        )
        self._challenge_realm = encode_attribute(Realm(config.realm), _ANY_TID)
        self._challenge_algorithms = encode_attribute(self._password_algorithms, _ANY_TID)
        self._error_codes: dict[tuple[int, str], bytes] = {}
        self._relay_packed: dict[str, bytes] = {}  # relay host -> its public address, packed

    # ------------------------------------------------------------------ entry points

    def handle_client(self, now: float, five_tuple: FiveTuple, data: bytes) -> list[Effect]:
        """Bytes from a client: one datagram, or one frame cut from a stream."""
        if is_channel_data(data, channel_max=self.config.channel_max):
            hop = self.relay_channel_data(now, five_tuple, data)
            return [SendToPeer(hop.relay, hop.peer, hop.payload)] if hop is not None else []
        try:
            message = decode_message(data)
        except StunDecodeError:
            # RFC 8489 §6.3: not a well-formed STUN message -> discard silently
            self.counters["malformed_dropped"] += 1
            return []
        handler = self.handlers.get((message.msg_class, message.method))
        if message.msg_class is MessageClass.REQUEST:
            unknown = message.unknown_comprehension_required()
            if unknown:
                # RFC 8489 §6.3.1.1: 420 listing the unknown comprehension-required types
                self.counters["unknown_attribute_rejected"] += 1
                return self._answer(
                    five_tuple, message, ProtocolError(420, extra=(UnknownAttributes(unknown),))
                )
            if handler is None:
                self.counters["unknown_method_rejected"] += 1
                return self._answer(five_tuple, message, ProtocolError(400, "unknown method"))
        elif handler is None or message.unknown_comprehension_required():
            # RFC 8489 §6.3.2/§6.3.1.2: indications and stray responses are dropped
            self.counters["unexpected_message_dropped"] += 1
            return []
        try:
            return handler(self, now, five_tuple, message)
        except ProtocolError as err:
            return self._answer(five_tuple, message, err)

    def handle_peer(self, now: float, relay: Address, peer: Address, data: bytes) -> list[Effect]:
        """A UDP datagram from a peer on a relayed transport address (RFC 8656 §11.3, §12.7)."""
        hop = self.relay_to_client(now, relay, peer, data)
        return [SendToClient(hop.five_tuple, hop.frame)] if hop is not None else []

    # ------------------------------------------------------------------ fast paths
    # The two per-packet paths return plain tuples instead of effect lists, and the shell
    # calls them directly: no STUN decoding, no dataclass per packet (issue "Performance").

    def relay_channel_data(self, now: float, five_tuple: FiveTuple, data: bytes) -> PeerHop | None:
        """RFC 8656 §12.6: ChannelData from a client -> the hop to its peer, or None when
        the frame is dropped (and counted). The caller has seen a channel number's first
        byte; this is the only place the frame is parsed."""
        counters = self.counters
        if len(data) < 4:
            counters["malformed_dropped"] += 1
            return None
        number = (data[0] << 8) | data[1]
        length = (data[2] << 8) | data[3]
        if length > len(data) - 4 or number > self.config.channel_max:
            counters["malformed_dropped"] += 1  # §12.4: too short for its length field
            return None
        allocation = self.allocations.by_five_tuple.get(five_tuple)
        binding = allocation.channels.get(number) if allocation is not None else None
        if binding is None or now >= binding.expires:
            counters["channel_unbound_dropped"] += 1
            return None
        peer = binding.peer
        expiry = allocation.permissions.get(peer[0]) if allocation is not None else None
        if expiry is None or now >= expiry:
            counters["send_no_permission_dropped"] += 1
            return None
        counters["relayed_to_peer_packets"] += 1
        counters["relayed_to_peer_bytes"] += length
        assert allocation is not None
        deadline = min(allocation.expires, expiry, binding.expires)
        return PeerHop(binding.relay, peer, data[4 : 4 + length], deadline)

    def relay_send_indication(
        self, now: float, five_tuple: FiveTuple, data: bytes
    ) -> PeerHop | Fallback | None:
        """RFC 8656 §11.2 fast path for the common Send indication: an IPv4 XOR-PEER-ADDRESS and
        a DATA attribute, walked by hand. Anything less plain (FINGERPRINT to check, IPv6,
        unknown attributes, malformed) returns ``Fallback.FULL_DECODE`` for the full path."""
        size = len(data)
        if size < 20 or data[4:8] != _COOKIE_BYTES or (data[2] << 8 | data[3]) != size - 20:
            return Fallback.FULL_DECODE
        offset, peer_raw, payload = 20, b"", None
        while offset < size:
            if offset + 4 > size:
                return Fallback.FULL_DECODE
            kind = data[offset] << 8 | data[offset + 1]
            length = data[offset + 2] << 8 | data[offset + 3]
            end = offset + 4 + length
            if end > size:
                return Fallback.FULL_DECODE
            if kind == _XOR_PEER_ADDRESS and not peer_raw:
                peer_raw = data[offset + 4 : end]
            elif kind == _DATA and payload is None:
                payload = data[offset + 4 : end]
            elif kind not in _SEND_IGNORED:
                return Fallback.FULL_DECODE
            offset = end + (-length % 4)
        if payload is None or len(peer_raw) != 8 or peer_raw[1] != AddressFamily.IPV4:
            return Fallback.FULL_DECODE
        peer = self._peer_cache.get(peer_raw)
        if peer is None:
            if len(self._peer_cache) > 4096:
                self._peer_cache.clear()
            port = (peer_raw[2] << 8 | peer_raw[3]) ^ 0x2112
            ip = ipaddress.IPv4Address(int.from_bytes(peer_raw[4:8], "big") ^ MAGIC_COOKIE)
            peer = (str(ip), port, self.config.peer_policy.refusal(ip))
            self._peer_cache[peer_raw] = peer
        host, port, refusal = peer
        counters = self.counters
        allocation = self.allocations.by_five_tuple.get(five_tuple)
        if allocation is None or now >= allocation.expires:
            counters["send_no_allocation_dropped"] += 1
            return None
        if refusal is not None:
            counters["send_refused_dropped"] += 1
            log.warning("send refused client=%s user=%s peer=%s reason=%s",
                        _fmt(five_tuple.client), allocation.username, host, refusal)  # fmt: skip
            return None
        relay = allocation.relay_for_host(host)
        if relay is None:
            counters["send_family_mismatch_dropped"] += 1
            return None
        expiry = allocation.permissions.get(host)
        if expiry is None or now >= expiry:
            counters["send_no_permission_dropped"] += 1
            return None
        counters["relayed_to_peer_packets"] += 1
        counters["relayed_to_peer_bytes"] += len(payload)
        return PeerHop(relay, (host, port), payload, min(allocation.expires, expiry))

    def relay_to_client(
        self, now: float, relay: Address, peer: Address, data: bytes
    ) -> ClientHop | None:
        """A peer's datagram -> the hop to the client (ChannelData or Data indication), or
        None when it is dropped (and counted)."""
        counters = self.counters
        allocation = self.allocations.by_relay.get(relay)
        if allocation is None or now >= allocation.expires:
            counters["peer_no_allocation_dropped"] += 1
            return None
        # RFC 8656 §9: only peers with a permission may reach the client
        expiry = allocation.permissions.get(peer[0])
        if expiry is None or now >= expiry:
            counters["peer_no_permission_dropped"] += 1
            return None
        size = len(data)
        if size > self.config.max_payload:
            counters["oversize_dropped"] += 1
            return None
        counters["relayed_to_client_packets"] += 1
        counters["relayed_to_client_bytes"] += size
        five_tuple = allocation.five_tuple
        binding = allocation.peer_channels.get(peer)
        if binding is not None and now < binding.expires:
            # RFC 8656 §12.7: ChannelData, padded to 4 bytes over streams (§12.5)
            header = _CHANNEL_HEADER.pack(binding.number, size)
            deadline = min(allocation.expires, expiry, binding.expires)
            if five_tuple.transport is not Transport.UDP and size % 4:
                return ClientHop(five_tuple, header + data + bytes(4 - size % 4), deadline)
            return ClientHop(five_tuple, header + data, deadline)
        # RFC 8656 §11.3: a Data indication (XOR-PEER-ADDRESS, DATA), encoded without objects
        tid = secrets.token_bytes(12)
        parts = [
            encode_tlv(_XOR_PEER_ADDRESS, encode_address_value(packed_ip(peer[0]), peer[1], tid)),
            encode_tlv(_DATA, data),
        ]
        indication = self._encode_body(
            Method.DATA, MessageClass.INDICATION, tid, parts, None, software=False
        )
        return ClientHop(five_tuple, indication, 0.0)

    def route_deadline(self, five_tuple: FiveTuple, peer: Address, number: int | None) -> float:
        """Until when relaying from this client to ``peer`` (on channel ``number``, or by Send
        indication when None) stays allowed without a new decision: the earliest expiry of
        the allocation, the permission (RFC 8656 §9) and the channel binding (§12); 0.0 when
        it is not allowed now. The rule as a query: the fast paths return the same value
        with each hop, so the shell never asks twice."""
        allocation = self.allocations.by_five_tuple.get(five_tuple)
        if allocation is None:
            return 0.0
        deadline = min(allocation.expires, allocation.permissions.get(peer[0], 0.0))
        if number is not None:
            binding = allocation.channels.get(number)
            if binding is None or binding.peer != peer:
                return 0.0
            deadline = min(deadline, binding.expires)
        return deadline

    def peer_route_deadline(self, relay: Address, peer: Address) -> float:
        """As ``route_deadline``, for a peer's datagrams to the client over its channel
        (RFC 8656 §12.7); 0.0 without a channel (those become Data indications)."""
        allocation = self.allocations.by_relay.get(relay)
        binding = allocation.peer_channels.get(peer) if allocation is not None else None
        if allocation is None or binding is None:
            return 0.0
        return min(allocation.expires, allocation.permissions.get(peer[0], 0.0), binding.expires)

    def tick(self, now: float) -> list[Effect]:
        """Expire allocations, permissions, channels and reservations (RFC 8656 §5, §9, §12)."""
        for allocation in self.allocations.expired(now):
            self._delete(allocation, "expired")
        for allocation in self.allocations.by_five_tuple.values():
            allocation.expire(now)
        for token in [t for t, r in self.reservations.items() if r.expires <= now]:
            self.ports.close(self.reservations.pop(token).address)
            if self.shared_reservations is not None:
                self.shared_reservations.take(token, now)
        return []

    def close_connection(self, five_tuple: FiveTuple) -> None:
        """RFC 8656 §3.1: over TCP/TLS the allocation dies with its connection."""
        allocation = self.allocations.by_five_tuple.get(five_tuple)
        if allocation is not None:
            self._delete(allocation, "connection closed")

    # ------------------------------------------------------------------ request handlers

    def handle_binding(self, now: float, five_tuple: FiveTuple, msg: Message) -> list[Effect]:
        """RFC 8489 §3: reflect the source transport address. No authentication.

        With RFC 5780 discovery on, also OTHER-ADDRESS and RESPONSE-ORIGIN, and CHANGE-REQUEST
        and RESPONSE-PORT choose which socket answers and where to (RFC 5780 §6.1).
        """
        self.counters["binding_requests"] += 1
        change = msg.get(ChangeRequest)
        response_port = msg.get(ResponsePort)
        discovery = self.config.discovery
        if discovery is None and (change is not None or response_port is not None):
            # RFC 5780 §7.2/§7.5: a server without discovery does not know these attributes
            types = [AttrType.CHANGE_REQUEST] if change is not None else []
            types += [AttrType.RESPONSE_PORT] if response_port is not None else []
            raise ProtocolError(420, "RFC 5780 is off", (UnknownAttributes(tuple(types)),))
        client_ip = _ip(five_tuple.client[0])
        attrs: list[Attribute] = [
            XorMappedAddress(client_ip, five_tuple.client[1]),
            MappedAddress(client_ip, five_tuple.client[1]),  # RFC 5389 §15.1 / RFC 3489 clients
        ]
        if discovery is None:
            return self._success(five_tuple, msg, tuple(attrs), None)
        source, destination = five_tuple.server, five_tuple.client
        if five_tuple.transport.is_stream and (
            response_port is not None or (change and (change.change_ip or change.change_port))
        ):
            raise ProtocolError(400, "CHANGE-REQUEST and RESPONSE-PORT are UDP only")  # §6.1
        if change is not None:
            source = discovery.changed(
                five_tuple.server, change_ip=change.change_ip, change_port=change.change_port
            )
        if response_port is not None:
            destination = (five_tuple.client[0], response_port.port)  # §7.5
        attrs.append(ResponseOrigin(_ip(source[0]), source[1]))  # §7.3
        other = discovery.other_address(five_tuple.server)
        attrs.append(OtherAddress(_ip(other[0]), other[1]))  # §7.4
        padding = msg.get(Padding)
        if padding is not None:
            attrs.append(Padding(bytes(len(padding.data))))  # §7.6: pad the answer alike
        self.counters["binding_discovery"] += 1
        out = FiveTuple(destination, source, five_tuple.transport)
        response = Message(msg.method, MessageClass.SUCCESS, msg.transaction_id, tuple(attrs))
        return [SendToClient(out, self._encode(response, None))]

    def handle_allocate(self, now: float, five_tuple: FiveTuple, msg: Message) -> list[Effect]:
        existing = self.allocations.by_five_tuple.get(five_tuple)
        if existing is not None and existing.transaction_id == msg.transaction_id:
            # RFC 8656 §7.2: a retransmitted Allocate gets the original success response again
            return [SendToClient(five_tuple, existing.response)]
        auth = self._authenticate(now, five_tuple, msg)  # RFC 8656 §7.2 step 1
        if existing is not None:
            raise ProtocolError(437, "5-tuple already has an allocation")  # step 2
        transport = msg.get(RequestedTransport)  # step 3
        if transport is None:
            raise ProtocolError(400, "REQUESTED-TRANSPORT missing")
        if transport.protocol != UDP_PROTOCOL:
            raise ProtocolError(442, f"transport protocol {transport.protocol}")
        # step 4: DONT-FRAGMENT is honoured per allocation: its relay socket sets DF
        dont_fragment = msg.get(DontFragment) is not None
        token = msg.get(ReservationToken)
        even_port = msg.get(EvenPort)
        requested_family = msg.get(RequestedAddressFamily)
        additional_family = msg.get(AdditionalAddressFamily)
        if token is not None and (even_port is not None or requested_family is not None):
            raise ProtocolError(400, "RESERVATION-TOKEN with EVEN-PORT or address family")  # step 5
        if requested_family is not None and additional_family is not None:
            raise ProtocolError(400, "both REQUESTED- and ADDITIONAL-ADDRESS-FAMILY")  # §7.2
        if additional_family is not None and additional_family.family != AddressFamily.IPV6:
            raise ProtocolError(400, "ADDITIONAL-ADDRESS-FAMILY must be IPv6")
        families = self.ports.families()
        family = AddressFamily.IPV4
        if requested_family is not None:
            if requested_family.family not in (AddressFamily.IPV4, AddressFamily.IPV6):
                raise ProtocolError(440, f"unknown address family {requested_family.family}")
            family = AddressFamily(requested_family.family)
        if family not in families:
            raise ProtocolError(440, f"no relay address of family {family.name}")
        user = quota_identity(auth.username)
        self._check_quota(user)  # step 7 (486/508 before ports are bound)
        try:
            return self._create_allocation(
                now, five_tuple, msg, auth, user, family, families, dont_fragment
            )
        except ProtocolError:
            self.quota.release(user)
            raise

    def _create_allocation(
        self,
        now: float,
        five_tuple: FiveTuple,
        msg: Message,
        auth: AuthContext,
        user: str,
        family: AddressFamily,
        families: frozenset[AddressFamily],
        dont_fragment: bool,
    ) -> list[Effect]:
        """RFC 8656 §7.2 steps 6-10, once the request passed every check."""
        token = msg.get(ReservationToken)
        even_port = msg.get(EvenPort)
        additional_family = msg.get(AdditionalAddressFamily)
        lifetime = self._lifetime(msg)
        relays: list[tuple[str, int]] = []
        reserved: tuple[str, int] | None = None
        if token is not None:
            # step 6: a port held back by an earlier EVEN-PORT R=1 Allocate
            address = self._claim_reservation(token.token, now)
            if address is None:
                raise ProtocolError(508, "unknown or expired reservation token")
            if not self.ports.open_reserved(address):
                raise ProtocolError(508, "reserved port is gone")
            relays.append(address)
        else:
            grant = self.ports.open(
                family,
                even=even_port is not None,
                reserve_next=even_port is not None and even_port.reserve,
                dont_fragment=dont_fragment,
            )
            if grant is None:
                self.counters["relay_ports_exhausted"] += 1
                raise ProtocolError(508, "no relay port available")
            relays.append(grant.address)
            reserved = grant.reserved
        extra: list[Attribute] = []
        if additional_family is not None:
            # RFC 8656 §7.2: dual allocation, or the IPv4 one with ADDRESS-ERROR-CODE for IPv6
            second = (
                self.ports.open(AddressFamily.IPV6, dont_fragment=dont_fragment)
                if AddressFamily.IPV6 in families
                else None
            )
            if second is None:
                extra.append(
                    AddressErrorCode(AddressFamily.IPV6, 440, "Address Family not Supported")
                )
            else:
                relays.append(second.address)
        new_token = b""
        if reserved is not None:
            new_token = secrets.token_bytes(8)
            self.reservations[new_token] = Reservation(reserved, now + RESERVATION_LIFETIME)
            if self.shared_reservations is not None:
                self.shared_reservations.put(new_token, reserved, now + RESERVATION_LIFETIME)
        allocation = Allocation(
            five_tuple=five_tuple,
            relays=tuple(relays),
            username=auth.username,
            realm=self.config.realm,
            key=auth.key,
            quota_identity=user,
            expires=now + lifetime,
            transaction_id=msg.transaction_id,
        )
        # The success response, encoded attribute by attribute without ipaddress objects:
        # XOR-RELAYED-ADDRESS(es), LIFETIME, [ADDRESS-ERROR-CODE], [RESERVATION-TOKEN],
        # XOR-MAPPED-ADDRESS (RFC 8656 §7.2 step 10).
        tid = msg.transaction_id
        parts = [
            encode_tlv(
                AttrType.XOR_RELAYED_ADDRESS,
                encode_address_value(self._public_packed(r[0]), r[1], tid),
            )
            for r in relays
        ]
        parts.append(encode_tlv(AttrType.LIFETIME, int(lifetime).to_bytes(4, "big")))  # §18.2
        parts += [encode_attribute(attr, tid) for attr in extra]
        if new_token:
            parts.append(encode_tlv(AttrType.RESERVATION_TOKEN, new_token))
        client = five_tuple.client
        mapped = encode_address_value(packed_ip(client[0]), client[1], tid)
        parts.append(encode_tlv(AttrType.XOR_MAPPED_ADDRESS, mapped))
        allocation.response = self._encode_body(msg.method, MessageClass.SUCCESS, tid, parts, auth)
        self.allocations.add(allocation)
        self.counters["allocations_total"] += 1
        log.info(
            "allocation created client=%s transport=%s relay=%s user=%s lifetime=%d",
            _fmt(client),
            five_tuple.transport.value,
            _fmt(relays[0]) if len(relays) == 1 else ",".join(map(_fmt, relays)),
            auth.username,
            lifetime,
        )
        return [SendToClient(five_tuple, allocation.response)]

    def _public_packed(self, host: str) -> bytes:
        """A relay host's address as XOR-RELAYED-ADDRESS shows it (external-ip), packed."""
        packed = self._relay_packed.get(host)
        if packed is None:
            packed = packed_ip(self.config.relay_public.get(host, host))
            self._relay_packed[host] = packed  # one entry per relay host
        return packed

    def handle_refresh(self, now: float, five_tuple: FiveTuple, msg: Message) -> list[Effect]:
        auth = self._authenticate(now, five_tuple, msg)
        allocation = self._allocation_of(five_tuple, auth)  # RFC 8656 §7.3: 437 without one
        requested_family = msg.get(RequestedAddressFamily)
        if requested_family is not None and not any(
            family_of(_ip(r[0])) == requested_family.family for r in allocation.relays
        ):
            raise ProtocolError(443, "REQUESTED-ADDRESS-FAMILY does not match")  # §7.3
        lifetime_attr = msg.get(Lifetime)
        if lifetime_attr is not None and lifetime_attr.seconds == 0:
            self._delete(allocation, "refresh lifetime 0")
            return self._success(five_tuple, msg, (Lifetime(0),), auth)
        lifetime = self._lifetime(msg)
        allocation.expires = now + lifetime
        return self._success(five_tuple, msg, (Lifetime(int(lifetime)),), auth)

    def handle_create_permission(
        self, now: float, five_tuple: FiveTuple, msg: Message
    ) -> list[Effect]:
        auth = self._authenticate(now, five_tuple, msg)
        allocation = self._allocation_of(five_tuple, auth)  # RFC 8656 §9.2: 437
        peers = msg.get_all(XorPeerAddress)
        if not peers:
            raise ProtocolError(400, "XOR-PEER-ADDRESS missing")
        # RFC 8656 §9.2: every peer is checked before any permission is installed
        hosts = [self._check_peer(allocation, peer.ip) for peer in peers]
        expiry = now + self.config.permission_lifetime
        for host in hosts:
            allocation.permissions[host] = expiry
        self.counters["permissions_created"] += len(hosts)
        return self._success(five_tuple, msg, (), auth)

    def handle_channel_bind(self, now: float, five_tuple: FiveTuple, msg: Message) -> list[Effect]:
        auth = self._authenticate(now, five_tuple, msg)
        allocation = self._allocation_of(five_tuple, auth)  # RFC 8656 §11.2: 437
        number_attr = msg.get(ChannelNumber)
        peer_attr = msg.get(XorPeerAddress)
        if number_attr is None or peer_attr is None:
            raise ProtocolError(400, "CHANNEL-NUMBER and XOR-PEER-ADDRESS are required")
        number = number_attr.number
        if not CHANNEL_MIN <= number <= self.config.channel_max:
            raise ProtocolError(400, f"channel number 0x{number:04x} out of range")  # §11.2
        host = self._check_peer(allocation, peer_attr.ip)
        peer = (host, peer_attr.port)
        bound = allocation.channels.get(number)
        if bound is not None and bound.held(now) and bound.peer != peer:
            raise ProtocolError(400, "channel bound to another peer")  # §11.2
        other = allocation.peer_channels.get(peer)
        if other is not None and other.held(now) and other.number != number:
            raise ProtocolError(400, "peer bound to another channel")  # §11.2
        expires = now + self.config.channel_lifetime
        if bound is not None and bound.peer == peer:
            bound.expires = expires
        else:
            relay = allocation.relay_for_host(host)
            assert relay is not None  # the family was checked by _check_peer
            binding = ChannelBinding(number, peer, expires, relay)
            allocation.channels[number] = binding
            allocation.peer_channels[peer] = binding
            self.counters["channels_bound"] += 1
        # §11.2: binding a channel installs or refreshes the permission too
        allocation.permissions[host] = max(
            allocation.permissions.get(host, 0.0), now + self.config.permission_lifetime
        )
        return self._success(five_tuple, msg, (), auth)

    def handle_send(self, now: float, five_tuple: FiveTuple, msg: Message) -> list[Effect]:
        """RFC 8656 §11.2 Send indication: relay DATA to the peer, or drop silently."""
        allocation = self.allocations.by_five_tuple.get(five_tuple)
        peer_attr = msg.get(XorPeerAddress)
        data_attr = msg.get(Data)
        if allocation is None or now >= allocation.expires:
            self.counters["send_no_allocation_dropped"] += 1
            return []
        if peer_attr is None or data_attr is None:
            self.counters["malformed_dropped"] += 1
            return []
        refusal = self.config.peer_policy.refusal(peer_attr.ip)
        if refusal is not None:
            self.counters["send_refused_dropped"] += 1
            log.warning(
                "send refused client=%s user=%s peer=%s reason=%s",
                _fmt(five_tuple.client),
                allocation.username,
                peer_attr.ip,
                refusal,
            )
            return []
        host = str(peer_attr.ip)
        relay = allocation.relay_for_host(host)
        if relay is None:
            self.counters["send_family_mismatch_dropped"] += 1
            return []
        if not allocation.permitted(host, now):
            self.counters["send_no_permission_dropped"] += 1
            return []
        if len(data_attr.data) > self.config.max_payload:
            self.counters["oversize_dropped"] += 1
            return []
        self.counters["relayed_to_peer_packets"] += 1
        self.counters["relayed_to_peer_bytes"] += len(data_attr.data)
        return [SendToPeer(relay, (host, peer_attr.port), data_attr.data)]

    handlers: dict[tuple[MessageClass, int], Handler] = {
        (MessageClass.REQUEST, Method.BINDING): handle_binding,
        (MessageClass.REQUEST, Method.ALLOCATE): handle_allocate,
        (MessageClass.REQUEST, Method.REFRESH): handle_refresh,
        (MessageClass.REQUEST, Method.CREATE_PERMISSION): handle_create_permission,
        (MessageClass.REQUEST, Method.CHANNEL_BIND): handle_channel_bind,
        (MessageClass.INDICATION, Method.SEND): handle_send,
    }

    # ------------------------------------------------------------------ pieces

    def _check_peer(self, allocation: Allocation, ip: IPAddress) -> str:
        """Family (RFC 8656 §9.2: 443), then peer policy on the canonical address (403)."""
        host = str(ip)
        if allocation.relay_for_host(host) is None:
            self.counters["peer_family_mismatch"] += 1
            raise ProtocolError(443, f"peer {host} has no relayed address of its family")
        reason = self.config.peer_policy.refusal(ip)
        if reason is not None:
            self.counters["peer_refused"] += 1
            log.warning(
                "peer refused client=%s user=%s peer=%s reason=%s",
                _fmt(allocation.five_tuple.client),
                allocation.username,
                host,
                reason,
            )
            raise ProtocolError(403, f"peer {host} refused: {reason}")
        return host

    def _allocation_of(self, five_tuple: FiveTuple, auth: AuthContext) -> Allocation:
        allocation = self.allocations.by_five_tuple.get(five_tuple)
        if allocation is None:
            raise ProtocolError(437, "no allocation for this 5-tuple")
        if allocation.username != auth.username:
            # RFC 8656 §5: later requests must use the credentials that created the allocation
            raise ProtocolError(441, "username differs from the allocation's")
        return allocation

    def _claim_reservation(self, token: bytes, now: float) -> Address | None:
        """This worker's own reservation, or (worker mode) one another worker issued."""
        shared = self.shared_reservations
        local = self.reservations.pop(token, None)
        if local is not None:
            if shared is not None:
                shared.take(token, now)
            return local.address if local.expires > now else None
        return shared.take(token, now) if shared is not None else None

    def _lifetime(self, msg: Message) -> float:
        """RFC 8656 §7.2 step 9 / §7.3: min(requested, max), never below the default."""
        requested = msg.get(Lifetime)
        cfg = self.config
        if requested is None:
            return cfg.default_lifetime
        return max(cfg.default_lifetime, min(float(requested.seconds), cfg.max_lifetime))

    def _check_quota(self, user: str) -> None:
        refusal = self.quota.acquire(user)
        if refusal is not None:
            log.warning("allocation refused user=%s code=%d reason=quota", user, refusal)
        if refusal == 486:
            self.counters["quota_user_rejected"] += 1
            raise ProtocolError(486, "per-user allocation quota reached")
        if refusal is not None:
            self.counters["quota_total_rejected"] += 1
            raise ProtocolError(refusal, "total allocation quota reached")

    def _delete(self, allocation: Allocation, why: str) -> None:
        log.info(
            "allocation deleted client=%s transport=%s relay=%s user=%s reason=%s",
            _fmt(allocation.five_tuple.client),
            allocation.five_tuple.transport.value,
            ",".join(_fmt(r) for r in allocation.relays),
            allocation.username,
            why.replace(" ", "-"),
        )
        self.allocations.remove(allocation)
        self.quota.release(allocation.quota_identity)
        for relay in allocation.relays:
            self.ports.close(relay)
        self.counters["allocations_deleted"] += 1

    # ------------------------------------------------------------------ authentication

    def _authenticate(self, now: float, five_tuple: FiveTuple, msg: Message) -> AuthContext:
        """RFC 8489 §9.2.4: long-term credential checks, in the RFC's order."""
        cfg = self.config
        if cfg.authenticator is None:
            return AuthContext(username="", key=None, sha256=False)
        client = five_tuple.client[0]
        has_sha1 = msg.integrity_offset is not None
        has_sha256 = msg.integrity_sha256_offset is not None
        if not (has_sha1 or has_sha256):
            self.counters["auth_challenges"] += 1
            raise ProtocolError(
                401, "authentication required", encoded=self._challenge(now, client)
            )
        username = msg.get(Username)
        realm = msg.get(Realm)
        nonce = msg.get(Nonce)
        if username is None or realm is None or nonce is None:
            self._auth_failed("missing-attributes")
            raise ProtocolError(400, "USERNAME, REALM and NONCE are required")
        algorithm = self._password_algorithm(msg, nonce.value)
        if realm.value != cfg.realm:
            self._auth_failed("wrong-realm")
            raise ProtocolError(401, "wrong realm", encoded=self._challenge(now, client))
        lookup = cfg.authenticator.lookup(username.value, cfg.realm, algorithm, now)
        if not lookup.keys:
            self._auth_failed(lookup.reason or "unknown-user")
            raise ProtocolError(
                401, lookup.reason or "unknown user", encoded=self._challenge(now, client)
            )
        verify = verify_integrity_sha256 if has_sha256 else verify_integrity
        key = next((k for k in lookup.keys if verify(msg, k)), None)
        if key is None:
            self._auth_failed("bad-integrity")
            raise ProtocolError(
                401, "MESSAGE-INTEGRITY mismatch", encoded=self._challenge(now, client)
            )
        state = cfg.nonces.check(nonce.value, now, client)
        if state != "ok":
            self._auth_failed(f"nonce-{state}")
            raise ProtocolError(438, f"nonce {state}", encoded=self._challenge(now, client))
        return AuthContext(username=username.value, key=key, sha256=has_sha256)

    def _password_algorithm(self, msg: Message, nonce: str) -> int:
        """RFC 8489 §9.2.4: downgrade protection when the nonce advertised algorithms."""
        algorithms = msg.get(PasswordAlgorithms)
        chosen = msg.get(PasswordAlgorithmAttr)
        features = self.config.nonces.features_of(nonce) if nonce.startswith(NONCE_COOKIE) else None
        if features is None or not features & FEATURE_PASSWORD_ALGORITHMS:
            return PasswordAlgorithm.MD5
        if algorithms is None and chosen is None:
            return PasswordAlgorithm.MD5
        if algorithms is None or chosen is None:
            self._auth_failed("password-algorithms")
            raise ProtocolError(400, "PASSWORD-ALGORITHMS and PASSWORD-ALGORITHM go together")
        if algorithms != self._password_algorithms:
            self._auth_failed("password-algorithms")
            raise ProtocolError(400, "PASSWORD-ALGORITHMS differs from the server's")
        if chosen.algorithm not in {a for a, _ in algorithms.algorithms}:
            self._auth_failed("password-algorithms")
            raise ProtocolError(400, "PASSWORD-ALGORITHM not offered")
        return chosen.algorithm

    def _challenge(self, now: float, client: str) -> bytes:
        """REALM, NONCE, PASSWORD-ALGORITHMS of a 401/438 (RFC 8489 §9.2.4), encoded: only the
        nonce differs from one challenge to the next."""
        nonce = self.config.nonces.issue(now, client).encode("ascii")  # qdtext (§14.10)
        return (
            self._challenge_realm + encode_tlv(AttrType.NONCE, nonce) + self._challenge_algorithms
        )

    def _auth_failed(self, reason: str) -> None:
        log.info("auth failed reason=%s", reason)
        self.counters["auth_failed"] += 1
        self.counters[f"auth_failed:{reason}"] += 1

    # ------------------------------------------------------------------ responses

    def _success(
        self,
        five_tuple: FiveTuple,
        request: Message,
        attrs: tuple[Attribute, ...],
        auth: AuthContext | None,
    ) -> list[Effect]:
        tid = request.transaction_id
        parts = [encode_attribute(attr, tid) for attr in attrs]
        data = self._encode_body(request.method, MessageClass.SUCCESS, tid, parts, auth)
        return [SendToClient(five_tuple, data)]

    def _answer(self, five_tuple: FiveTuple, request: Message, err: ProtocolError) -> list[Effect]:
        """The one place where a ProtocolError becomes an error response (RFC 8489 §14.8)."""
        self.counters[f"error_{err.code}"] += 1
        tid = request.transaction_id
        error_code = self._error_codes.get((err.code, err.reason))
        if error_code is None:
            error_code = encode_attribute(ErrorCodeAttr(err.code, err.reason), tid)
            if len(self._error_codes) < 64:  # the codes and reasons are ours: a few dozen
                self._error_codes[(err.code, err.reason)] = error_code
        parts = [error_code, *(encode_attribute(attr, tid) for attr in err.extra), err.encoded]
        auth = self._response_auth(five_tuple, request) if err.protected else None
        data = self._encode_body(request.method, MessageClass.ERROR, tid, parts, auth)
        return [SendToClient(five_tuple, data)]

    def _response_auth(self, five_tuple: FiveTuple, request: Message) -> AuthContext | None:
        """Protect an error answer with the allocation's key when the request carried it."""
        allocation = self.allocations.by_five_tuple.get(five_tuple)
        if allocation is None or allocation.key is None:
            return None
        if request.get(MessageIntegrity) is None and request.get(MessageIntegritySha256) is None:
            return None
        sha256 = request.integrity_sha256_offset is not None
        verify = verify_integrity_sha256 if sha256 else verify_integrity
        if not verify(request, allocation.key):
            return None
        return AuthContext(allocation.username, allocation.key, sha256)

    def _encode(self, msg: Message, auth: AuthContext | None, *, software: bool = True) -> bytes:
        tid = msg.transaction_id
        parts = [encode_attribute(attr, tid) for attr in msg.attributes]
        return self._encode_body(msg.method, msg.msg_class, tid, parts, auth, software=software)

    def _encode_body(
        self,
        method: int,
        msg_class: MessageClass,
        transaction_id: bytes,
        parts: list[bytes],
        auth: AuthContext | None,
        *,
        software: bool = True,
    ) -> bytes:
        """Encoded attributes + SOFTWARE, then MESSAGE-INTEGRITY(-SHA256) with the request's
        algorithm (RFC 8489 §9.2.4) and FINGERPRINT when configured."""
        if software:
            parts.append(self._software)
        key = auth.key if auth is not None else None
        sha256 = auth is not None and auth.sha256
        return encode_body(
            method,
            msg_class,
            transaction_id,
            b"".join(parts),
            key=key,
            sha1=not sha256,
            sha256=sha256,
            fingerprint=self.config.fingerprint,
        )


def _ip(host: str) -> IPAddress:
    return ipaddress.ip_address(host)


def _fmt(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
