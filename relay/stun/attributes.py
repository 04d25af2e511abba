"""STUN/TURN attributes: one frozen dataclass per type, registry ATTRIBUTES keyed by type code.

Values are encoded and decoded here without their TLV header and padding; relay.stun.message
adds those. Every decoder checks the value length and raises StunDecodeError naming the attribute.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from .constants import MAGIC_COOKIE, TRANSACTION_ID_LENGTH, AddressFamily, AttrType
from .errors import StunDecodeError, StunEncodeError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")

# RFC 8489 §14.3: USERNAME fewer than 509 bytes (RFC 5389: 513); the contract accepts up to 513.
MAX_USERNAME_BYTES = 513
# RFC 8489 §14.9/§14.10/§14.14: fewer than 128 characters, as long as 763 bytes.
MAX_TEXT_BYTES = 763
# RFC 8489 §14.16: ALTERNATE-DOMAIN is a DNS name (at most 255 bytes).
MAX_DOMAIN_BYTES = 255
# RFC 8489 §14.6: MESSAGE-INTEGRITY-SHA256 may be truncated to 16..32 bytes, multiple of 4.
MIN_SHA256_HMAC = 16
MAX_SHA256_HMAC = 32


def attribute_name(attr_type: int) -> str:
    """Readable name for error messages: "USERNAME" or "0x7f01" for unknown types."""
    try:
        return AttrType(attr_type).name.replace("_", "-")
    except ValueError:
        return f"0x{attr_type:04x}"


def _fixed_length(cls_type: int, value: bytes, length: int) -> None:
    if len(value) != length:
        raise StunDecodeError(
            f"{attribute_name(cls_type)}: value length {len(value)}, expected {length}"
        )


def _u8(name: str, value: int) -> int:
    if not 0 <= value <= 0xFF:
        raise StunEncodeError(f"{name} {value} out of range 0..255")
    return value


def _u16(name: str, value: int) -> int:
    if not 0 <= value <= 0xFFFF:
        raise StunEncodeError(f"{name} {value} out of range 0..65535")
    return value


def _u32(name: str, value: int) -> int:
    if not 0 <= value <= 0xFFFFFFFF:
        raise StunEncodeError(f"{name} {value} out of range 0..2^32-1")
    return value


@dataclass(frozen=True)
class Attribute:
    """Base of all attributes (RFC 8489 §14). Subclasses set TYPE and implement the codec."""

    TYPE: ClassVar[int]

    def encode_value(self, transaction_id: bytes) -> bytes:
        """The value only, without the TLV header and without padding."""
        raise NotImplementedError

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        """Parse a value (padding already removed); raises StunDecodeError."""
        raise NotImplementedError


# --- addresses (RFC 8489 §14.1, §14.2) -------------------------------------------------------


def _xor_key(attr_type: int, transaction_id: bytes) -> bytes:
    # RFC 8489 §14.2: IPv4 XORed with the cookie, IPv6 with cookie || transaction id.
    if len(transaction_id) != TRANSACTION_ID_LENGTH:
        raise StunDecodeError(
            f"{attribute_name(attr_type)}: transaction id of {len(transaction_id)} bytes"
        )
    return _COOKIE_BYTES + transaction_id


def _xor(data: bytes, key: bytes) -> bytes:
    n = len(data)
    return (int.from_bytes(data, "big") ^ int.from_bytes(key[:n], "big")).to_bytes(n, "big")


_ADDRESS_HEAD = struct.Struct("!BBH")
_COOKIE_HIGH = MAGIC_COOKIE >> 16


def encode_address_value(packed: bytes, port: int, transaction_id: bytes | None) -> bytes:
    """An address attribute's value from a packed IPv4 or IPv6 address: as RFC 8489 §14.1, or
    XORed as §14.2 when ``transaction_id`` is given. Lets an encoder skip ``ipaddress``."""
    port = _u16("port", port)
    if len(packed) == 4:
        family = AddressFamily.IPV4
    elif len(packed) == 16:
        family = AddressFamily.IPV6
    else:
        raise StunEncodeError(f"not a packed IP address: {len(packed)} bytes")
    if transaction_id is not None:
        if len(transaction_id) != TRANSACTION_ID_LENGTH:
            raise StunEncodeError(f"transaction id of {len(transaction_id)} bytes")
        port ^= _COOKIE_HIGH
        packed = _xor(packed, _COOKIE_BYTES + transaction_id)
    return _ADDRESS_HEAD.pack(0, family, port) + packed


@dataclass(frozen=True)
class _AddressAttribute(Attribute):
    ip: IPAddress
    port: int

    XORED: ClassVar[bool] = False

    def encode_value(self, transaction_id: bytes) -> bytes:
        if not isinstance(self.ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            raise StunEncodeError(f"{attribute_name(self.TYPE)}: not an IP address: {self.ip!r}")
        return encode_address_value(
            self.ip.packed, self.port, transaction_id if self.XORED else None
        )

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) < 4:
            raise StunDecodeError(
                f"{attribute_name(cls.TYPE)}: value length {len(value)} too short for an address"
            )
        family, port = value[1], int.from_bytes(value[2:4], "big")
        if family == AddressFamily.IPV4:
            expected = 8
        elif family == AddressFamily.IPV6:
            expected = 20
        else:
            raise StunDecodeError(f"{attribute_name(cls.TYPE)}: bad address family 0x{family:02x}")
        if len(value) != expected:
            raise StunDecodeError(
                f"{attribute_name(cls.TYPE)}: value length {len(value)}, expected {expected} "
                f"for family {family}"
            )
        packed = value[4:]
        if cls.XORED:
            port ^= _COOKIE_HIGH
            packed = _xor(packed, _xor_key(cls.TYPE, transaction_id))
        ip: IPAddress = (
            ipaddress.IPv4Address(packed) if expected == 8 else ipaddress.IPv6Address(packed)
        )
        return cls(ip, port)


@dataclass(frozen=True)
class MappedAddress(_AddressAttribute):
    TYPE = AttrType.MAPPED_ADDRESS  # RFC 8489 §14.1


@dataclass(frozen=True)
class XorMappedAddress(_AddressAttribute):
    TYPE = AttrType.XOR_MAPPED_ADDRESS  # RFC 8489 §14.2
    XORED = True


@dataclass(frozen=True)
class XorPeerAddress(_AddressAttribute):
    TYPE = AttrType.XOR_PEER_ADDRESS  # RFC 8656 §18.3
    XORED = True


@dataclass(frozen=True)
class XorRelayedAddress(_AddressAttribute):
    TYPE = AttrType.XOR_RELAYED_ADDRESS  # RFC 8656 §18.5
    XORED = True


@dataclass(frozen=True)
class AlternateServer(_AddressAttribute):
    TYPE = AttrType.ALTERNATE_SERVER  # RFC 8489 §14.15


@dataclass(frozen=True)
class ResponseOrigin(_AddressAttribute):
    TYPE = AttrType.RESPONSE_ORIGIN  # RFC 5780 §7.3


@dataclass(frozen=True)
class OtherAddress(_AddressAttribute):
    TYPE = AttrType.OTHER_ADDRESS  # RFC 5780 §7.4


# --- text ------------------------------------------------------------------------------------


def _decode_text(attr_type: int, value: bytes, limit: int) -> str:
    # attribute_name only on failure: it costs an enum lookup per attribute otherwise
    if len(value) > limit:
        raise StunDecodeError(
            f"{attribute_name(attr_type)}: {len(value)} bytes, at most {limit} allowed"
        )
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StunDecodeError(
            f"{attribute_name(attr_type)}: invalid UTF-8 at byte {exc.start}"
        ) from None


def _encode_text(attr_type: int, value: str, limit: int) -> bytes:
    data = value.encode("utf-8")
    if len(data) > limit:
        raise StunEncodeError(
            f"{attribute_name(attr_type)}: {len(data)} bytes, at most {limit} allowed"
        )
    return data


@dataclass(frozen=True)
class _TextAttribute(Attribute):
    value: str

    MAX_BYTES: ClassVar[int] = MAX_TEXT_BYTES

    def encode_value(self, transaction_id: bytes) -> bytes:
        return _encode_text(self.TYPE, self.value, self.MAX_BYTES)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(_decode_text(cls.TYPE, value, cls.MAX_BYTES))


@dataclass(frozen=True)
class Username(_TextAttribute):
    TYPE = AttrType.USERNAME  # RFC 8489 §14.3
    MAX_BYTES = MAX_USERNAME_BYTES


@dataclass(frozen=True)
class Realm(_TextAttribute):
    TYPE = AttrType.REALM  # RFC 8489 §14.9


@dataclass(frozen=True)
class Nonce(_TextAttribute):
    TYPE = AttrType.NONCE  # RFC 8489 §14.10


@dataclass(frozen=True)
class Software(_TextAttribute):
    TYPE = AttrType.SOFTWARE  # RFC 8489 §14.14


@dataclass(frozen=True)
class AlternateDomain(_TextAttribute):
    TYPE = AttrType.ALTERNATE_DOMAIN  # RFC 8489 §14.16
    MAX_BYTES = MAX_DOMAIN_BYTES


# --- opaque bytes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Userhash(Attribute):
    """RFC 8489 §14.4: SHA-256 of username ":" realm, 32 bytes."""

    value: bytes

    TYPE = AttrType.USERHASH

    def encode_value(self, transaction_id: bytes) -> bytes:
        if len(self.value) != 32:
            raise StunEncodeError(f"USERHASH: {len(self.value)} bytes, expected 32")
        return bytes(self.value)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        _fixed_length(cls.TYPE, value, 32)
        return cls(bytes(value))


@dataclass(frozen=True)
class MessageIntegrity(Attribute):
    """RFC 8489 §14.5: HMAC-SHA1, 20 bytes. Computed by encode_message, not encoded literally."""

    hmac: bytes

    TYPE = AttrType.MESSAGE_INTEGRITY

    def encode_value(self, transaction_id: bytes) -> bytes:
        if len(self.hmac) != 20:
            raise StunEncodeError(f"MESSAGE-INTEGRITY: {len(self.hmac)} bytes, expected 20")
        return bytes(self.hmac)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        _fixed_length(cls.TYPE, value, 20)
        return cls(bytes(value))


@dataclass(frozen=True)
class MessageIntegritySha256(Attribute):
    """RFC 8489 §14.6: HMAC-SHA256, possibly truncated to 16..32 bytes (multiple of 4)."""

    hmac: bytes

    TYPE = AttrType.MESSAGE_INTEGRITY_SHA256

    @staticmethod
    def _valid_length(n: int) -> bool:
        return MIN_SHA256_HMAC <= n <= MAX_SHA256_HMAC and n % 4 == 0

    def encode_value(self, transaction_id: bytes) -> bytes:
        if not self._valid_length(len(self.hmac)):
            raise StunEncodeError(f"MESSAGE-INTEGRITY-SHA256: {len(self.hmac)} bytes")
        return bytes(self.hmac)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if not cls._valid_length(len(value)):
            raise StunDecodeError(
                f"MESSAGE-INTEGRITY-SHA256: value length {len(value)}, "
                "expected 16..32 and a multiple of 4"
            )
        return cls(bytes(value))


@dataclass(frozen=True)
class Fingerprint(Attribute):
    """RFC 8489 §14.7: CRC-32 of the message XOR 0x5354554E."""

    crc: int

    TYPE = AttrType.FINGERPRINT

    def encode_value(self, transaction_id: bytes) -> bytes:
        return _u32("FINGERPRINT", self.crc).to_bytes(4, "big")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        _fixed_length(cls.TYPE, value, 4)
        return cls(int.from_bytes(value, "big"))


# --- error codes -----------------------------------------------------------------------------


def _encode_code(attr_type: int, code: int) -> bytes:
    # RFC 8489 §14.8: class = hundreds digit (3..6), number = code % 100.
    if not 300 <= code <= 699:
        raise StunEncodeError(f"{attribute_name(attr_type)}: code {code} out of range 300..699")
    return bytes((code // 100, code % 100))


def _decode_code(attr_type: int, class_byte: int, number: int) -> int:
    err_class = class_byte & 0x07  # the other bits are reserved, ignored on receipt
    if not 3 <= err_class <= 6 or number > 99:
        raise StunDecodeError(
            f"{attribute_name(attr_type)}: bad code (class {err_class}, number {number})"
        )
    return err_class * 100 + number


@dataclass(frozen=True)
class ErrorCodeAttr(Attribute):
    """RFC 8489 §14.8 ERROR-CODE."""

    code: int
    reason: str = ""

    TYPE = AttrType.ERROR_CODE

    def encode_value(self, transaction_id: bytes) -> bytes:
        return (
            b"\x00\x00"
            + _encode_code(self.TYPE, self.code)
            + _encode_text(self.TYPE, self.reason, MAX_TEXT_BYTES)
        )

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) < 4:
            raise StunDecodeError(f"ERROR-CODE: value length {len(value)} too short")
        code = _decode_code(cls.TYPE, value[2], value[3])
        return cls(code, _decode_text(cls.TYPE, value[4:], MAX_TEXT_BYTES))


@dataclass(frozen=True)
class AddressErrorCode(Attribute):
    """RFC 8656 §18.12 ADDRESS-ERROR-CODE: family, reserved, class, number, reason."""

    family: int
    code: int
    reason: str = ""

    TYPE = AttrType.ADDRESS_ERROR_CODE

    def encode_value(self, transaction_id: bytes) -> bytes:
        return (
            bytes((_u8("family", self.family), 0))
            + _encode_code(self.TYPE, self.code)
            + _encode_text(self.TYPE, self.reason, MAX_TEXT_BYTES)
        )

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) < 4:
            raise StunDecodeError(f"ADDRESS-ERROR-CODE: value length {len(value)} too short")
        code = _decode_code(cls.TYPE, value[2], value[3])
        return cls(value[0], code, _decode_text(cls.TYPE, value[4:], MAX_TEXT_BYTES))


@dataclass(frozen=True)
class UnknownAttributes(Attribute):
    """RFC 8489 §14.9 UNKNOWN-ATTRIBUTES: list of 16-bit types."""

    types: tuple[int, ...]

    TYPE = AttrType.UNKNOWN_ATTRIBUTES

    def encode_value(self, transaction_id: bytes) -> bytes:
        return b"".join(_u16("attribute type", t).to_bytes(2, "big") for t in self.types)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) % 2:
            raise StunDecodeError(f"UNKNOWN-ATTRIBUTES: odd value length {len(value)}")
        return cls(tuple(int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2)))


# --- password algorithms (RFC 8489 §14.11, §14.12) -------------------------------------------


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


@dataclass(frozen=True)
class PasswordAlgorithms(Attribute):
    """RFC 8489 §14.11: list of (algorithm, parameters); each parameter block padded to 4."""

    algorithms: tuple[tuple[int, bytes], ...]

    TYPE = AttrType.PASSWORD_ALGORITHMS

    def encode_value(self, transaction_id: bytes) -> bytes:
        out = bytearray()
        for algorithm, params in self.algorithms:
            out += struct.pack("!HH", _u16("algorithm", algorithm), _u16("params", len(params)))
            out += params + bytes(_pad4(len(params)))
        return bytes(out)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        items: list[tuple[int, bytes]] = []
        pos = 0
        while pos < len(value):
            if pos + 4 > len(value):
                raise StunDecodeError(f"PASSWORD-ALGORITHMS: truncated entry at byte {pos}")
            algorithm, plen = struct.unpack_from("!HH", value, pos)
            pos += 4
            if pos + plen > len(value):
                raise StunDecodeError(
                    f"PASSWORD-ALGORITHMS: parameters of algorithm 0x{algorithm:04x} "
                    "run past the end"
                )
            items.append((algorithm, bytes(value[pos : pos + plen])))
            pos += plen + _pad4(plen)
        return cls(tuple(items))


@dataclass(frozen=True)
class PasswordAlgorithmAttr(Attribute):
    """RFC 8489 §14.12 PASSWORD-ALGORITHM: algorithm, parameter length, parameters."""

    algorithm: int
    params: bytes = b""

    TYPE = AttrType.PASSWORD_ALGORITHM

    def encode_value(self, transaction_id: bytes) -> bytes:
        head = struct.pack(
            "!HH", _u16("algorithm", self.algorithm), _u16("params", len(self.params))
        )
        return head + self.params  # the attribute padding pads the parameters

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) < 4:
            raise StunDecodeError(f"PASSWORD-ALGORITHM: value length {len(value)} too short")
        algorithm, plen = struct.unpack_from("!HH", value, 0)
        # Parameters padded inside the value are tolerated (at most 3 extra bytes).
        if not 0 <= len(value) - 4 - plen <= 3:
            raise StunDecodeError(
                f"PASSWORD-ALGORITHM: parameter length {plen} does not match value length "
                f"{len(value)}"
            )
        return cls(algorithm, bytes(value[4 : 4 + plen]))


# --- TURN (RFC 8656 §18) ---------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelNumber(Attribute):
    """RFC 8656 §18.1: 16-bit channel number + 16 bits RFFU. The range is checked by TURN."""

    number: int

    TYPE = AttrType.CHANNEL_NUMBER

    def encode_value(self, transaction_id: bytes) -> bytes:
        return struct.pack("!HH", _u16("channel number", self.number), 0)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        _fixed_length(cls.TYPE, value, 4)
        return cls(int.from_bytes(value[:2], "big"))


@dataclass(frozen=True)
class Lifetime(Attribute):
    """RFC 8656 §18.2: seconds, 32 bits."""

    seconds: int

    TYPE = AttrType.LIFETIME

    def encode_value(self, transaction_id: bytes) -> bytes:
        return _u32("lifetime", self.seconds).to_bytes(4, "big")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        _fixed_length(cls.TYPE, value, 4)
        return cls(int.from_bytes(value, "big"))


@dataclass(frozen=True)
class Data(Attribute):
    """RFC 8656 §18.4: application data, any length."""

    data: bytes

    TYPE = AttrType.DATA

    def encode_value(self, transaction_id: bytes) -> bytes:
        return bytes(self.data)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(bytes(value))


@dataclass(frozen=True)
class _FamilyAttribute(Attribute):
    # RFC 8656 §18.6/§18.11: family byte + 3 bytes RFFU. Unsupported values are left to TURN (440).
    family: int

    def encode_value(self, transaction_id: bytes) -> bytes:
        return bytes((_u8("family", self.family), 0, 0, 0))

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        _fixed_length(cls.TYPE, value, 4)
        return cls(value[0])


@dataclass(frozen=True)
class RequestedAddressFamily(_FamilyAttribute):
    TYPE = AttrType.REQUESTED_ADDRESS_FAMILY  # RFC 8656 §18.6


@dataclass(frozen=True)
class AdditionalAddressFamily(_FamilyAttribute):
    TYPE = AttrType.ADDITIONAL_ADDRESS_FAMILY  # RFC 8656 §18.11


EVEN_PORT_R_BIT = 0x80  # RFC 8656 §18.7


@dataclass(frozen=True)
class EvenPort(Attribute):
    """RFC 8656 §18.7: one byte, R bit 0x80 asks to reserve the next port."""

    reserve: bool

    TYPE = AttrType.EVEN_PORT

    def encode_value(self, transaction_id: bytes) -> bytes:
        return bytes((EVEN_PORT_R_BIT if self.reserve else 0,))

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        _fixed_length(cls.TYPE, value, 1)
        return cls(bool(value[0] & EVEN_PORT_R_BIT))


@dataclass(frozen=True)
class RequestedTransport(Attribute):
    """RFC 8656 §18.8: IANA protocol number (17 = UDP) + 3 bytes RFFU."""

    protocol: int

    TYPE = AttrType.REQUESTED_TRANSPORT

    def encode_value(self, transaction_id: bytes) -> bytes:
        return bytes((_u8("protocol", self.protocol), 0, 0, 0))

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        _fixed_length(cls.TYPE, value, 4)
        return cls(value[0])


@dataclass(frozen=True)
class DontFragment(Attribute):
    """RFC 8656 §18.9: no value."""

    TYPE = AttrType.DONT_FRAGMENT

    def encode_value(self, transaction_id: bytes) -> bytes:
        return b""

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        _fixed_length(cls.TYPE, value, 0)
        return cls()


@dataclass(frozen=True)
class ReservationToken(Attribute):
    """RFC 8656 §18.10: 8-byte token."""

    token: bytes

    TYPE = AttrType.RESERVATION_TOKEN

    def encode_value(self, transaction_id: bytes) -> bytes:
        if len(self.token) != 8:
            raise StunEncodeError(f"RESERVATION-TOKEN: {len(self.token)} bytes, expected 8")
        return bytes(self.token)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        _fixed_length(cls.TYPE, value, 8)
        return cls(bytes(value))


@dataclass(frozen=True)
class Icmp(Attribute):
    """RFC 8656 §18.13: 2 bytes reserved, ICMP type, ICMP code (one byte each), error data."""

    icmp_type: int
    icmp_code: int
    error_data: int

    TYPE = AttrType.ICMP

    def encode_value(self, transaction_id: bytes) -> bytes:
        return struct.pack(
            "!HBBI",
            0,
            _u8("ICMP type", self.icmp_type),
            _u8("ICMP code", self.icmp_code),
            _u32("ICMP error data", self.error_data),
        )

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        _fixed_length(cls.TYPE, value, 8)
        _, icmp_type, icmp_code, error_data = struct.unpack("!HBBI", value)
        return cls(icmp_type, icmp_code, error_data)


# --- RFC 5780 --------------------------------------------------------------------------------

CHANGE_IP_FLAG = 0x4  # RFC 5780 §7.2 "A"
CHANGE_PORT_FLAG = 0x2  # RFC 5780 §7.2 "B"


@dataclass(frozen=True)
class ChangeRequest(Attribute):
    """RFC 5780 §7.2: 32-bit flags, 0x4 change IP, 0x2 change port."""

    change_ip: bool
    change_port: bool

    TYPE = AttrType.CHANGE_REQUEST

    def encode_value(self, transaction_id: bytes) -> bytes:
        flags = (CHANGE_IP_FLAG if self.change_ip else 0) | (
            CHANGE_PORT_FLAG if self.change_port else 0
        )
        return flags.to_bytes(4, "big")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        _fixed_length(cls.TYPE, value, 4)
        flags = int.from_bytes(value, "big")
        return cls(bool(flags & CHANGE_IP_FLAG), bool(flags & CHANGE_PORT_FLAG))


@dataclass(frozen=True)
class ResponsePort(Attribute):
    """RFC 5780 §7.5: 16-bit port + 16 bits padding."""

    port: int

    TYPE = AttrType.RESPONSE_PORT

    def encode_value(self, transaction_id: bytes) -> bytes:
        return struct.pack("!HH", _u16("port", self.port), 0)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        _fixed_length(cls.TYPE, value, 4)
        return cls(int.from_bytes(value[:2], "big"))


@dataclass(frozen=True)
class Padding(Attribute):
    """RFC 5780 §7.6: arbitrary padding bytes."""

    data: bytes

    TYPE = AttrType.PADDING

    def encode_value(self, transaction_id: bytes) -> bytes:
        return bytes(self.data)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(bytes(value))


# --- unknown ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawAttribute(Attribute):
    """An attribute type this codec does not know, kept as bytes.

    TYPE is per instance: it mirrors the `type` field so generic code can use attr.TYPE.
    """

    type: int
    value: bytes

    TYPE = -1  # replaced per instance in __post_init__

    def __post_init__(self) -> None:
        object.__setattr__(self, "TYPE", self.type)

    def encode_value(self, transaction_id: bytes) -> bytes:
        _u16("attribute type", self.type)
        return bytes(self.value)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        raise StunDecodeError("RawAttribute needs its type: use decode_attribute()")

    @property
    def comprehension_required(self) -> bool:
        return self.type < 0x8000  # RFC 8489 §14


ATTRIBUTES: dict[int, type[Attribute]] = {
    cls.TYPE: cls
    for cls in (
        MappedAddress,
        XorMappedAddress,
        XorPeerAddress,
        XorRelayedAddress,
        AlternateServer,
        ResponseOrigin,
        OtherAddress,
        Username,
        Userhash,
        Realm,
        Nonce,
        Software,
        MessageIntegrity,
        MessageIntegritySha256,
        Fingerprint,
        ErrorCodeAttr,
        UnknownAttributes,
        PasswordAlgorithms,
        PasswordAlgorithmAttr,
        ChannelNumber,
        Lifetime,
        Data,
        RequestedAddressFamily,
        AdditionalAddressFamily,
        EvenPort,
        RequestedTransport,
        DontFragment,
        ReservationToken,
        AddressErrorCode,
        Icmp,
        ChangeRequest,
        ResponsePort,
        Padding,
        AlternateDomain,
    )
}


def decode_attribute(attr_type: int, value: bytes, transaction_id: bytes) -> Attribute:
    """Decode one value by type code; unknown types become RawAttribute. Raises StunDecodeError."""
    cls = ATTRIBUTES.get(attr_type)
    if cls is None:
        return RawAttribute(attr_type, bytes(value))
    try:
        return cls.decode_value(value, transaction_id)
    except StunDecodeError:
        raise
    except (ValueError, IndexError, struct.error, TypeError, OverflowError) as exc:
        # Safety net: the decoders check lengths first, this keeps the "only StunDecodeError" rule.
        raise StunDecodeError(f"{attribute_name(attr_type)}: {exc}") from None


def encode_attribute(attr: Attribute, transaction_id: bytes) -> bytes:
    """Type, length, value and zero padding (RFC 8489 §14)."""
    return encode_tlv(attr.TYPE, attr.encode_value(transaction_id))


_TLV = struct.Struct("!HH")
_PADDING = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")  # by length % 4


def encode_tlv(attr_type: int, value: bytes) -> bytes:
    """One attribute from its type code and encoded value: header, value, zero padding."""
    n = len(value)
    if n > 0xFFFF:
        raise StunEncodeError(f"{attribute_name(attr_type)}: value of {n} bytes")
    return _TLV.pack(attr_type, n) + value + _PADDING[n % 4]
