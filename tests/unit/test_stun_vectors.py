"""Golden packets: RFC 5769 test vectors and RFC 8489 Appendix B.1 (with errata 6268)."""

from __future__ import annotations

import ipaddress

import pytest

from relay.stun import (
    Fingerprint,
    MessageClass,
    MessageIntegrity,
    MessageIntegritySha256,
    Method,
    Nonce,
    PasswordAlgorithm,
    PasswordAlgorithmAttr,
    RawAttribute,
    Realm,
    Software,
    StunDecodeError,
    Userhash,
    Username,
    XorMappedAddress,
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


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# RFC 5769 §2.1-§2.3 share this transaction id and short-term password.
TID_5769 = h("b7e7a701 bc34d686 fa87dfae")
PASSWORD_5769 = "VOkJxbRl1RmTxUk/WvJxBt"

# RFC 5769 §2.1 Sample Request. Note: the RFC pads SOFTWARE/USERNAME with 0x20, not zero.
SAMPLE_REQUEST = h(
    "00010058 2112a442 b7e7a701 bc34d686 fa87dfae"
    "80220010 5354554e 20746573 7420636c 69656e74"  # SOFTWARE "STUN test client"
    "00240004 6e0001ff"  # PRIORITY (ICE, unknown here, comprehension-required)
    "80290008 932ff9b1 51263b36"  # ICE-CONTROLLED (unknown, optional)
    "00060009 6576746a 3a683676 59202020"  # USERNAME "evtj:h6vY" + 3 bytes 0x20 padding
    "00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2"  # MESSAGE-INTEGRITY
    "80280004 e57a3bcf"  # FINGERPRINT
)

# RFC 5769 §2.2 Sample IPv4 Response.
SAMPLE_IPV4_RESPONSE = h(
    "0101003c 2112a442 b7e7a701 bc34d686 fa87dfae"
    "8022000b 74657374 20766563 746f7220"  # SOFTWARE "test vector" + 0x20 padding
    "00200008 0001a147 e112a643"  # XOR-MAPPED-ADDRESS 192.0.2.1:32853
    "00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7"
    "80280004 c07d4c96"
)

# RFC 5769 §2.3 Sample IPv6 Response.
SAMPLE_IPV6_RESPONSE = h(
    "01010048 2112a442 b7e7a701 bc34d686 fa87dfae"
    "8022000b 74657374 20766563 746f7220"
    # XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853
    "00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9"
    "00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41"
    "80280004 c8fb0b4c"
)

# RFC 5769 §2.4 Sample Request with Long-Term Authentication (zero padding, no FINGERPRINT).
TID_LONG_TERM = h("78ad3433 c6ad72c0 29da412e")
USERNAME_MATRIX = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"  # "マトリックス"
PASSWORD_MATRIX = "The\u00adM\u00aatr\u2168"  # "TheMatrIX" after SASLprep
SAMPLE_LONG_TERM = h(
    "00010060 2112a442 78ad3433 c6ad72c0 29da412e"
    "00060012 e3839ee3 8388e383 aae38383 e382afe3 82b90000"  # USERNAME (18 bytes)
    "0015001c 662f2f34 39396b39 35346436 4f4c3334 6f4c3946 53547679 36347341"  # NONCE
    "0014000b 6578616d 706c652e 6f726700"  # REALM "example.org"
    "00080014 f6702465 6dd64a3e 02b8e071 2e85c9a2 8ca89666"
)

# RFC 8489 Appendix B.1, Sample Request with Long-Term Authentication with
# MESSAGE-INTEGRITY-SHA256 and USERHASH, AS CORRECTED BY ERRATUM 6268. The published vector
# (a) put 0x009c in the length field, which is the size of the whole message instead of the size
# after the 20-byte header, (b) lacked the PASSWORD-ALGORITHM attribute although the key is the
# SHA-256 one (not the default MD5), and (c) carried a MESSAGE-INTEGRITY-SHA256 value that cannot
# be reproduced. The erratum sets the length to 0x0090, inserts PASSWORD-ALGORITHM (SHA-256, no
# parameters) before MESSAGE-INTEGRITY-SHA256 and gives the recomputed HMAC below. The USERHASH
# value is unchanged and verifies as published.
SAMPLE_B1_ERRATA = h(
    "00010090 2112a442 78ad3433 c6ad72c0 29da412e"
    "001e0020 4a3cf38f ef6992bd a952c678 0417da0f 24819415 569e60b2 05c46e41 407f1704"
    "00150029 6f624d61 744a6f73 32414141 43662f2f 3439396b 39353464 364f4c33"
    "346f4c39 46535476 79363473 41000000"  # NONCE (41 bytes) + 3 bytes padding
    "0014000b 6578616d 706c652e 6f726700"  # REALM
    "001d0004 00020000"  # PASSWORD-ALGORITHM SHA-256, parameter length 0 (erratum 6268)
    "001c0020 b5c7bf00 5b6c52a2 1c51c5e8 92f81924 136296cb 927c4314 9309278c c6518e65"
)
NONCE_B1 = "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"

# The B.1 bytes as originally published: wrong length field, no PASSWORD-ALGORITHM.
SAMPLE_B1_PUBLISHED = h(
    "0001009c 2112a442 78ad3433 c6ad72c0 29da412e"
    "001e0020 4a3cf38f ef6992bd a952c678 0417da0f 24819415 569e60b2 05c46e41 407f1704"
    "00150029 6f624d61 744a6f73 32414141 43662f2f 3439396b 39353464 364f4c33"
    "346f4c39 46535476 79363473 41000000"
    "0014000b 6578616d 706c652e 6f726700"
    "001c0020 e4686c8f 0edeb590 13e07090 010a93ef ccbccc54 4c0a45d9 f830aa6d 6f735a01"
)


def test_vectors_byte_counts_match_length_fields() -> None:
    for packet, length in (
        (SAMPLE_REQUEST, 0x58),
        (SAMPLE_IPV4_RESPONSE, 0x3C),
        (SAMPLE_IPV6_RESPONSE, 0x48),
        (SAMPLE_LONG_TERM, 0x60),
        (SAMPLE_B1_ERRATA, 0x90),
    ):
        assert len(packet) == 20 + length


def test_rfc5769_sample_request_decodes_every_field() -> None:
    msg = decode_message(SAMPLE_REQUEST)
    assert msg.method == Method.BINDING
    assert msg.msg_class == MessageClass.REQUEST
    assert msg.transaction_id == TID_5769
    assert msg.attributes == (
        Software("STUN test client"),
        RawAttribute(0x0024, h("6e0001ff")),
        RawAttribute(0x8029, h("932ff9b151263b36")),
        Username("evtj:h6vY"),
        MessageIntegrity(h("9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2")),
        Fingerprint(0xE57A3BCF),
    )
    assert msg.integrity_offset == 20 + 20 + 8 + 12 + 16
    # PRIORITY is comprehension-required and unknown to a TURN server.
    assert msg.unknown_comprehension_required() == (0x0024,)


def test_rfc5769_sample_request_integrity_and_fingerprint_verify() -> None:
    msg = decode_message(SAMPLE_REQUEST)
    assert verify_integrity(msg, short_term_key(PASSWORD_5769))
    assert not verify_integrity(msg, short_term_key(PASSWORD_5769 + "x"))
    assert fingerprint(SAMPLE_REQUEST[:-8]) == 0xE57A3BCF


def test_rfc5769_sample_request_reencodes_with_zero_padding() -> None:
    # The RFC's 0x20 padding becomes zeros, so the bytes differ only there and in the two
    # computed attributes; decoding again gives the same message, which verifies.
    msg = decode_message(SAMPLE_REQUEST)
    key = short_term_key(PASSWORD_5769)
    again = encode_message(msg, key=key, fingerprint=True)
    assert len(again) == len(SAMPLE_REQUEST)
    assert again[:60] == SAMPLE_REQUEST[:60]
    assert again[60:76] == h("00060009 6576746a 3a683676 59000000")
    decoded = decode_message(again)
    assert decoded.attributes[:4] == msg.attributes[:4]
    assert verify_integrity(decoded, key)


@pytest.mark.parametrize(
    ("packet", "ip"),
    [
        (SAMPLE_IPV4_RESPONSE, "192.0.2.1"),
        (SAMPLE_IPV6_RESPONSE, "2001:db8:1234:5678:11:2233:4455:6677"),
    ],
)
def test_rfc5769_sample_response_decodes_and_verifies(packet: bytes, ip: str) -> None:
    msg = decode_message(packet)
    assert msg.method == Method.BINDING
    assert msg.msg_class == MessageClass.SUCCESS
    assert msg.transaction_id == TID_5769
    assert msg.get(Software) == Software("test vector")
    assert msg.get(XorMappedAddress) == XorMappedAddress(ipaddress.ip_address(ip), 32853)
    assert verify_integrity(msg, short_term_key(PASSWORD_5769))
    crc = msg.get(Fingerprint)
    assert crc is not None
    assert crc.crc == fingerprint(packet[:-8])
    assert msg.unknown_comprehension_required() == ()


@pytest.mark.parametrize("packet", [SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE])
def test_rfc5769_sample_response_xor_address_reencodes_exactly(packet: bytes) -> None:
    msg = decode_message(packet)
    mapped = msg.get(XorMappedAddress)
    assert mapped is not None
    start = 20 + 16
    length = int.from_bytes(packet[start + 2 : start + 4], "big")
    assert mapped.encode_value(TID_5769) == packet[start + 4 : start + 4 + length]


def test_rfc5769_long_term_decodes_every_field() -> None:
    msg = decode_message(SAMPLE_LONG_TERM)
    assert msg.method == Method.BINDING
    assert msg.msg_class == MessageClass.REQUEST
    assert msg.transaction_id == TID_LONG_TERM
    assert msg.attributes[:3] == (
        Username(USERNAME_MATRIX),
        Nonce("f//499k954d6OL34oL9FSTvy64sA"),
        Realm("example.org"),
    )
    assert msg.get(MessageIntegrity) == MessageIntegrity(
        h("f6702465 6dd64a3e 02b8e071 2e85c9a2 8ca89666")
    )
    assert msg.get(Fingerprint) is None


def test_rfc5769_long_term_integrity_verifies_with_saslprep_password() -> None:
    assert saslprep(PASSWORD_MATRIX) == "TheMatrIX"
    key = long_term_key(USERNAME_MATRIX, "example.org", PASSWORD_MATRIX)
    assert key == long_term_key(USERNAME_MATRIX, "example.org", "TheMatrIX")
    assert len(key) == 16
    msg = decode_message(SAMPLE_LONG_TERM)
    assert verify_integrity(msg, key)
    assert not verify_integrity(msg, long_term_key(USERNAME_MATRIX, "example.org", "thematrix"))


def test_rfc5769_long_term_reencodes_byte_for_byte() -> None:
    key = long_term_key(USERNAME_MATRIX, "example.org", PASSWORD_MATRIX)
    msg = decode_message(SAMPLE_LONG_TERM)
    assert encode_message(msg, key=key) == SAMPLE_LONG_TERM


def test_rfc8489_b1_errata_decodes_every_field() -> None:
    msg = decode_message(SAMPLE_B1_ERRATA)
    assert msg.method == Method.BINDING
    assert msg.msg_class == MessageClass.REQUEST
    assert msg.transaction_id == TID_LONG_TERM
    assert msg.attributes[:4] == (
        Userhash(h("4a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704")),
        Nonce(NONCE_B1),
        Realm("example.org"),
        PasswordAlgorithmAttr(PasswordAlgorithm.SHA256),
    )
    assert isinstance(msg.attributes[4], MessageIntegritySha256)
    assert msg.integrity_offset is None
    assert msg.integrity_sha256_offset == len(SAMPLE_B1_ERRATA) - 36


def test_rfc8489_b1_userhash_matches() -> None:
    msg = decode_message(SAMPLE_B1_ERRATA)
    published = msg.get(Userhash)
    assert published is not None
    assert userhash(USERNAME_MATRIX, "example.org") == published.value


def test_rfc8489_b1_errata_integrity_sha256_verifies() -> None:
    key = long_term_key(USERNAME_MATRIX, "example.org", PASSWORD_MATRIX, PasswordAlgorithm.SHA256)
    assert len(key) == 32
    msg = decode_message(SAMPLE_B1_ERRATA)
    assert verify_integrity_sha256(msg, key)
    md5_key = long_term_key(USERNAME_MATRIX, "example.org", PASSWORD_MATRIX)
    assert not verify_integrity_sha256(msg, md5_key)
    assert not verify_integrity(msg, key)  # no MESSAGE-INTEGRITY in this vector


def test_rfc8489_b1_errata_reencodes_byte_for_byte() -> None:
    key = long_term_key(USERNAME_MATRIX, "example.org", PASSWORD_MATRIX, PasswordAlgorithm.SHA256)
    msg = decode_message(SAMPLE_B1_ERRATA)
    assert encode_message(msg, key=key, sha1=False, sha256=True) == SAMPLE_B1_ERRATA


def test_rfc8489_b1_published_vector_is_rejected_for_its_length_field() -> None:
    # 0x9c counts the header too: decoding must fail with the exact reason.
    assert len(SAMPLE_B1_PUBLISHED) == 0x9C
    with pytest.raises(StunDecodeError, match=r"^length 156 does not match 136 bytes"):
        decode_message(SAMPLE_B1_PUBLISHED)


def test_rfc8489_b1_published_hmac_does_not_verify_even_with_fixed_length() -> None:
    fixed = SAMPLE_B1_PUBLISHED[:2] + (0x9C - 20).to_bytes(2, "big") + SAMPLE_B1_PUBLISHED[4:]
    msg = decode_message(fixed)
    for algorithm in (PasswordAlgorithm.MD5, PasswordAlgorithm.SHA256):
        key = long_term_key(USERNAME_MATRIX, "example.org", PASSWORD_MATRIX, algorithm)
        assert not verify_integrity_sha256(msg, key)
