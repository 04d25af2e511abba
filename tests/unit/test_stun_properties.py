"""Property tests: encode/decode round trips and "any bytes decode or raise StunDecodeError"."""

from __future__ import annotations

import contextlib
import ipaddress
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.stun import (
    ATTRIBUTES,
    AdditionalAddressFamily,
    AddressErrorCode,
    AlternateDomain,
    AlternateServer,
    ChangeRequest,
    ChannelData,
    ChannelNumber,
    Data,
    DontFragment,
    ErrorCodeAttr,
    EvenPort,
    Fingerprint,
    Icmp,
    Lifetime,
    MappedAddress,
    Message,
    MessageClass,
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
    StreamFramer,
    StunDecodeError,
    UnknownAttributes,
    Userhash,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
    decode_channel_data,
    decode_message,
    encode_message,
    verify_integrity,
    verify_integrity_sha256,
)
from relay.stun.attributes import Attribute

SETTINGS = settings(max_examples=300, deadline=None)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
tids = st.binary(min_size=12, max_size=12)
ips: st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address] = st.one_of(
    st.ip_addresses(v=4), st.ip_addresses(v=6)
)
texts = st.text(max_size=40)
address_classes = st.sampled_from(
    [
        MappedAddress,
        XorMappedAddress,
        XorPeerAddress,
        XorRelayedAddress,
        AlternateServer,
        ResponseOrigin,
        OtherAddress,
    ]
)
text_classes = st.sampled_from([Username, Realm, Nonce, Software, AlternateDomain])
codes = st.integers(300, 699)
unknown_types = u16.filter(lambda t: t not in ATTRIBUTES)

# Every attribute an application puts in a message (the computed ones are tested separately).
plain_attributes: st.SearchStrategy[Attribute] = st.one_of(
    st.builds(lambda cls, ip, port: cls(ip, port), address_classes, ips, u16),
    st.builds(lambda cls, text: cls(text), text_classes, texts),
    st.builds(Userhash, st.binary(min_size=32, max_size=32)),
    st.builds(ErrorCodeAttr, codes, texts),
    st.builds(UnknownAttributes, st.lists(u16, max_size=6).map(tuple)),
    st.builds(
        PasswordAlgorithms,
        st.lists(st.tuples(u16, st.binary(max_size=9)), max_size=4).map(tuple),
    ),
    st.builds(PasswordAlgorithmAttr, u16, st.binary(max_size=9)),
    st.builds(ChannelNumber, u16),
    st.builds(Lifetime, u32),
    st.builds(Data, st.binary(max_size=64)),
    st.builds(RequestedAddressFamily, u8),
    st.builds(AdditionalAddressFamily, u8),
    st.builds(EvenPort, st.booleans()),
    st.builds(RequestedTransport, u8),
    st.just(DontFragment()),
    st.builds(ReservationToken, st.binary(min_size=8, max_size=8)),
    st.builds(AddressErrorCode, u8, codes, texts),
    st.builds(Icmp, u8, u8, u32),
    st.builds(ChangeRequest, st.booleans(), st.booleans()),
    st.builds(ResponsePort, u16),
    st.builds(Padding, st.binary(max_size=16)),
    st.builds(RawAttribute, unknown_types, st.binary(max_size=16)),
)
computed_attributes: st.SearchStrategy[Attribute] = st.one_of(
    st.builds(MessageIntegrity, st.binary(min_size=20, max_size=20)),
    st.builds(
        MessageIntegritySha256,
        st.integers(4, 8).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
    ),
    st.builds(Fingerprint, u32),
)

messages = st.builds(
    Message,
    method=st.integers(0, 0xFFF),
    msg_class=st.sampled_from(list(MessageClass)),
    transaction_id=tids,
    attributes=st.lists(plain_attributes, max_size=8).map(tuple),
)


@SETTINGS
@given(attr=st.one_of(plain_attributes, computed_attributes), tid=tids)
def test_property_attribute_value_round_trip(attr: Attribute, tid: bytes) -> None:
    value = attr.encode_value(tid)
    if isinstance(attr, RawAttribute):
        assert value == attr.value
    else:
        assert type(attr).decode_value(value, tid) == attr


@SETTINGS
@given(msg=messages)
def test_property_message_round_trip(msg: Message) -> None:
    data = encode_message(msg)
    decoded = decode_message(data)
    assert decoded == msg
    assert decoded.raw == data
    assert encode_message(decoded) == data


@SETTINGS
@given(
    msg=messages,
    key=st.binary(min_size=1, max_size=32),
    sha1=st.booleans(),
    sha256=st.booleans(),
    fingerprint=st.booleans(),
)
def test_property_message_round_trip_with_integrity(
    msg: Message, key: bytes, sha1: bool, sha256: bool, fingerprint: bool
) -> None:
    data = encode_message(msg, key=key, sha1=sha1, sha256=sha256, fingerprint=fingerprint)
    decoded = decode_message(data)
    assert decoded.attributes[: len(msg.attributes)] == msg.attributes
    assert verify_integrity(decoded, key) == sha1
    assert verify_integrity_sha256(decoded, key) == sha256
    assert (decoded.get(Fingerprint) is not None) == fingerprint


@SETTINGS
@given(data=st.binary(max_size=300))
def test_property_decode_arbitrary_bytes_returns_or_raises_stun_error(data: bytes) -> None:
    with contextlib.suppress(StunDecodeError):
        decode_message(data)


@SETTINGS
@given(
    header=st.sampled_from([b"\x00\x01", b"\x01\x11", b"\x00\x17"]),
    tid=tids,
    body=st.lists(
        st.tuples(st.sampled_from(sorted(ATTRIBUTES)) | u16, st.binary(max_size=40)), max_size=6
    ),
)
def test_property_decode_valid_framing_random_values(
    header: bytes, tid: bytes, body: list[tuple[int, bytes]]
) -> None:
    # Well-framed TLVs with arbitrary values reach every attribute decoder.
    attrs = b"".join(
        t.to_bytes(2, "big") + len(v).to_bytes(2, "big") + v + bytes(-len(v) % 4) for t, v in body
    )
    data = header + len(attrs).to_bytes(2, "big") + b"\x21\x12\xa4\x42" + tid + attrs
    with contextlib.suppress(StunDecodeError):
        decode_message(data)


@SETTINGS
@given(
    msg=messages,
    flips=st.lists(st.tuples(st.integers(0, 10_000), u8), min_size=1, max_size=4),
    cut=st.integers(0, 10_000),
    fingerprint=st.booleans(),
)
def test_property_decode_mutated_message_returns_or_raises_stun_error(
    msg: Message, flips: list[tuple[int, int]], cut: int, fingerprint: bool
) -> None:
    data = bytearray(encode_message(msg, key=b"k", sha256=True, fingerprint=fingerprint))
    for index, value in flips:
        data[index % len(data)] = value
    for candidate in (bytes(data), bytes(data[: cut % (len(data) + 1)])):
        with contextlib.suppress(StunDecodeError):
            decode_message(candidate)


@SETTINGS
@given(attr_type=st.sampled_from(sorted(ATTRIBUTES)), value=st.binary(max_size=64), tid=tids)
def test_property_attribute_decoders_raise_only_stun_error(
    attr_type: int, value: bytes, tid: bytes
) -> None:
    with contextlib.suppress(StunDecodeError):
        ATTRIBUTES[attr_type].decode_value(value, tid)


@SETTINGS
@given(data=st.binary(max_size=100), channel_max=st.sampled_from([0x4FFF, 0x7FFF]))
def test_property_channeldata_decode_returns_or_raises_stun_error(
    data: bytes, channel_max: int
) -> None:
    try:
        cd = decode_channel_data(data, channel_max=channel_max)
    except StunDecodeError:
        return
    assert cd.encode() == data[: 4 + len(cd.data)]


@SETTINGS
@given(
    frames=st.lists(
        st.one_of(
            messages.map(encode_message),
            st.builds(ChannelData, st.integers(0x4000, 0x4FFF), st.binary(max_size=40)),
        ),
        max_size=6,
    ),
    cuts=st.lists(st.integers(0, 2000), max_size=8),
)
def test_property_framer_any_chunking_gives_same_frames(
    frames: list[bytes | ChannelData], cuts: list[int]
) -> None:
    stream = b"".join(f.encode(pad=True) if isinstance(f, ChannelData) else f for f in frames)
    expected = [f.encode() if isinstance(f, ChannelData) else f for f in frames]
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    framer = StreamFramer()
    got: list[bytes] = []
    for start, end in itertools.pairwise(points):
        got += framer.feed(stream[start:end])
    assert got == expected
    assert framer.buffered == 0


@SETTINGS
@given(chunks=st.lists(st.binary(max_size=80), max_size=6))
def test_property_framer_arbitrary_bytes_returns_or_raises_stun_error(
    chunks: list[bytes],
) -> None:
    framer = StreamFramer(max_buffer=512)
    with contextlib.suppress(StunDecodeError):
        for chunk in chunks:
            framer.feed(chunk)
            assert framer.buffered <= 512
