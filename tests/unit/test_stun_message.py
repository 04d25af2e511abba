"""STUN message framing (RFC 8489 §5, §6, §14): header, type bits, attribute list, bad input."""

from __future__ import annotations

import ast
import dataclasses
import ipaddress
import pathlib
import struct

import pytest

import relay.stun
from relay.stun import (
    ErrorCodeAttr,
    Fingerprint,
    Lifetime,
    Message,
    MessageClass,
    MessageIntegrity,
    MessageIntegritySha256,
    Method,
    RawAttribute,
    Realm,
    Software,
    StunDecodeError,
    StunEncodeError,
    Username,
    XorPeerAddress,
    decode_message,
    encode_message,
    is_stun,
    verify_integrity,
    verify_integrity_sha256,
)
from relay.stun.message import decode_type, encode_type

TID = bytes(range(1, 13))
KEY = b"0123456789abcdef"


def header(msg_type: int, length: int, cookie: int = 0x2112A442, tid: bytes = TID) -> bytes:
    return struct.pack("!HHI", msg_type, length, cookie) + tid


def tlv(attr_type: int, value: bytes) -> bytes:
    return struct.pack("!HH", attr_type, len(value)) + value + bytes(-len(value) % 4)


def packet(msg_type: int, *attrs: bytes) -> bytes:
    body = b"".join(attrs)
    return header(msg_type, len(body)) + body


# --- type field -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "msg_class", "wire"),
    [
        (Method.BINDING, MessageClass.REQUEST, 0x0001),
        (Method.BINDING, MessageClass.SUCCESS, 0x0101),
        (Method.BINDING, MessageClass.ERROR, 0x0111),
        (Method.BINDING, MessageClass.INDICATION, 0x0011),
        (Method.ALLOCATE, MessageClass.REQUEST, 0x0003),
        (Method.ALLOCATE, MessageClass.ERROR, 0x0113),
        (Method.SEND, MessageClass.INDICATION, 0x0016),
        (Method.DATA, MessageClass.INDICATION, 0x0017),
        (Method.CHANNEL_BIND, MessageClass.SUCCESS, 0x0109),
        (0xFFF, MessageClass.ERROR, 0x3FFF),
        (0x080, MessageClass.REQUEST, 0x0200),
    ],
)
def test_type_bits_interleave_method_and_class(method: int, msg_class: int, wire: int) -> None:
    assert encode_type(method, msg_class) == wire
    assert decode_type(wire) == (method, msg_class)


def test_type_method_over_12_bits_is_refused() -> None:
    with pytest.raises(StunEncodeError):
        encode_type(0x1000, 0)


def test_decode_unknown_method_kept_as_int() -> None:
    msg = decode_message(packet(encode_type(0x0123, MessageClass.INDICATION)))
    assert msg.method == 0x0123
    assert msg.msg_class == MessageClass.INDICATION
    assert not isinstance(msg.method, Method)


# --- encode -----------------------------------------------------------------------------------


def test_encode_empty_binding_request_golden() -> None:
    msg = Message.request(Method.BINDING, TID)
    assert encode_message(msg) == header(0x0001, 0)


def test_encode_pads_attributes_with_zeros() -> None:
    msg = Message.request(Method.ALLOCATE, TID, Software("abcde"), Lifetime(600))
    assert encode_message(msg) == packet(
        0x0003, b"\x80\x22\x00\x05abcde\x00\x00\x00", b"\x00\x0d\x00\x04\x00\x00\x02\x58"
    )


def test_encode_integrity_and_fingerprint_are_appended_in_order() -> None:
    msg = Message.request(Method.ALLOCATE, TID, Username("u"))
    data = encode_message(msg, key=KEY, sha1=True, sha256=True, fingerprint=True)
    decoded = decode_message(data)
    types = [type(a) for a in decoded.attributes]
    assert types == [Username, MessageIntegrity, MessageIntegritySha256, Fingerprint]
    assert verify_integrity(decoded, KEY)
    assert verify_integrity_sha256(decoded, KEY)
    assert len(data) == 20 + 8 + 24 + 36 + 8


def test_encode_without_key_adds_no_integrity() -> None:
    data = encode_message(Message.request(Method.BINDING, TID), key=None, sha256=True)
    assert data == header(0x0001, 0)


def test_encode_drops_stale_computed_attributes() -> None:
    msg = Message.request(
        Method.BINDING, TID, MessageIntegrity(bytes(20)), Fingerprint(1), Software("x")
    )
    assert decode_message(encode_message(msg)).attributes == (Software("x"),)


def test_encode_bad_transaction_id_is_refused() -> None:
    with pytest.raises(StunEncodeError, match="transaction id"):
        encode_message(Message.request(Method.BINDING, b"short"))


def test_encode_too_long_message_is_refused() -> None:
    msg = Message.request(Method.BINDING, TID, *[RawAttribute(0x8050, bytes(65000))] * 2)
    with pytest.raises(StunEncodeError, match="too long"):
        encode_message(msg)


def test_encode_error_response_helper_uses_default_reason() -> None:
    request = Message.request(Method.ALLOCATE, TID)
    response = request.error_response(437, Software("s"))
    assert response.msg_class == MessageClass.ERROR
    assert response.transaction_id == TID
    assert response.attributes == (ErrorCodeAttr(437, "Allocation Mismatch"), Software("s"))
    assert request.success_response().msg_class == MessageClass.SUCCESS


# --- decode: good input ----------------------------------------------------------------------


def test_decode_keeps_raw_and_offsets_out_of_equality() -> None:
    data = encode_message(Message.request(Method.BINDING, TID, Software("x")), key=KEY)
    msg = decode_message(data)
    assert msg.raw == data
    assert msg.integrity_offset == 28
    assert msg == Message.request(Method.BINDING, TID, Software("x"), MessageIntegrity(data[-20:]))


def test_decode_duplicate_attributes_get_returns_first() -> None:
    data = packet(0x0001, tlv(0x0014, b"first"), tlv(0x0014, b"second"))
    msg = decode_message(data)
    assert msg.get(Realm) == Realm("first")
    assert msg.get_all(Realm) == [Realm("first"), Realm("second")]
    assert msg.get(Username) is None


def test_decode_unknown_attributes_kept_raw() -> None:
    data = packet(0x0001, tlv(0x7F01, b"abc"), tlv(0xC001, b"x"), tlv(0x7F01, b""))
    msg = decode_message(data)
    assert msg.attributes == (
        RawAttribute(0x7F01, b"abc"),
        RawAttribute(0xC001, b"x"),
        RawAttribute(0x7F01, b""),
    )
    assert msg.attributes[0].TYPE == 0x7F01
    assert msg.unknown_comprehension_required() == (0x7F01,)


def test_decode_padding_bytes_are_ignored() -> None:
    data = packet(0x0001, b"\x80\x22\x00\x01x\xff\xee\xdd")
    assert decode_message(data).get(Software) == Software("x")


def test_decode_attributes_after_integrity_are_ignored() -> None:
    signed = encode_message(Message.request(Method.ALLOCATE, TID, Lifetime(1)), key=KEY)
    body = signed[20:] + tlv(0x000D, b"\x00\x00\x00\x02") + tlv(0x8022, b"late")
    tampered = header(0x0003, len(body)) + body
    msg = decode_message(tampered)
    assert msg.attributes == (Lifetime(1), MessageIntegrity(signed[-20:]))
    assert verify_integrity(msg, KEY)


def test_decode_after_integrity_sha256_and_fingerprint_still_counted() -> None:
    data = encode_message(
        Message.request(Method.ALLOCATE, TID), key=KEY, sha256=True, fingerprint=True
    )
    msg = decode_message(data)
    assert [type(a) for a in msg.attributes] == [
        MessageIntegrity,
        MessageIntegritySha256,
        Fingerprint,
    ]


def test_decode_after_integrity_sha256_only_fingerprint_counts() -> None:
    signed = encode_message(Message.request(Method.ALLOCATE, TID), key=KEY, sha1=False, sha256=True)
    body = signed[20:] + tlv(0x0008, bytes(20)) + tlv(0x8022, b"late")
    msg = decode_message(header(0x0003, len(body)) + body)
    assert [type(a) for a in msg.attributes] == [MessageIntegritySha256]
    assert msg.integrity_offset is None
    assert verify_integrity_sha256(msg, KEY)


def test_decode_second_integrity_is_ignored() -> None:
    signed = encode_message(Message.request(Method.BINDING, TID), key=KEY)
    body = signed[20:] + tlv(0x0008, bytes(20))
    msg = decode_message(header(0x0001, len(body)) + body)
    assert msg.get_all(MessageIntegrity) == [MessageIntegrity(signed[-20:])]
    assert verify_integrity(msg, KEY)


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = encode_message(Message.request(Method.BINDING, TID, Software("x")))
    assert decode_message(bytearray(data)) == decode_message(data)  # type: ignore[arg-type]
    assert decode_message(memoryview(data)).raw == data  # type: ignore[arg-type]


# --- decode: bad input -----------------------------------------------------------------------


def test_decode_truncated_header_is_rejected() -> None:
    with pytest.raises(StunDecodeError, match=r"^truncated header: 12 bytes$"):
        decode_message(header(0x0001, 0)[:12])
    with pytest.raises(StunDecodeError, match=r"^truncated header: 0 bytes$"):
        decode_message(b"")


def test_decode_length_not_multiple_of_4_is_rejected() -> None:
    data = header(0x0001, 21) + bytes(21)
    with pytest.raises(StunDecodeError, match=r"^length 21 not a multiple of 4$"):
        decode_message(data)


def test_decode_length_mismatch_is_rejected() -> None:
    with pytest.raises(StunDecodeError, match=r"^length 8 does not match 4 bytes"):
        decode_message(header(0x0001, 8) + bytes(4))
    with pytest.raises(StunDecodeError, match=r"^length 0 does not match 4 bytes"):
        decode_message(header(0x0001, 0) + bytes(4))


def test_decode_attribute_running_past_the_end_is_rejected() -> None:
    data = packet(0x0001, b"\x00\x20\x00\x09" + bytes(8))
    with pytest.raises(StunDecodeError, match=r"^attribute 0x0020 runs past the end$"):
        decode_message(data)


def test_decode_wrong_magic_cookie_is_rejected() -> None:
    data = header(0x0001, 0, cookie=0x2112A443)
    with pytest.raises(StunDecodeError, match=r"^bad magic cookie 0x2112a443$"):
        decode_message(data)


def test_decode_top_bits_set_is_rejected() -> None:
    with pytest.raises(StunDecodeError, match=r"^top bits of message type 0x8001 not zero$"):
        decode_message(header(0x8001, 0))
    with pytest.raises(StunDecodeError, match="top bits"):
        decode_message(header(0x4001, 0))


def test_decode_bad_fingerprint_is_rejected() -> None:
    data = bytearray(encode_message(Message.request(Method.BINDING, TID), fingerprint=True))
    data[-1] ^= 1
    with pytest.raises(StunDecodeError, match=r"^FINGERPRINT mismatch$"):
        decode_message(bytes(data))


def test_decode_fingerprint_over_modified_body_is_rejected() -> None:
    data = bytearray(
        encode_message(Message.request(Method.BINDING, TID, Software("abcd")), fingerprint=True)
    )
    data[25] ^= 0x20
    with pytest.raises(StunDecodeError, match="FINGERPRINT mismatch"):
        decode_message(bytes(data))


def test_decode_fingerprint_not_last_is_rejected() -> None:
    signed = encode_message(Message.request(Method.BINDING, TID), fingerprint=True)
    body = signed[20:] + tlv(0x8022, b"x")
    with pytest.raises(StunDecodeError, match=r"^FINGERPRINT is not the last attribute$"):
        decode_message(header(0x0001, len(body)) + body)


def test_decode_bad_address_family_is_rejected() -> None:
    data = packet(0x0001, tlv(0x0020, b"\x00\x03\x00\x01" + bytes(4)))
    with pytest.raises(StunDecodeError, match=r"^XOR-MAPPED-ADDRESS: bad address family 0x03$"):
        decode_message(data)


def test_decode_address_with_wrong_length_for_family_is_rejected() -> None:
    data = packet(0x0001, tlv(0x0012, b"\x00\x02\x00\x01" + bytes(4)))
    with pytest.raises(StunDecodeError, match=r"^XOR-PEER-ADDRESS: value length 8, expected 20"):
        decode_message(data)


def test_decode_oversize_username_is_rejected() -> None:
    data = packet(0x0001, tlv(0x0006, b"u" * 514))
    with pytest.raises(StunDecodeError, match=r"^USERNAME: 514 bytes, at most 513 allowed$"):
        decode_message(data)
    assert decode_message(packet(0x0001, tlv(0x0006, b"u" * 513))).get(Username) is not None


def test_decode_bad_utf8_is_rejected() -> None:
    with pytest.raises(StunDecodeError, match=r"^REALM: invalid UTF-8 at byte 1$"):
        decode_message(packet(0x0001, tlv(0x0014, b"a\xff")))


def test_decode_65kb_input_is_rejected() -> None:
    data = header(0x0001, 0xFFFC) + bytes(65 * 1024)
    with pytest.raises(StunDecodeError, match="does not match"):
        decode_message(data)


def test_decode_max_length_message_is_accepted() -> None:
    body = tlv(0x8050, bytes(0xFFFC - 4))
    msg = decode_message(header(0x0001, len(body)) + body)
    assert msg.attributes == (RawAttribute(0x8050, bytes(0xFFF8)),)


def test_decode_bad_integrity_length_is_rejected() -> None:
    with pytest.raises(StunDecodeError, match=r"^MESSAGE-INTEGRITY: value length 19, expected 20$"):
        decode_message(packet(0x0001, tlv(0x0008, bytes(19))))


# --- is_stun ---------------------------------------------------------------------------------


def test_is_stun_accepts_stun_and_rejects_others() -> None:
    good = encode_message(Message.request(Method.BINDING, TID))
    assert is_stun(good)
    assert not is_stun(good[:19])
    assert not is_stun(b"\x40" + good[1:])
    assert not is_stun(good[:4] + b"\x00\x00\x00\x00" + good[8:])
    assert not is_stun(b"")


# --- misc ------------------------------------------------------------------------------------


def test_message_xor_peer_address_roundtrip_ipv6() -> None:
    peer = XorPeerAddress(ipaddress.ip_address("2001:db8::1"), 4000)
    msg = Message.indication(Method.SEND, TID, peer)
    assert decode_message(encode_message(msg)) == msg


def test_stun_package_imports_no_io_modules() -> None:
    # DESIGN.md "Style": relay/stun is sans-IO.
    forbidden = {"asyncio", "socket", "time"}
    root = pathlib.Path(relay.stun.__file__).parent
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"


@pytest.mark.parametrize("bogus", [10**9, "text", None, 3.5])
def test_decode_non_bytes_input_raises_stun_error(bogus: object) -> None:
    with pytest.raises(StunDecodeError, match=r"^malformed message"):
        decode_message(bogus)  # type: ignore[arg-type]


# --- encode_body, encode_tlv, encode_address_value (pre-encoded attributes) -------------------


@pytest.mark.parametrize(
    ("key", "sha1", "sha256", "fingerprint"),
    [(None, True, False, False), (None, True, False, True), (KEY, True, False, True),
     (KEY, False, True, True), (KEY, True, True, False)],
)  # fmt: skip
def test_encode_body_equals_encode_message(
    key: bytes | None, sha1: bool, sha256: bool, fingerprint: bool
) -> None:
    attrs = (Username("alice"), Software("abcde"), Lifetime(600), RawAttribute(0x8050, b"xy"))
    msg = Message(Method.ALLOCATE, MessageClass.ERROR, TID, attrs)
    body = b"".join(relay.stun.encode_attribute(a, TID) for a in attrs)
    flags = {"key": key, "sha1": sha1, "sha256": sha256, "fingerprint": fingerprint}
    assert relay.stun.encode_body(
        Method.ALLOCATE, MessageClass.ERROR, TID, body, **flags
    ) == encode_message(msg, **flags)  # type: ignore[arg-type]


def test_encode_body_refuses_what_encode_message_refuses() -> None:
    with pytest.raises(StunEncodeError, match="transaction id"):
        relay.stun.encode_body(Method.BINDING, MessageClass.REQUEST, b"short", b"")
    with pytest.raises(StunEncodeError, match="12 bits"):
        relay.stun.encode_body(0x1000, MessageClass.REQUEST, TID, b"")
    with pytest.raises(StunEncodeError, match="too long"):
        relay.stun.encode_body(Method.BINDING, MessageClass.REQUEST, TID, bytes(0x10000))


@pytest.mark.parametrize("value", [b"", b"a", b"ab", b"abc", b"abcd", b"abcde"])
def test_encode_tlv_pads_like_encode_attribute(value: bytes) -> None:
    assert relay.stun.encode_tlv(0x8050, value) == relay.stun.encode_attribute(
        RawAttribute(0x8050, value), TID
    )


def test_encode_tlv_refuses_oversize_value() -> None:
    with pytest.raises(StunEncodeError, match="value of 65536 bytes"):
        relay.stun.encode_tlv(0x8050, bytes(65536))


@pytest.mark.parametrize("host", ["198.18.1.10", "0.0.0.0", "2001:db8::7", "::ffff:10.0.0.1"])
@pytest.mark.parametrize("cls", [relay.stun.XorMappedAddress, relay.stun.MappedAddress])
def test_encode_address_value_equals_attribute_encoding(
    host: str, cls: type[relay.stun.MappedAddress]
) -> None:
    ip = ipaddress.ip_address(host)
    xored = cls is relay.stun.XorMappedAddress
    value = relay.stun.encode_address_value(ip.packed, 40000, TID if xored else None)
    assert value == cls(ip, 40000).encode_value(TID)
    assert cls.decode_value(value, TID) == cls(ip, 40000)


def test_encode_address_value_refuses_bad_input() -> None:
    with pytest.raises(StunEncodeError, match="packed IP"):
        relay.stun.encode_address_value(b"\x01\x02\x03", 1, None)
    with pytest.raises(StunEncodeError, match="port"):
        relay.stun.encode_address_value(bytes(4), 65536, None)
    with pytest.raises(StunEncodeError, match="transaction id"):
        relay.stun.encode_address_value(bytes(16), 1, b"short")


# --- decoded messages: every field set, lookup keeps isinstance semantics ---------------------


def test_decode_sets_every_field_as_the_constructor_does() -> None:
    data = encode_message(
        Message.request(Method.ALLOCATE, TID, Username("u"), Lifetime(5)),
        key=KEY,
        fingerprint=True,
    )
    decoded = decode_message(data)
    rebuilt = Message(
        decoded.method,
        decoded.msg_class,
        decoded.transaction_id,
        decoded.attributes,
        decoded.raw,
        decoded.integrity_offset,
        decoded.integrity_sha256_offset,
    )
    assert decoded == rebuilt
    fields = {f.name for f in dataclasses.fields(Message)}
    assert fields <= set(vars(decoded))
    assert repr(decoded) == repr(rebuilt)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.method = 1  # type: ignore[misc]


def test_decode_get_finds_base_classes_and_absent_ones() -> None:
    data = packet(0x0001, tlv(0x8022, b"soft"), tlv(0x0006, b"user"), tlv(0x7F01, b"??"))
    msg = decode_message(data)
    text_base = type(Username("x")).__mro__[1]  # _TextAttribute
    assert msg.get(text_base) == Software("soft")  # the first text attribute, as isinstance
    assert msg.get(relay.stun.Attribute) == Software("soft")
    assert msg.get(Username) == Username("user")
    assert msg.get(Realm) is None
    assert msg.get(RawAttribute) == RawAttribute(0x7F01, b"??")
    assert msg.unknown_comprehension_required() == (0x7F01,)


def test_message_get_on_a_built_message_sees_subclasses_first() -> None:
    class Nickname(Username):
        pass

    msg = Message.request(Method.BINDING, TID, Nickname("nick"), Username("user"))
    assert msg.get(Username) == Nickname("nick")  # isinstance: the subclass counts
    assert msg.get(Nickname) == Nickname("nick")
    assert Message.request(Method.BINDING, TID, Username("user")).get(Nickname) is None
    assert msg.unknown_comprehension_required() == ()


def test_message_with_attributes_sees_the_new_attributes() -> None:
    msg = decode_message(packet(0x0001, tlv(0x8022, b"soft")))
    assert msg.get(Realm) is None
    grown = msg.with_attributes(Realm("r"))
    assert grown.get(Realm) == Realm("r")
    assert grown.get(Software) == Software("soft")
