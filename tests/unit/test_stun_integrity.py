"""Credentials and integrity (RFC 8489 §9, §14.4-§14.7; RFC 4013 SASLprep)."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest

from relay.stun import (
    Message,
    MessageClass,
    Method,
    PasswordAlgorithm,
    SaslPrepError,
    Software,
    StunDecodeError,
    Username,
    decode_message,
    encode_message,
    fingerprint,
    long_term_key,
    saslprep,
    short_term_key,
    userhash,
    verify_integrity,
    verify_integrity_sha256,
)

TID = bytes(range(12))
KEY = b"key"


# --- SASLprep (RFC 4013 §3 examples and more) ------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("I\u00adX", "IX"),  # SOFT HYPHEN mapped to nothing
        ("user", "user"),
        ("USER", "USER"),  # case preserved
        ("\u00aa", "a"),  # NFKC
        ("\u2168", "IX"),  # NFKC
        ("a\u00a0b", "a b"),  # non-ASCII space mapped to SPACE
        ("a\u200bb", "ab"),  # ZERO WIDTH SPACE mapped to nothing
        ("", ""),
        ("\u0627\u0628", "\u0627\u0628"),  # all right-to-left is fine
    ],
)
def test_saslprep_maps_and_normalises(given: str, expected: str) -> None:
    assert saslprep(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        "\u0007",  # control character (C.2.1)
        "a\u0627\u0031",  # RandAL mixed with L
        "\u0627\u0031",  # RFC 4013 §3 example 7: must end with RandAL
        "\ue000",  # private use (C.3)
        "\ufffd",  # inappropriate for plain text (C.6)
        "\u2ff0",  # ideographic description (C.7)
        "\u200e",  # change display property (C.8)
        "\U000e0001",  # tagging character (C.9)
        "\ud800",  # surrogate (C.5)
    ],
)
def test_saslprep_prohibited_raises(given: str) -> None:
    with pytest.raises(SaslPrepError):
        saslprep(given)


def test_saslprep_unassigned_code_point_only_allowed_in_query_mode() -> None:
    emoji = "\U0001f600"  # unassigned in Unicode 3.2
    with pytest.raises(SaslPrepError, match="unassigned"):
        saslprep(emoji)
    assert saslprep(emoji, allow_unassigned=True) == emoji


def test_saslprep_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        saslprep("\u0000")


# --- keys ------------------------------------------------------------------------------------


def test_long_term_key_md5_formula() -> None:
    expected = hashlib.md5(b"user:realm:pass").digest()
    assert long_term_key("user", "realm", "pass") == expected
    assert long_term_key("user", "realm", "pass", PasswordAlgorithm.MD5) == expected


def test_long_term_key_sha256_formula() -> None:
    expected = hashlib.sha256(b"user:realm:pass").digest()
    assert long_term_key("user", "realm", "pass", PasswordAlgorithm.SHA256) == expected


def test_long_term_key_prepares_realm_and_password_not_username() -> None:
    assert (
        long_term_key("u\u00aa", "r\u00ad", "p\u2168")
        == hashlib.md5("u\u00aa:r:pIX".encode()).digest()
    )


def test_long_term_key_unknown_algorithm_raises() -> None:
    with pytest.raises(ValueError, match="unknown password algorithm 0x0003"):
        long_term_key("u", "r", "p", 3)


def test_short_term_key_is_prepared_password() -> None:
    assert short_term_key("pa\u00adss") == b"pass"


def test_userhash_formula() -> None:
    assert userhash("bob", "example.org") == hashlib.sha256(b"bob:example.org").digest()


def test_fingerprint_formula() -> None:
    # CRC-32 of "123456789" is 0xCBF43926 (the standard check value).
    assert fingerprint(b"123456789") == 0xCBF43926 ^ 0x5354554E


# --- verification ----------------------------------------------------------------------------


def _signed(**flags: bool) -> bytes:
    msg = Message(Method.ALLOCATE, MessageClass.REQUEST, TID, (Username("u"), Software("s")))
    return encode_message(msg, key=KEY, **flags)


def test_verify_integrity_detects_any_flipped_bit_before_it() -> None:
    data = _signed()
    assert verify_integrity(decode_message(data), KEY)
    for index in range(20, len(data) - 20):
        tampered = bytearray(data)
        tampered[index] ^= 0x01
        try:
            msg = decode_message(bytes(tampered))
        except StunDecodeError:  # some flips make the message undecodable
            continue
        assert not verify_integrity(msg, KEY), index


def test_verify_integrity_wrong_key_fails() -> None:
    assert not verify_integrity(decode_message(_signed()), b"other")


def test_verify_integrity_absent_is_false() -> None:
    msg = decode_message(encode_message(Message.request(Method.BINDING, TID)))
    assert not verify_integrity(msg, KEY)
    assert not verify_integrity_sha256(msg, KEY)


def test_verify_integrity_constructed_message_is_false() -> None:
    assert not verify_integrity(Message.request(Method.BINDING, TID), KEY)


def test_verify_integrity_survives_fingerprint_after_it() -> None:
    msg = decode_message(_signed(sha256=True, fingerprint=True))
    assert verify_integrity(msg, KEY)
    assert verify_integrity_sha256(msg, KEY)


def test_verify_integrity_sha256_header_length_ends_at_attribute() -> None:
    data = _signed(sha1=False, sha256=True)
    offset = len(data) - 36
    covered = data[:2] + struct.pack("!H", offset + 36 - 20) + data[4:offset]
    assert data[-32:] == hmac.new(KEY, covered, hashlib.sha256).digest()


@pytest.mark.parametrize("length", [16, 20, 24, 28, 32])
def test_verify_integrity_sha256_accepts_truncation(length: int) -> None:
    full = _signed(sha1=False)  # no integrity at all yet
    body = full[20:]
    header_len = len(body) + 4 + length
    covered = full[:2] + struct.pack("!H", header_len) + full[4:]
    mac = hmac.new(KEY, covered, hashlib.sha256).digest()[:length]
    data = covered + struct.pack("!HH", 0x001C, length) + mac
    msg = decode_message(data)
    assert verify_integrity_sha256(msg, KEY)
    tampered = data[:-1] + bytes([data[-1] ^ 1])
    assert not verify_integrity_sha256(decode_message(tampered), KEY)
