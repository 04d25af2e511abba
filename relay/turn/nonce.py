"""Stateless NONCE values (RFC 8489 §9.2) carrying the security feature cookie.

Layout (47 ASCII characters, well under RFC 8489 §14.10's 128)::

    obMatJos2  FFFF  EEEEEEEEEEEE  MMMMMMMMMMMMMMMMMMMMMM
    cookie     features (base64 of 24 bits, RFC 8489 §9.2)
               expiry, ms since the epoch (12 lowercase hex digits)
               HMAC-SHA256(secret, label | cookie+features+expiry | client), 16 bytes, base64url

The server keeps no per-nonce state: the MAC proves it issued the nonce, to this client, with
these features (so the feature set can't be bid down, RFC 8489 §9.2.1), and the expiry says
when it goes stale. Every character is in the qdtext set that NONCE requires.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import re
from dataclasses import dataclass, field

from relay.stun.constants import NONCE_COOKIE
from relay.stun.mac import hmac_sha256

# RFC 8489 §18.1 as published: "Bits are assigned starting from the most significant side of
# the bit set, so Bit 0 is the leftmost bit". Beware: the §B.1 test vector's "obMatJos2AAAC"
# and some clients (libjuice, citing an erratum) number bits from the least significant side.
FEATURE_PASSWORD_ALGORITHMS = 1 << 23  # Bit 0
FEATURE_USERNAME_ANONYMITY = 1 << 22  # Bit 1
FEATURES_MAX = (1 << 24) - 1

MIN_SECRET_LENGTH = 16  # bytes; the MAC is only as strong as this
_MAC_LENGTH = 16  # bytes of HMAC-SHA256 kept (128 bits)
_MAC_LABEL = b"natlab-relay nonce v1\x00"
_EXPIRY_DIGITS = 12  # hex digits of milliseconds: good until the year 10889
_EXPIRY_LIMIT = 16**_EXPIRY_DIGITS
_MAC_CHARACTERS = 22  # base64url of 16 bytes, "==" dropped
_URLSAFE = bytes.maketrans(b"+/", b"-_")  # RFC 4648 §5
_NONCE = re.compile(
    re.escape(NONCE_COOKIE)
    + r"([A-Za-z0-9+/]{4})"
    + rf"([0-9a-f]{{{_EXPIRY_DIGITS}}})"
    + r"([A-Za-z0-9_-]{22})",
    re.ASCII,
)
_FEATURES = re.compile(r"[A-Za-z0-9+/]{4}", re.ASCII)


def encode_features(features: int) -> str:
    """RFC 8489 §9.2: the 24-bit security feature set as 4 base64 characters."""
    if not 0 <= features <= FEATURES_MAX:
        raise ValueError(f"security features {features:#x} do not fit in 24 bits")
    return base64.b64encode(features.to_bytes(3, "big")).decode("ascii")


def _decode_features(text: str) -> int | None:
    if not _FEATURES.fullmatch(text):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        return None
    return int.from_bytes(raw, "big")


@dataclass(frozen=True)
class NonceFactory:
    """Issues and checks nonces; ``now`` is seconds since the epoch, passed in by the shell."""

    secret: bytes
    lifetime: float = 600.0  # seconds; coturn's stale-nonce default is 600 too
    features: int = 0  # RFC 8489 §9.2 security feature bits (FEATURE_* above)
    # "obMatJos2" + the encoded features: the part every nonce we issue starts with
    _head: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"nonce secret must be at least {MIN_SECRET_LENGTH} bytes")
        if not (self.lifetime > 0 and math.isfinite(self.lifetime)):
            raise ValueError(f"nonce lifetime must be positive, not {self.lifetime}")
        # encode_features validates the range
        object.__setattr__(self, "_head", NONCE_COOKIE + encode_features(self.features))

    def _mac(self, prefix: str, client: str) -> str:
        message = _MAC_LABEL + prefix.encode("ascii") + client.encode("utf-8", "surrogatepass")
        digest = hmac_sha256(self.secret, message)[:_MAC_LENGTH]
        encoded = binascii.b2a_base64(digest, newline=False)[:_MAC_CHARACTERS]
        return encoded.translate(_URLSAFE).decode("ascii")

    def issue(self, now: float, client: str) -> str:
        """A nonce for ``client`` (any string naming the client, e.g. its 5-tuple)."""
        expiry_ms = int((now + self.lifetime) * 1000)
        if not 0 <= expiry_ms < _EXPIRY_LIMIT:
            raise ValueError(f"time {now} out of range for a nonce")
        prefix = f"{self._head}{expiry_ms:0{_EXPIRY_DIGITS}x}"
        return prefix + self._mac(prefix, client)

    def check(self, nonce: str, now: float, client: str) -> str:
        """ "ok", "stale" (ours and authentic, but expired or issued with other features) or
        "invalid" (not ours, tampered, for another client, malformed)."""
        if not nonce.isascii():
            return "invalid"
        match = _NONCE.fullmatch(nonce)
        if match is None:
            return "invalid"
        prefix = nonce[: match.end(2)]
        if not hmac.compare_digest(match.group(3), self._mac(prefix, client)):
            return "invalid"
        # Authentic from here on. A changed feature set (config reload) makes old nonces stale,
        # so the client gets a fresh one with the current features (RFC 8489 §9.2.4 -> 438).
        # Four base64 characters and 24 bits map one to one, so comparing the text suffices.
        if not nonce.startswith(self._head):
            return "stale"
        if now * 1000 >= int(match.group(2), 16):
            return "stale"
        return "ok"

    def features_of(self, nonce: str) -> int | None:
        """The feature set of any nonce that starts with the RFC 8489 cookie (not authenticated:
        clients read it from a server's nonce); None if there is no cookie."""
        if not nonce.isascii() or not nonce.startswith(NONCE_COOKIE):
            return None
        if nonce.startswith(self._head):
            return self.features  # our own feature set: nothing to decode
        start = len(NONCE_COOKIE)
        return _decode_features(nonce[start : start + 4])
