"""STUN message header and attribute list (RFC 8489 §5, §6, §14), sans-IO."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from .attributes import (
    ATTRIBUTES,
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
from .mac import hmac_sha1, hmac_sha256

A = TypeVar("A", bound=Attribute)

MAX_MESSAGE_LENGTH = 0xFFFC  # largest length field that is a multiple of 4 (RFC 8489 §5)
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
_SHA1_LENGTH = 20
_SHA256_LENGTH = 32
_HEADER = struct.Struct("!HHI")
_TLV = struct.Struct("!HH")
_MESSAGE_INTEGRITY_TLV = _TLV.pack(AttrType.MESSAGE_INTEGRITY, _SHA1_LENGTH)
_MESSAGE_INTEGRITY_SHA256_TLV = _TLV.pack(AttrType.MESSAGE_INTEGRITY_SHA256, _SHA256_LENGTH)
_FINGERPRINT_TLV = _TLV.pack(AttrType.FINGERPRINT, 4)
_FINGERPRINT = int(AttrType.FINGERPRINT)  # plain ints: enum member access is slow per attribute
_MESSAGE_INTEGRITY = int(AttrType.MESSAGE_INTEGRITY)
_MESSAGE_INTEGRITY_SHA256 = int(AttrType.MESSAGE_INTEGRITY_SHA256)

# The classes Message.get finds through its index; other classes (the bases, a class defined
# elsewhere) are looked up by scanning, so get keeps isinstance semantics either way. None of
# them subclasses another, so the decoder indexes each attribute under its own class only.
_INDEXED: frozenset[type[Attribute]] = frozenset({*ATTRIBUTES.values(), RawAttribute})
_INDEX_KEYS: dict[type[Attribute], tuple[type[Attribute], ...]] = {}


def _index_keys(cls: type[Attribute]) -> tuple[type[Attribute], ...]:
    """The indexed classes an instance of cls is an instance of: usually just (cls,)."""
    keys = _INDEX_KEYS.get(cls)
    if keys is None:
        keys = tuple(k for k in _INDEXED if issubclass(cls, k))
        _INDEX_KEYS[cls] = keys  # one entry per attribute class
    return keys


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


# Message types seen, both ways: the two enum lookups of decode_type cost as much as the rest
# of decoding a short request. Bounded, as a peer picks the types it sends.
_TYPE_CACHE_SIZE = 256
_TYPES: dict[int, tuple[int, MessageClass]] = {}
_ENCODED_TYPES: dict[tuple[int, int], int] = {}


def _decode_type_cached(message_type: int) -> tuple[int, MessageClass]:
    decoded = _TYPES.get(message_type)
    if decoded is None:
        method, msg_class = decode_type(message_type)
        decoded = (_method_value(method), msg_class)
        if len(_TYPES) < _TYPE_CACHE_SIZE:
            _TYPES[message_type] = decoded
    return decoded


def _encode_type_cached(method: int, msg_class: int) -> int:
    message_type = _ENCODED_TYPES.get((method, msg_class))
    if message_type is None:
        message_type = encode_type(method, msg_class)  # raises for a method too wide
        if len(_ENCODED_TYPES) < _TYPE_CACHE_SIZE:
            _ENCODED_TYPES[(method, msg_class)] = message_type
    return message_type


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

    def _first(self) -> dict[type[Attribute], Attribute]:
        """Indexed class -> its first attribute: a handler asks for a dozen attributes. Made by
        the decoder, or here on first use; kept in __dict__ beside the fields (frozen)."""
        first: dict[type[Attribute], Attribute] | None = self.__dict__.get("_first_cache")
        if first is None:
            first = {}
            for attr in self.attributes:
                for key in _index_keys(type(attr)):
                    first.setdefault(key, attr)
            self.__dict__["_first_cache"] = first
        return first

    def get(self, cls: type[A]) -> A | None:
        """First attribute of that class: only the first occurrence counts (RFC 8489 §14)."""
        first = self.__dict__.get("_first_cache") or self._first()
        attr = first.get(cls)
        if isinstance(attr, cls):
            return attr
        if cls in _INDEXED:
            return None
        for attr in self.attributes:
            if isinstance(attr, cls):
                return attr
        return None

    def get_all(self, cls: type[A]) -> list[A]:
        return [attr for attr in self.attributes if isinstance(attr, cls)]

    def unknown_comprehension_required(self) -> tuple[int, ...]:
        """Unknown types < 0x8000, each once, for a 420 + UNKNOWN-ATTRIBUTES (RFC 8489 §7.3)."""
        if RawAttribute not in self._first():
            return ()
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
    message_type, length, cookie = _HEADER.unpack_from(data, 0)
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
    method, msg_class = _decode_type_cached(message_type)
    transaction_id = data[8:HEADER_LENGTH]

    attrs: list[Attribute] = []
    first: dict[type[Attribute], Attribute] = {}  # Message.get's index
    integrity_offset: int | None = None
    sha256_offset: int | None = None
    offset = HEADER_LENGTH
    end = len(data)
    while offset < end:
        # offset and end are multiples of 4, so the 4-byte TLV header always fits.
        attr_type, attr_len = _TLV.unpack_from(data, offset)
        value_start = offset + 4
        value_end = value_start + attr_len
        if value_end > end:
            raise StunDecodeError(f"attribute 0x{attr_type:04x} runs past the end")
        next_offset = value_end + (-attr_len % 4)  # padding ignored (RFC 8489 §14)
        value = data[value_start:value_end]

        if attr_type == _FINGERPRINT:
            # RFC 8489 §14.7: FINGERPRINT is last and covers everything before it.
            if next_offset != end:
                raise StunDecodeError("FINGERPRINT is not the last attribute")
            fp = Fingerprint.decode_value(value, transaction_id)
            if fp.crc != fingerprint_of(data[:offset]):
                raise StunDecodeError("FINGERPRINT mismatch")
            attrs.append(fp)
            first.setdefault(Fingerprint, fp)
        elif sha256_offset is not None:
            pass  # RFC 8489 §14.6: after MESSAGE-INTEGRITY-SHA256 only FINGERPRINT counts
        elif attr_type == _MESSAGE_INTEGRITY_SHA256:
            attr = decode_attribute(attr_type, value, transaction_id)
            attrs.append(attr)
            first.setdefault(MessageIntegritySha256, attr)
            sha256_offset = offset
        elif integrity_offset is not None:
            pass  # RFC 8489 §14.5: after MESSAGE-INTEGRITY ignore all but the two above
        else:
            attr = decode_attribute(attr_type, value, transaction_id)
            attrs.append(attr)
            first.setdefault(type(attr), attr)  # a registered class or RawAttribute
            if attr_type == _MESSAGE_INTEGRITY:
                integrity_offset = offset
        offset = next_offset

    return _decoded(
        method=method,
        msg_class=msg_class,
        transaction_id=transaction_id,
        attributes=tuple(attrs),
        raw=data,
        integrity_offset=integrity_offset,
        integrity_sha256_offset=sha256_offset,
        _first_cache=first,
    )


def _decoded(**fields: Any) -> Message:
    """Message(**fields) for the decoder, without the frozen __init__'s object.__setattr__ per
    field (a good part of decoding a short request). Every field must be given, and the index
    Message.get uses."""
    msg: Message = object.__new__(Message)
    msg.__dict__.update(fields)
    return msg


def fingerprint_of(data: bytes) -> int:
    """RFC 8489 §14.7: CRC-32 (ISO HDLC, as zlib) XOR 0x5354554E."""
    return (zlib.crc32(data) & 0xFFFFFFFF) ^ FINGERPRINT_XOR


def _header(message_type: int, length: int, transaction_id: bytes) -> bytes:
    if length > MAX_MESSAGE_LENGTH:
        raise StunEncodeError(f"message of {length} attribute bytes is too long")
    return _HEADER.pack(message_type, length, MAGIC_COOKIE) + transaction_id


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
    body = b"".join(
        [encode_attribute(attr, tid) for attr in msg.attributes if not isinstance(attr, _COMPUTED)]
    )
    return encode_body(
        int(msg.method),
        int(msg.msg_class),
        tid,
        body,
        key=key,
        sha1=sha1,
        sha256=sha256,
        fingerprint=fingerprint,
    )


def encode_body(
    method: int,
    msg_class: int,
    transaction_id: bytes,
    body: bytes,
    *,
    key: bytes | None = None,
    sha1: bool = True,
    sha256: bool = False,
    fingerprint: bool = False,
) -> bytes:
    """A message from attributes already encoded (``encode_attribute`` output, concatenated),
    then MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT as encode_message adds them.

    For senders that keep the encoding of attributes that do not change between messages.
    """
    if len(transaction_id) != TRANSACTION_ID_LENGTH:
        raise StunEncodeError(f"transaction id of {len(transaction_id)} bytes, expected 12")
    message_type = _encode_type_cached(method, msg_class)
    length = len(body)
    if key is not None and sha1:
        # RFC 8489 §14.5: HMAC over the header (length counting this attribute) and body.
        length += 4 + _SHA1_LENGTH
        mac = hmac_sha1(key, _header(message_type, length, transaction_id) + body)
        body += _MESSAGE_INTEGRITY_TLV + mac
    if key is not None and sha256:
        length += 4 + _SHA256_LENGTH
        mac = hmac_sha256(key, _header(message_type, length, transaction_id) + body)
        body += _MESSAGE_INTEGRITY_SHA256_TLV + mac
    if fingerprint:
        length += 8
        message = _header(message_type, length, transaction_id) + body
        return message + _FINGERPRINT_TLV + fingerprint_of(message).to_bytes(4, "big")
    return _header(message_type, length, transaction_id) + body


__all__ = [
    "MAX_MESSAGE_LENGTH",
    "Message",
    "decode_message",
    "decode_type",
    "encode_body",
    "encode_message",
    "encode_type",
    "fingerprint_of",
    "is_stun",
]
