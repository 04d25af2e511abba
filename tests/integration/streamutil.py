"""Helpers for the TCP/TLS relay tests: a test certificate, a blocking TURN-over-stream client,
a free UDP port, and the turnutils_uclient summary parser.

Every receive is bounded by a timeout; nothing here binds anything but the address it is given.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from relay.stun.attributes import (
    Attribute,
    ErrorCodeAttr,
    Lifetime,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
    XorRelayedAddress,
)
from relay.stun.channeldata import StreamFramer
from relay.stun.constants import UDP_PROTOCOL, MessageClass, Method
from relay.stun.errors import StunDecodeError
from relay.stun.integrity import long_term_key
from relay.stun.message import Message, decode_message, encode_message

LOOPBACK = "127.0.0.1"
RECV_TIMEOUT_S = 2.0


# --- certificates ----------------------------------------------------------------------------


def make_cert(directory: Path, name: str = "cert", cn: str = "natlab-test") -> tuple[Path, Path]:
    """Self-signed P-256 certificate valid for 1 day, SAN IP:127.0.0.1 (aioice checks the host)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl not installed")
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", f"/CN={cn}", "-keyout", str(key), "-out", str(cert),
            "-addext", f"subjectAltName=IP:{LOOPBACK},DNS:{cn}",
        ],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def pem_fingerprint(cert: Path) -> str:
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    return hashlib.sha256(der).hexdigest()


def client_context(cafile: Path | None = None) -> ssl.SSLContext:
    """A client context that trusts cafile only (or verifies nothing when cafile is None)."""
    if cafile is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=str(cafile))


# --- ports -----------------------------------------------------------------------------------


def free_udp_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# --- TURN over a stream ----------------------------------------------------------------------


class TurnRequestError(AssertionError):
    pass


@dataclass
class StreamTurnClient:
    """TURN over TCP, or TLS when tls is a client context (RFC 8656 §3.1, framing §12.5)."""

    server: tuple[str, int]
    username: str = ""
    password: str = ""
    tls: ssl.SSLContext | None = None
    connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        raw = socket.create_connection(self.server, timeout=self.connect_timeout)
        if self.tls is not None:
            try:
                self.sock: socket.socket = self.tls.wrap_socket(raw, server_hostname=LOOPBACK)
            except BaseException:
                raw.close()
                raise
        else:
            self.sock = raw
        self.framer = StreamFramer(max_buffer=1 << 20)
        self.pending: list[bytes] = []
        self.realm: str | None = None
        self.nonce: str | None = None
        self.key: bytes | None = None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> StreamTurnClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def peer_cert_fingerprint(self) -> str:
        assert isinstance(self.sock, ssl.SSLSocket)
        der = self.sock.getpeercert(binary_form=True)
        assert der is not None
        return hashlib.sha256(der).hexdigest()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_frame(self, timeout: float = RECV_TIMEOUT_S) -> bytes | None:
        """Next STUN message or ChannelData frame; None on timeout or EOF."""
        deadline = time.monotonic() + timeout
        for _ in range(10_000):
            if self.pending:
                return self.pending.pop(0)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, ConnectionError, ssl.SSLError):
                return None
            if not data:
                return None
            self.pending.extend(self.framer.feed(data))
        return None

    def recv_response(self, tid: bytes, timeout: float = RECV_TIMEOUT_S) -> Message | None:
        deadline = time.monotonic() + timeout
        for _ in range(1000):
            frame = self.recv_frame(max(0.0, deadline - time.monotonic()))
            if frame is None:
                return None
            try:
                msg = decode_message(frame)
            except StunDecodeError:
                continue
            if msg.transaction_id == tid and msg.msg_class in (
                MessageClass.SUCCESS,
                MessageClass.ERROR,
            ):
                return msg
        return None

    def request(self, method: int, *attrs: Attribute, timeout: float = RECV_TIMEOUT_S) -> Message:
        """Authenticated request: learns REALM/NONCE from a 401, follows one 438 (stale nonce)."""
        for _ in range(3):
            tid = os.urandom(12)
            msg = Message.request(method, tid, *attrs)
            if self.key is not None:
                assert self.realm is not None and self.nonce is not None
                msg = msg.with_attributes(
                    Username(self.username), Realm(self.realm), Nonce(self.nonce)
                )
                self.send_raw(encode_message(msg, key=self.key, fingerprint=True))
            else:
                self.send_raw(encode_message(msg, fingerprint=True))
            response = self.recv_response(tid, timeout)
            if response is None:
                raise TurnRequestError(f"no response to {Method(method).name} within {timeout}s")
            code = error_code(response)
            realm, nonce = response.get(Realm), response.get(Nonce)
            if code in (401, 438) and nonce is not None and (realm or self.realm):
                if code == 401 and self.key is not None:
                    return response
                self.realm = realm.value if realm else self.realm
                self.nonce = nonce.value
                assert self.realm is not None
                self.key = long_term_key(self.username, self.realm, self.password)
                continue
            return response
        raise TurnRequestError(f"{Method(method).name}: still 401/438 after 3 attempts")

    def allocate(self) -> tuple[str, int]:
        response = self.request(Method.ALLOCATE, RequestedTransport(UDP_PROTOCOL))
        assert_success(response)
        relayed = response.get(XorRelayedAddress)
        assert relayed is not None, response
        return str(relayed.ip), relayed.port

    def refresh(self, lifetime: int = 600) -> Message:
        return self.request(Method.REFRESH, Lifetime(lifetime))


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
