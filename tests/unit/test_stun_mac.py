"""relay.stun.mac: HMAC with kept pad states must equal the standard library's HMAC."""

from __future__ import annotations

import hmac

import pytest

from relay.stun import mac
from relay.stun.mac import hmac_sha1, hmac_sha256


@pytest.mark.parametrize("key_length", [0, 1, 16, 20, 32, 63, 64, 65, 200])
@pytest.mark.parametrize("data", [b"", b"x", bytes(range(256)) * 3])
def test_mac_equals_hmac_module(key_length: int, data: bytes) -> None:
    key = bytes((i * 7 + 3) % 256 for i in range(key_length))
    assert hmac_sha1(key, data) == hmac.digest(key, data, "sha1")
    assert hmac_sha256(key, data) == hmac.digest(key, data, "sha256")


def test_mac_repeated_key_gives_the_same_digest() -> None:
    # the kept states are copied, never updated in place
    key, data = b"k" * 16, b"message"
    first = hmac_sha1(key, data)
    hmac_sha1(key, b"something else")
    assert hmac_sha1(key, data) == first


def test_mac_cache_is_bounded() -> None:
    for i in range(mac._MAX_KEYS + 10):
        hmac_sha1(i.to_bytes(4, "big"), b"x")
    assert len(mac._SHA1) <= mac._MAX_KEYS
    assert hmac_sha1(b"\x00\x00\x00\x01", b"x") == hmac.digest(b"\x00\x00\x00\x01", b"x", "sha1")


def test_mac_accepts_bytearray_key() -> None:
    key = bytearray(b"mutable key")
    digest = hmac_sha256(key, b"data")  # type: ignore[arg-type]
    key[0] = 0  # the cache holds a copy, keyed by the old value
    assert digest == hmac.digest(b"mutable key", b"data", "sha256")
    assert hmac_sha256(b"mutable key", b"data") == digest
