"""STUN message header and attribute list (RFC 8489 §5, §6, §14), sans-IO."""

from __future__ import annotations

import hashlib
import hmac as _hmac
import struct
import zlib
from dataclasses import dataclass, field, replace
from typing import TypeVar

from .attributes import (
    Attribute,
    ErrorCodeAttr,
    Fingerprint,
    MessageIntegrity,
    MessageIntegritySha256,
    RawAttribute,
    decode_attribute,
    encode_attribute,
)
from .constants import (
    FINGERPRINT_XOR,
    HEADER_LENGTH,
    MAGIC_COOKIE,
    REASONS,
    TRANSACTION_ID_LENGTH,
    AttrType,
    MessageClass,
    Method,
)
from .errors import StunDecodeError, StunEncodeError

A = TypeVar("A", bound=Attribute)

MAX_MESSAGE_LENGTH = 0xFFFC  # largest length field that is a multiple of 4 (RFC 8489 §5)
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
_SHA1_LENGTH = 20
_SHA256_LENGTH = 32
# Integrity and FINGERPRINT are computed by encode_message from its flags, never copied.
_COMPUTED = (MessageIntegrity, MessageIntegritySha256, Fingerprint)


def encode_type(method: int, msg_class: int) -> int:
    """RFC 8489 §5 Figure 3: M11..M7 C1 M6..M4 C0 M3..M0."""
    if not 0 <= method <= 0xFFF:
        raise StunEncodeError(f"method 0x{method:x} does not fit in 12 bits")
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((msg_class & 0b01) << 4)
        | ((msg_class & 0b10) << 7)
    )


def decode_type(message_type: int) -> tuple[int, MessageClass]:
    """Inverse of encode_type; the two top bits must already be known to be zero."""
    method = (
        (message_type & 0x000F) | ((message_type >> 1) & 0x0070) | ((message_type >> 2) & 0x0F80)
    )
    msg_class = MessageClass(((message_type >> 4) & 0b01) | ((message_type >> 7) & 0b10))
    return method, msg_class


def _method_value(method: int) -> int:
    # Known methods become Method members (nicer repr, equal to the int); others stay ints.
    try:
        return Method(method)
    except ValueError:
        return method


@dataclass(frozen=True)
class Message:
    """A STUN message. The last three fields are set by decode_message only."""

    method: int
    msg_class: MessageClass
    transaction_id: bytes
    attributes: tuple[Attribute, ...] = ()
    raw: bytes = field(default=b"", compare=False, repr=False)
    integrity_offset: int | None = field(default=None, compare=False, repr=False)
    integrity_sha256_offset: int | None = field(default=None, compare=False, repr=False)

    # --- lookup ---

    def get(self, cls: type[A]) -> A | None:
        """First attribute of that class: only the first occurrence counts (RFC 8489 §14)."""
        for attr in self.attributes:
            if isinstance(attr, cls):
                return attr
        return None

    def get_all(self, cls: type[A]) -> list[A]:
        return [attr for attr in self.attributes if isinstance(attr, cls)]

    def unknown_comprehension_required(self) -> tuple[int, ...]:
        """Unknown types < 0x8000, each once, for a 420 + UNKNOWN-ATTRIBUTES (RFC 8489 §7.3)."""
        seen: dict[int, None] = {}
        for attr in self.attributes:
            if isinstance(attr, RawAttribute) and attr.type < 0x8000:
                seen.setdefault(attr.type, None)
        return tuple(seen)

    # --- construction helpers ---

    @classmethod
    def request(cls, method: int, transaction_id: bytes, *attrs: Attribute) -> Message:
        return cls(method, MessageClass.REQUEST, transaction_id, attrs)

    @classmethod
    def indication(cls, method: int, transaction_id: bytes, *attrs: Attribute) -> Message:
        return cls(method, MessageClass.INDICATION, transaction_id, attrs)

    def success_response(self, *attrs: Attribute) -> Message:
        """Success response with this request's method and transaction id (RFC 8489 §6.3)."""
        return Message(self.method, MessageClass.SUCCESS, self.transaction_id, attrs)

    def error_response(self, code: int, *attrs: Attribute, reason: str | None = None) -> Message:
        """Error response: ERROR-CODE first (default reason phrase from REASONS), then attrs."""
        error = ErrorCodeAttr(code, REASONS.get(code, "") if reason is None else reason)
        return Message(self.method, MessageClass.ERROR, self.transaction_id, (error, *attrs))

    def with_attributes(self, *attrs: Attribute) -> Message:
        """A copy with attrs appended (bookkeeping fields reset)."""
        return replace(
            self,
            attributes=self.attributes + attrs,
            raw=b"",
            integrity_offset=None,
            integrity_sha256_offset=None,
        )


def is_stun(data: bytes) -> bool:
    """Cheap demux check (RFC 8489 §5, RFC 7983): 20+ bytes, top bits 00, magic cookie."""
    return len(data) >= HEADER_LENGTH and data[0] & 0xC0 == 0 and data[4:8] == _COOKIE_BYTES


def decode_message(data: bytes) -> Message:
    """Parse and check one STUN message; raises StunDecodeError (and nothing else)."""
    try:
        # memoryview refuses non-buffers (bytes(10**9) would allocate instead of failing).
        return _decode(data if type(data) is bytes else memoryview(data).tobytes())
    except StunDecodeError:
        raise
    except (ValueError, IndexError, struct.error, TypeError, OverflowError) as exc:
        raise StunDecodeError(f"malformed message: {exc}") from None


def _decode(data: bytes) -> Message:
    if len(data) < HEADER_LENGTH:
        raise StunDecodeError(f"truncated header: {len(data)} bytes")
    message_type, length, cookie = struct.unpack_from("!HHI", data, 0)
    if message_type & 0xC000:
        raise StunDecodeError(f"top bits of message type 0x{message_type:04x} not zero")
    if cookie != MAGIC_COOKIE:
        raise StunDecodeError(f"bad magic cookie 0x{cookie:08x}")
    if length % 4:
        raise StunDecodeError(f"length {length} not a multiple of 4")
    if length != len(data) - HEADER_LENGTH:
        raise StunDecodeError(
            f"length {length} does not match {len(data) - HEADER_LENGTH} bytes after the header"
        )
    method, msg_class = decode_type(message_type)
    transaction_id = data[8:HEADER_LENGTH]

    attrs: list[Attribute] = []
    integrity_offset: int | None = None
    sha256_offset: int | None = None
    offset = HEADER_LENGTH
    end = len(data)
    while offset < end:
        # offset and end are multiples of 4, so the 4-byte TLV header always fits.
        attr_type, attr_len = struct.unpack_from("!HH", data, offset)
        value_start = offset + 4
        value_end = value_start + attr_len
        if value_end > end:
            raise StunDecodeError(f"attribute 0x{attr_type:04x} runs past the end")
        next_offset = value_end + (-attr_len % 4)  # padding ignored (RFC 8489 §14)
        value = data[value_start:value_end]

        if attr_type == AttrType.FINGERPRINT:
            # RFC 8489 §14.7: FINGERPRINT is last and covers everything before it.
            if next_offset != end:
                raise StunDecodeError("FINGERPRINT is not the last attribute")
            fp = Fingerprint.decode_value(value, transaction_id)
            if fp.crc != fingerprint_of(data[:offset]):
                raise StunDecodeError("FINGERPRINT mismatch")
            attrs.append(fp)
        elif sha256_offset is not None:
            pass  # RFC 8489 §14.6: after MESSAGE-INTEGRITY-SHA256 only FINGERPRINT counts
        elif attr_type == AttrType.MESSAGE_INTEGRITY_SHA256:
            attrs.append(decode_attribute(attr_type, value, transaction_id))
            sha256_offset = offset
        elif integrity_offset is not None:
            pass  # RFC 8489 §14.5: after MESSAGE-INTEGRITY ignore all but the two above
        else:
            attrs.append(decode_attribute(attr_type, value, transaction_id))
            if attr_type == AttrType.MESSAGE_INTEGRITY:
                integrity_offset = offset
        offset = next_offset

    return Message(
        method=_method_value(method),
        msg_class=msg_class,
        transaction_id=transaction_id,
        attributes=tuple(attrs),
        raw=data,
        integrity_offset=integrity_offset,
        integrity_sha256_offset=sha256_offset,
    )


def fingerprint_of(data: bytes) -> int:
    """RFC 8489 §14.7: CRC-32 (ISO HDLC, as zlib) XOR 0x5354554E."""
    return (zlib.crc32(data) & 0xFFFFFFFF) ^ FINGERPRINT_XOR


def _header(message_type: int, length: int, transaction_id: bytes) -> bytes:
    if length > MAX_MESSAGE_LENGTH:
        raise StunEncodeError(f"message of {length} attribute bytes is too long")
    return struct.pack("!HHI", message_type, length, MAGIC_COOKIE) + transaction_id


def encode_message(
    msg: Message,
    *,
    key: bytes | None = None,
    sha1: bool = True,
    sha256: bool = False,
    fingerprint: bool = False,
) -> bytes:
    """Serialise msg; with a key append MESSAGE-INTEGRITY (sha1) and/or -SHA256, then FINGERPRINT.

    MessageIntegrity, MessageIntegritySha256 and Fingerprint instances in msg.attributes are
    skipped: those attributes are always computed here (RFC 8489 §14.5-§14.7).
    """
    tid = bytes(msg.transaction_id)
    if len(tid) != TRANSACTION_ID_LENGTH:
        raise StunEncodeError(f"transaction id of {len(tid)} bytes, expected 12")
    message_type = encode_type(int(msg.method), int(msg.msg_class))
    body = bytearray()
    for attr in msg.attributes:
        if not isinstance(attr, _COMPUTED):
            body += encode_attribute(attr, tid)

    if key is not None and sha1:
        # RFC 8489 §14.5: HMAC over the header (length counting this attribute) and body.
        header = _header(message_type, len(body) + 4 + _SHA1_LENGTH, tid)
        mac = _hmac.new(key, header + body, hashlib.sha1).digest()
        body += struct.pack("!HH", AttrType.MESSAGE_INTEGRITY, _SHA1_LENGTH) + mac
    if key is not None and sha256:
        header = _header(message_type, len(body) + 4 + _SHA256_LENGTH, tid)
        mac = _hmac.new(key, header + body, hashlib.sha256).digest()
        body += struct.pack("!HH", AttrType.MESSAGE_INTEGRITY_SHA256, _SHA256_LENGTH) + mac
    if fingerprint:
        header = _header(message_type, len(body) + 8, tid)
        crc = fingerprint_of(header + body)
        body += struct.pack("!HHI", AttrType.FINGERPRINT, 4, crc)
    return _header(message_type, len(body), tid) + bytes(body)


__all__ = [
    "MAX_MESSAGE_LENGTH",
    "Message",
    "decode_message",
    "decode_type",
    "encode_message",
    "encode_type",
    "fingerprint_of",
    "is_stun",
]
