"""Credentials and integrity: SASLprep, keys, MESSAGE-INTEGRITY(-SHA256), FINGERPRINT, USERHASH."""

from __future__ import annotations

import functools
import hashlib
import hmac
import stringprep
import unicodedata

from .constants import HEADER_LENGTH, PasswordAlgorithm
from .errors import SaslPrepError
from .mac import hmac_sha1, hmac_sha256
from .message import Message, fingerprint_of

_SHA1_LENGTH = 20

# RFC 4013 §2.3 prohibited output (RFC 3454 tables C.1.2 to C.9; C.1.2 was mapped to SPACE).
_PROHIBITED = (
    stringprep.in_table_c12,
    stringprep.in_table_c21,
    stringprep.in_table_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
)


def saslprep(value: str, *, allow_unassigned: bool = False) -> str:
    """RFC 4013 SASLprep profile of stringprep (RFC 3454), used for OpaqueString.

    allow_unassigned=False treats the input as a "stored string" (RFC 3454 §7): code points
    unassigned in Unicode 3.2 are rejected; True gives "query" semantics.
    Raises SaslPrepError (a ValueError).
    """
    # §2.1 mapping: non-ASCII spaces to SPACE, "commonly mapped to nothing" removed.
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in value if not stringprep.in_table_b1(ch)
    )
    # §2.2 normalisation: NFKC with the Unicode version stringprep is defined on.
    text = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    for ch in text:
        if any(table(ch) for table in _PROHIBITED):
            raise SaslPrepError(f"SASLprep: prohibited character U+{ord(ch):04X}")
        if not allow_unassigned and stringprep.in_table_a1(ch):
            raise SaslPrepError(f"SASLprep: unassigned code point U+{ord(ch):04X}")
    # §2.4 bidirectional characters (RFC 3454 §6).
    if any(stringprep.in_table_d1(ch) for ch in text):
        if any(stringprep.in_table_d2(ch) for ch in text):
            raise SaslPrepError("SASLprep: mixes right-to-left and left-to-right characters")
        if not (stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])):
            raise SaslPrepError("SASLprep: right-to-left string must start and end with RandAL")
    return text


@functools.lru_cache(maxsize=4096)  # a pure function: SASLprep + hash on every request adds up
def long_term_key(
    username: str, realm: str, password: str, algorithm: int = PasswordAlgorithm.MD5
) -> bytes:
    """RFC 8489 §9.2.2: H(username ":" OpaqueString(realm) ":" OpaqueString(password)).

    MD5 gives 16 bytes, SHA-256 32 bytes. The username is used as given (the caller already
    matched it). Raises ValueError for an unknown algorithm or a password SASLprep rejects.
    """
    material = ":".join(
        (
            username,
            saslprep(realm, allow_unassigned=True),
            saslprep(password, allow_unassigned=True),
        )
    ).encode("utf-8")
    if algorithm == PasswordAlgorithm.MD5:
        # MD5 is what the RFC mandates here, not a security choice of ours.
        return hashlib.md5(material, usedforsecurity=False).digest()
    if algorithm == PasswordAlgorithm.SHA256:
        return hashlib.sha256(material).digest()
    raise ValueError(f"unknown password algorithm 0x{algorithm:04x}")


def short_term_key(password: str) -> bytes:
    """RFC 8489 §9.1.1: the key is OpaqueString(password)."""
    return saslprep(password, allow_unassigned=True).encode("utf-8")


def userhash(username: str, realm: str) -> bytes:
    """RFC 8489 §14.4: SHA-256(username ":" OpaqueString(realm)), 32 bytes."""
    text = f"{username}:{saslprep(realm, allow_unassigned=True)}"
    return hashlib.sha256(text.encode("utf-8")).digest()


def fingerprint(data: bytes) -> int:
    """RFC 8489 §14.7: CRC-32 of data XOR 0x5354554E."""
    return fingerprint_of(data)


def _covered(raw: bytes, offset: int, value_length: int) -> bytes:
    # RFC 8489 §14.5/§14.6: the header length is rewritten to end at this attribute, and the
    # HMAC covers everything before the attribute.
    length = offset + 4 + value_length - HEADER_LENGTH
    return raw[:2] + length.to_bytes(2, "big") + raw[4:offset]


def verify_integrity(msg: Message, key: bytes) -> bool:
    """Check MESSAGE-INTEGRITY (HMAC-SHA1) of a decoded message; False if absent."""
    offset = msg.integrity_offset
    raw = msg.raw
    if offset is None or offset + 4 + _SHA1_LENGTH > len(raw):
        return False
    received = raw[offset + 4 : offset + 4 + _SHA1_LENGTH]
    expected = hmac_sha1(key, _covered(raw, offset, _SHA1_LENGTH))
    return hmac.compare_digest(expected, received)


def verify_integrity_sha256(msg: Message, key: bytes) -> bool:
    """Check MESSAGE-INTEGRITY-SHA256, possibly truncated to 16..32 bytes; False if absent."""
    offset = msg.integrity_sha256_offset
    raw = msg.raw
    if offset is None or offset + 4 > len(raw):
        return False
    length = int.from_bytes(raw[offset + 2 : offset + 4], "big")
    if not 16 <= length <= 32 or offset + 4 + length > len(raw):
        return False
    received = raw[offset + 4 : offset + 4 + length]
    expected = hmac_sha256(key, _covered(raw, offset, length))[:length]
    return hmac.compare_digest(expected, received)
