"""Attribute values (RFC 8489 §14, RFC 8656 §18, RFC 5780 §7): golden bytes and validation."""

from __future__ import annotations

import ipaddress

import pytest

from relay.stun import (
    ATTRIBUTES,
    AdditionalAddressFamily,
    AddressErrorCode,
    AlternateDomain,
    AlternateServer,
    AttrType,
    ChangeRequest,
    ChannelNumber,
    Data,
    DontFragment,
    ErrorCodeAttr,
    EvenPort,
    Fingerprint,
    Icmp,
    Lifetime,
    MappedAddress,
    MessageIntegrity,
    MessageIntegritySha256,
    Nonce,
    OtherAddress,
    Padding,
    PasswordAlgorithmAttr,
    PasswordAlgorithms,
    RawAttribute,
    Realm,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    ResponseOrigin,
    ResponsePort,
    Software,
    StunDecodeError,
    StunEncodeError,
    UnknownAttributes,
    Userhash,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
    decode_attribute,
    encode_attribute,
)
from relay.stun.attributes import Attribute

TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
V4 = ipaddress.IPv4Address("192.0.2.1")
V6 = ipaddress.IPv6Address("2001:db8:1234:5678:11:2233:4455:6677")

GOLDEN: list[tuple[Attribute, str]] = [
    (MappedAddress(V4, 32853), "0001 8055 c0000201"),
    (XorMappedAddress(V4, 32853), "0001 a147 e112a643"),  # RFC 5769 §2.2
    (
        XorMappedAddress(V6, 32853),
        "0002 a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9",  # RFC 5769 §2.3
    ),
    (XorPeerAddress(V4, 32853), "0001 a147 e112a643"),
    (XorRelayedAddress(V4, 32853), "0001 a147 e112a643"),
    (AlternateServer(V6, 1), "0002 0001 20010db8 12345678 00112233 44556677"),
    (ResponseOrigin(V4, 3478), "0001 0d96 c0000201"),
    (OtherAddress(V4, 3479), "0001 0d97 c0000201"),
    (Username("evtj:h6vY"), "6576746a 3a683676 59"),
    (Userhash(bytes(range(32))), bytes(range(32)).hex()),
    (Realm("example.org"), "6578616d706c652e6f7267"),
    (Nonce("n"), "6e"),
    (Software("\u00e9"), "c3a9"),
    (MessageIntegrity(bytes(20)), "00" * 20),
    (MessageIntegritySha256(bytes(16)), "00" * 16),
    (Fingerprint(0xE57A3BCF), "e57a3bcf"),
    (ErrorCodeAttr(401, "Unauthenticated"), "0000 0401" + b"Unauthenticated".hex()),
    (ErrorCodeAttr(699, ""), "0000 0663"),
    (UnknownAttributes((0x0024, 0x7F01, 0x0003)), "0024 7f01 0003"),
    (PasswordAlgorithms(((1, b""), (2, b"abc"))), "0001 0000 0002 0003 61626300"),
    (PasswordAlgorithmAttr(2), "0002 0000"),
    (PasswordAlgorithmAttr(1, b"xy"), "0001 0002 7879"),
    (ChannelNumber(0x4001), "4001 0000"),
    (Lifetime(600), "00000258"),
    (Data(b"\x00\x01"), "0001"),
    (RequestedAddressFamily(2), "02000000"),
    (AdditionalAddressFamily(2), "02000000"),
    (EvenPort(True), "80"),
    (EvenPort(False), "00"),
    (RequestedTransport(17), "11000000"),
    (DontFragment(), ""),
    (ReservationToken(b"12345678"), "3132333435363738"),
    (AddressErrorCode(2, 440, "x"), "02 00 04 28 78"),
    (Icmp(3, 4, 1400), "0000 03 04 00000578"),
    (ChangeRequest(True, True), "00000006"),
    (ChangeRequest(True, False), "00000004"),
    (ChangeRequest(False, True), "00000002"),
    (ResponsePort(5000), "1388 0000"),
    (Padding(b"\x00" * 5), "0000000000"),
    (AlternateDomain("turn.example.org"), b"turn.example.org".hex()),
]


@pytest.mark.parametrize(("attr", "value_hex"), GOLDEN, ids=lambda v: type(v).__name__)
def test_attribute_golden_encode_and_decode(attr: Attribute, value_hex: str) -> None:
    value = bytes.fromhex(value_hex.replace(" ", ""))
    assert attr.encode_value(TID) == value
    assert type(attr).decode_value(value, TID) == attr
    assert decode_attribute(attr.TYPE, value, TID) == attr


def test_attribute_registry_covers_every_known_type() -> None:
    assert set(ATTRIBUTES) == {int(t) for t in AttrType}
    for code, cls in ATTRIBUTES.items():
        assert code == cls.TYPE


def test_attribute_golden_covers_every_class() -> None:
    assert {type(a) for a, _ in GOLDEN} == set(ATTRIBUTES.values())


def test_attribute_tlv_encoding_pads_with_zeros() -> None:
    assert encode_attribute(Username("abcde"), TID) == bytes.fromhex(
        "0006 0005 6162636465 000000".replace(" ", "")
    )
    assert encode_attribute(DontFragment(), TID) == bytes.fromhex("001a0000")


def test_attribute_raw_type_is_per_instance() -> None:
    raw = RawAttribute(0x7F01, b"ab")
    assert raw.TYPE == 0x7F01
    assert raw.comprehension_required
    assert not RawAttribute(0x8123, b"").comprehension_required
    assert encode_attribute(raw, TID) == bytes.fromhex("7f010002 61620000")
    assert decode_attribute(0x7F01, b"ab", TID) == raw


def test_attribute_xor_address_ipv6_uses_transaction_id() -> None:
    other = bytes(12)
    value = XorMappedAddress(V6, 1).encode_value(TID)
    assert XorMappedAddress.decode_value(value, other) != XorMappedAddress(V6, 1)


@pytest.mark.parametrize(
    ("cls", "value", "reason"),
    [
        (MappedAddress, "0001 0000", r"^MAPPED-ADDRESS: value length 4, expected 8 for family 1$"),
        (MappedAddress, "00", r"^MAPPED-ADDRESS: value length 1 too short for an address$"),
        (
            XorRelayedAddress,
            "0000 0000 00000000",
            r"^XOR-RELAYED-ADDRESS: bad address family 0x00$",
        ),
        (OtherAddress, "0001 0000 00000000 00", r"^OTHER-ADDRESS: value length 9"),
        (Userhash, "00" * 31, r"^USERHASH: value length 31, expected 32$"),
        (Realm, "61" * 764, r"^REALM: 764 bytes, at most 763 allowed$"),
        (Nonce, "61" * 764, r"^NONCE: 764 bytes"),
        (Software, "61" * 764, r"^SOFTWARE: 764 bytes"),
        (AlternateDomain, "61" * 256, r"^ALTERNATE-DOMAIN: 256 bytes, at most 255 allowed$"),
        (Username, "ff", r"^USERNAME: invalid UTF-8 at byte 0$"),
        (MessageIntegritySha256, "00" * 12, r"^MESSAGE-INTEGRITY-SHA256: value length 12"),
        (MessageIntegritySha256, "00" * 36, r"^MESSAGE-INTEGRITY-SHA256: value length 36"),
        (MessageIntegritySha256, "00" * 18, r"^MESSAGE-INTEGRITY-SHA256: value length 18"),
        (Fingerprint, "000000", r"^FINGERPRINT: value length 3, expected 4$"),
        (ErrorCodeAttr, "000004", r"^ERROR-CODE: value length 3 too short$"),
        (ErrorCodeAttr, "00000264", r"^ERROR-CODE: bad code \(class 2, number 100\)$"),
        (ErrorCodeAttr, "00000700", r"^ERROR-CODE: bad code \(class 7, number 0\)$"),
        (ErrorCodeAttr, "00000464", r"^ERROR-CODE: bad code \(class 4, number 100\)$"),
        (ErrorCodeAttr, "00000400 ff", r"^ERROR-CODE: invalid UTF-8"),
        (AddressErrorCode, "020004", r"^ADDRESS-ERROR-CODE: value length 3 too short$"),
        (AddressErrorCode, "02000200", r"^ADDRESS-ERROR-CODE: bad code"),
        (UnknownAttributes, "000100", r"^UNKNOWN-ATTRIBUTES: odd value length 3$"),
        (PasswordAlgorithms, "0001 00", r"^PASSWORD-ALGORITHMS: truncated entry at byte 0$"),
        (
            PasswordAlgorithms,
            "0001 0000 0002 0008 00000000",
            r"^PASSWORD-ALGORITHMS: parameters of algorithm 0x0002 run past the end$",
        ),
        (PasswordAlgorithmAttr, "0002 00", r"^PASSWORD-ALGORITHM: value length 3 too short$"),
        (PasswordAlgorithmAttr, "0002 0004 0000", r"^PASSWORD-ALGORITHM: parameter length 4"),
        (PasswordAlgorithmAttr, "0002 0000 00000000", r"^PASSWORD-ALGORITHM: parameter length 0"),
        (ChannelNumber, "4001", r"^CHANNEL-NUMBER: value length 2, expected 4$"),
        (Lifetime, "0000025800", r"^LIFETIME: value length 5, expected 4$"),
        (RequestedAddressFamily, "01", r"^REQUESTED-ADDRESS-FAMILY: value length 1"),
        (AdditionalAddressFamily, "0200000000", r"^ADDITIONAL-ADDRESS-FAMILY: value length 5"),
        (EvenPort, "80000000", r"^EVEN-PORT: value length 4, expected 1$"),
        (EvenPort, "", r"^EVEN-PORT: value length 0, expected 1$"),
        (RequestedTransport, "11", r"^REQUESTED-TRANSPORT: value length 1, expected 4$"),
        (DontFragment, "00", r"^DONT-FRAGMENT: value length 1, expected 0$"),
        (ReservationToken, "00" * 7, r"^RESERVATION-TOKEN: value length 7, expected 8$"),
        (Icmp, "00" * 4, r"^ICMP: value length 4, expected 8$"),
        (ChangeRequest, "06", r"^CHANGE-REQUEST: value length 1, expected 4$"),
        (ResponsePort, "1388", r"^RESPONSE-PORT: value length 2, expected 4$"),
        (MessageIntegrity, "00" * 32, r"^MESSAGE-INTEGRITY: value length 32, expected 20$"),
    ],
)
def test_attribute_bad_value_raises_named_error(
    cls: type[Attribute], value: str, reason: str
) -> None:
    data = bytes.fromhex(value.replace(" ", ""))
    with pytest.raises(StunDecodeError, match=reason):
        cls.decode_value(data, TID)
    with pytest.raises(StunDecodeError, match=reason):
        decode_attribute(cls.TYPE, data, TID)


def test_attribute_username_length_limit_is_513_bytes() -> None:
    assert Username.decode_value(b"a" * 513, TID) == Username("a" * 513)
    with pytest.raises(StunEncodeError):
        Username("a" * 514).encode_value(TID)


def test_attribute_error_code_ignores_reserved_bits() -> None:
    assert ErrorCodeAttr.decode_value(bytes.fromhex("fffffc26"), TID) == ErrorCodeAttr(438)


def test_attribute_error_code_out_of_range_is_refused_on_encode() -> None:
    for code in (299, 700, 200):
        with pytest.raises(StunEncodeError):
            ErrorCodeAttr(code).encode_value(TID)


def test_attribute_even_port_ignores_other_bits() -> None:
    assert EvenPort.decode_value(b"\x7f", TID) == EvenPort(False)
    assert EvenPort.decode_value(b"\xff", TID) == EvenPort(True)


def test_attribute_change_request_ignores_unknown_flags() -> None:
    assert ChangeRequest.decode_value(bytes.fromhex("fffffff9"), TID) == ChangeRequest(False, False)


def test_attribute_password_algorithm_tolerates_inner_padding() -> None:
    assert PasswordAlgorithmAttr.decode_value(
        bytes.fromhex("0001 0002 7879 0000".replace(" ", "")), TID
    ) == (PasswordAlgorithmAttr(1, b"xy"))


def test_attribute_channel_number_any_value_decodes() -> None:
    # The 0x4000-0x4FFF range is a TURN rule (400), not a codec error.
    assert ChannelNumber.decode_value(bytes.fromhex("00010000"), TID) == ChannelNumber(1)


@pytest.mark.parametrize(
    "attr",
    [
        MappedAddress(V4, 70000),
        ChannelNumber(0x10000),
        Lifetime(-1),
        Lifetime(2**32),
        RequestedTransport(256),
        RequestedAddressFamily(-1),
        Icmp(256, 0, 0),
        Icmp(0, 0, 2**32),
        ResponsePort(65536),
        Userhash(b"short"),
        ReservationToken(b"1234567"),
        MessageIntegrity(b"x"),
        MessageIntegritySha256(bytes(33)),
        Fingerprint(-1),
        UnknownAttributes((0x10000,)),
        PasswordAlgorithmAttr(0x10000),
        AddressErrorCode(1, 800),
        Realm("x" * 764),
        RawAttribute(0x10000, b""),
    ],
    ids=repr,
)
def test_attribute_out_of_range_is_refused_on_encode(attr: Attribute) -> None:
    with pytest.raises(StunEncodeError):
        attr.encode_value(TID)


def test_attribute_errors_are_value_errors_on_encode() -> None:
    with pytest.raises(ValueError):
        Lifetime(-5).encode_value(TID)
