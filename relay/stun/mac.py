"""HMAC (RFC 2104) with each key's padded inner and outer hash states kept.

With OpenSSL 3, ``hmac.new``/``hmac.digest`` set up a new HMAC context per call, which costs
more than hashing a whole STUN message. The keys here repeat (a user's long-term key, the nonce
secret), so the two pad blocks are hashed once per key and copied per message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

_BLOCK = 64  # RFC 2104 B: SHA-1 and SHA-256 both work on 64-byte blocks
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
_MAX_KEYS = 4096  # cache bound: cleared when full (keys are few; it never fills in practice)

_Hash = Any  # hashlib's hash objects have no public type
_States = tuple[_Hash, _Hash]


def _states(
    cache: dict[bytes, _States], new: Callable[..., _Hash], key: bytes
) -> tuple[_Hash, _Hash]:
    if type(key) is not bytes:
        key = bytes(key)  # a bytearray or memoryview key (hmac.new takes those too)
    states = cache.get(key)
    if states is None:
        block = new(key).digest() if len(key) > _BLOCK else key  # RFC 2104 §2
        block = block.ljust(_BLOCK, b"\x00")
        states = (new(block.translate(_IPAD)), new(block.translate(_OPAD)))
        if len(cache) >= _MAX_KEYS:
            cache.clear()
        cache[key] = states
    return states


_SHA1: dict[bytes, _States] = {}
_SHA256: dict[bytes, _States] = {}


def _hmac(cache: dict[bytes, _States], new: Callable[..., _Hash], key: bytes, data: bytes) -> bytes:
    inner, outer = _states(cache, new, key)
    h = inner.copy()
    h.update(data)
    o = outer.copy()
    o.update(h.digest())
    digest: bytes = o.digest()
    return digest


def hmac_sha1(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA1(key, data), 20 bytes; equal to ``hmac.digest(key, data, "sha1")``."""
    return _hmac(_SHA1, hashlib.sha1, key, data)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256(key, data), 32 bytes; equal to ``hmac.digest(key, data, "sha256")``."""
    return _hmac(_SHA256, hashlib.sha256, key, data)
