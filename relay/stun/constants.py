"""Wire values of STUN (RFC 8489), TURN (RFC 8656) and NAT behaviour discovery (RFC 5780)."""

from __future__ import annotations

from enum import IntEnum

MAGIC_COOKIE = 0x2112A442  # RFC 8489 §5
HEADER_LENGTH = 20  # RFC 8489 §5
TRANSACTION_ID_LENGTH = 12  # RFC 8489 §5
FINGERPRINT_XOR = 0x5354554E  # RFC 8489 §14.7 ("STUN")
NONCE_COOKIE = "obMatJos2"  # RFC 8489 §9.2 security feature cookie

CHANNEL_MIN = 0x4000  # RFC 8656 §12
CHANNEL_MAX = 0x4FFF  # RFC 8656 §12
# RFC 5766 §11 allowed up to 0x7FFF; coturn, pion and coturn's own clients still use it
CHANNEL_MAX_RFC5766 = 0x7FFF
CHANNEL_HEADER_LENGTH = 4  # RFC 8656 §12.4


class MessageClass(IntEnum):
    """RFC 8489 §5: the two class bits C1 C0."""

    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


class Method(IntEnum):
    """RFC 8489 §18.2 and RFC 8656 §17."""

    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009


class AttrType(IntEnum):
    """Attribute type codes. Below 0x8000: comprehension-required (RFC 8489 §14)."""

    # RFC 8489 §18.3.1, comprehension-required
    MAPPED_ADDRESS = 0x0001
    CHANGE_REQUEST = 0x0003  # RFC 5780 §7.2
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    CHANNEL_NUMBER = 0x000C  # RFC 8656 §18.1
    LIFETIME = 0x000D  # RFC 8656 §18.2
    XOR_PEER_ADDRESS = 0x0012  # RFC 8656 §18.3
    DATA = 0x0013  # RFC 8656 §18.4
    REALM = 0x0014
    NONCE = 0x0015
    XOR_RELAYED_ADDRESS = 0x0016  # RFC 8656 §18.5
    REQUESTED_ADDRESS_FAMILY = 0x0017  # RFC 8656 §18.6
    EVEN_PORT = 0x0018  # RFC 8656 §18.7
    REQUESTED_TRANSPORT = 0x0019  # RFC 8656 §18.8
    DONT_FRAGMENT = 0x001A  # RFC 8656 §18.9
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    PASSWORD_ALGORITHM = 0x001D
    USERHASH = 0x001E
    XOR_MAPPED_ADDRESS = 0x0020
    RESERVATION_TOKEN = 0x0022  # RFC 8656 §18.10
    PADDING = 0x0026  # RFC 5780 §7.6
    RESPONSE_PORT = 0x0027  # RFC 5780 §7.5
    # comprehension-optional
    ADDITIONAL_ADDRESS_FAMILY = 0x8000  # RFC 8656 §18.11
    ADDRESS_ERROR_CODE = 0x8001  # RFC 8656 §18.12
    PASSWORD_ALGORITHMS = 0x8002
    ALTERNATE_DOMAIN = 0x8003
    ICMP = 0x8004  # RFC 8656 §18.13
    SOFTWARE = 0x8022
    ALTERNATE_SERVER = 0x8023
    FINGERPRINT = 0x8028
    RESPONSE_ORIGIN = 0x802B  # RFC 5780 §7.3
    OTHER_ADDRESS = 0x802C  # RFC 5780 §7.4


class AddressFamily(IntEnum):
    """RFC 8489 §14.1 address family; RFC 8656 §18.6 uses the same values."""

    IPV4 = 0x01
    IPV6 = 0x02


class PasswordAlgorithm(IntEnum):
    """RFC 8489 §18.5."""

    MD5 = 0x0001
    SHA256 = 0x0002


class ErrorCode(IntEnum):
    """ERROR-CODE values used by STUN (RFC 8489 §14.8) and TURN (RFC 8656 §19)."""

    TRY_ALTERNATE = 300
    BAD_REQUEST = 400
    UNAUTHENTICATED = 401
    FORBIDDEN = 403
    UNKNOWN_ATTRIBUTE = 420
    ALLOCATION_MISMATCH = 437
    STALE_NONCE = 438
    ADDRESS_FAMILY_NOT_SUPPORTED = 440
    WRONG_CREDENTIALS = 441
    UNSUPPORTED_TRANSPORT_PROTOCOL = 442
    PEER_ADDRESS_FAMILY_MISMATCH = 443
    ALLOCATION_QUOTA_REACHED = 486
    SERVER_ERROR = 500
    INSUFFICIENT_CAPACITY = 508


# Reason phrases recommended by the RFCs.
REASONS: dict[int, str] = {
    300: "Try Alternate",
    400: "Bad Request",
    401: "Unauthenticated",
    403: "Forbidden",
    420: "Unknown Attribute",
    437: "Allocation Mismatch",
    438: "Stale Nonce",
    440: "Address Family not Supported",
    441: "Wrong Credentials",
    442: "Unsupported Transport Protocol",
    443: "Peer Address Family Mismatch",
    486: "Allocation Quota Reached",
    500: "Server Error",
    508: "Insufficient Capacity",
}

UDP_PROTOCOL = 17  # RFC 8656 §18.8 REQUESTED-TRANSPORT value for UDP
