"""A blocking TURN-over-UDP test client built on relay.stun (RFC 8489 long-term auth, RFC 8656).

Every receive is bounded by a timeout; the client never retransmits on its own (loopback).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from dataclasses import dataclass

from relay.stun.attributes import (
    Attribute,
    ChannelNumber,
    Data,
    ErrorCodeAttr,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
    XorPeerAddress,
    XorRelayedAddress,
)
from relay.stun.constants import UDP_PROTOCOL, MessageClass, Method
from relay.stun.errors import StunDecodeError
from relay.stun.integrity import long_term_key
from relay.stun.message import Message, decode_message, encode_message

RECV_TIMEOUT_S = 2.0
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TurnRequestError(AssertionError):
    pass


@dataclass
class RawTurnClient:
    server: tuple[str, int]
    username: str = ""
    password: str = ""
    local_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        family = socket.AF_INET6 if ":" in self.local_host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((self.local_host, 0))
        self.realm: str | None = None
        self.nonce: str | None = None
        self.key: bytes | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawTurnClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- raw datagrams ---

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    def recv_raw(self, timeout: float = RECV_TIMEOUT_S) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            data, addr = self.sock.recvfrom(70000)
        except (TimeoutError, ConnectionRefusedError):
            return None
        assert addr[:2] == self.server, f"datagram from {addr}, expected {self.server}"
        return data

    def recv_response(self, tid: bytes, timeout: float = RECV_TIMEOUT_S) -> Message | None:
        """Next response with transaction id tid; other datagrams are skipped (bounded)."""
        deadline = time.monotonic() + timeout
        for _ in range(1000):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            data = self.recv_raw(remaining)
            if data is None:
                return None
            try:
                msg = decode_message(data)
            except StunDecodeError:
                continue
            if msg.transaction_id == tid and msg.msg_class in (
                MessageClass.SUCCESS,
                MessageClass.ERROR,
            ):
                return msg
        return None

    # --- requests ---

    def auth_attributes(self) -> tuple[Attribute, ...]:
        assert self.realm is not None and self.nonce is not None
        return (Username(self.username), Realm(self.realm), Nonce(self.nonce))

    def encode(self, msg: Message, *, authenticated: bool = True) -> bytes:
        if authenticated and self.key is not None:
            msg = msg.with_attributes(*self.auth_attributes())
            return encode_message(msg, key=self.key, fingerprint=True)
        return encode_message(msg, fingerprint=True)

    def request(self, method: int, *attrs: Attribute, timeout: float = RECV_TIMEOUT_S) -> Message:
        """Authenticated request: learns REALM/NONCE from a 401, follows one 438 (stale nonce)."""
        for _ in range(3):
            tid = os.urandom(12)
            msg = Message.request(method, tid, *attrs)
            self.send_raw(self.encode(msg))
            response = self.recv_response(tid, timeout)
            if response is None:
                raise TurnRequestError(f"no response to {Method(method).name} within {timeout}s")
            code = error_code(response)
            realm, nonce = response.get(Realm), response.get(Nonce)
            if code in (401, 438) and nonce is not None and (realm or self.realm):
                if code == 401 and self.key is not None:
                    return response  # credentials refused
                self.realm = realm.value if realm else self.realm
                self.nonce = nonce.value
                assert self.realm is not None
                self.key = long_term_key(self.username, self.realm, self.password)
                continue
            return response
        raise TurnRequestError(f"{Method(method).name}: still 401/438 after 3 attempts")

    def allocate(self, *extra: Attribute) -> tuple[str, int]:
        response = self.request(Method.ALLOCATE, RequestedTransport(UDP_PROTOCOL), *extra)
        assert_success(response)
        relayed = response.get(XorRelayedAddress)
        assert relayed is not None, response
        return str(relayed.ip), relayed.port

    def create_permission(self, ip: IPAddress, port: int = 0) -> Message:
        return self.request(Method.CREATE_PERMISSION, XorPeerAddress(ip, port))

    def channel_bind(self, channel: int, ip: IPAddress, port: int) -> Message:
        return self.request(Method.CHANNEL_BIND, ChannelNumber(channel), XorPeerAddress(ip, port))

    def send_indication(self, ip: IPAddress, port: int, data: bytes) -> None:
        # RFC 8656 §11: indications carry no MESSAGE-INTEGRITY.
        msg = Message.indication(Method.SEND, os.urandom(12), XorPeerAddress(ip, port), Data(data))
        self.send_raw(encode_message(msg, fingerprint=True))


def error_code(msg: Message) -> int | None:
    attr = msg.get(ErrorCodeAttr)
    return attr.code if attr is not None and msg.msg_class == MessageClass.ERROR else None


def assert_success(msg: Message) -> None:
    if msg.msg_class != MessageClass.SUCCESS:
        attr = msg.get(ErrorCodeAttr)
        raise TurnRequestError(
            f"{Method(msg.method).name} failed: "
            f"{(attr.code, attr.reason) if attr else 'no ERROR-CODE'} {msg.attributes}"
        )
