"""ChannelData (RFC 8656 §12.4) and TCP/TLS stream framing (§12.5)."""

from __future__ import annotations

import pytest

from relay.stun import (
    CHANNEL_MAX_RFC5766,
    ChannelData,
    Message,
    Method,
    Software,
    StreamFramer,
    StunDecodeError,
    StunEncodeError,
    decode_channel_data,
    decode_message,
    encode_message,
    is_channel_data,
    is_stun,
)

TID = bytes(range(12))
STUN = encode_message(Message.request(Method.REFRESH, TID, Software("abc")))
CD = ChannelData(0x4001, b"hello")


# --- ChannelData -----------------------------------------------------------------------------


def test_channeldata_encode_golden() -> None:
    assert CD.encode() == bytes.fromhex("40010005") + b"hello"
    assert CD.encode(pad=True) == bytes.fromhex("40010005") + b"hello\x00\x00\x00"
    assert ChannelData(0x4FFF, b"").encode(pad=True) == bytes.fromhex("4fff0000")
    assert ChannelData(0x4000, b"abcd").encode(pad=True) == bytes.fromhex("40000004") + b"abcd"


def test_channeldata_decode_roundtrip_with_and_without_padding() -> None:
    assert decode_channel_data(CD.encode()) == CD
    assert decode_channel_data(CD.encode(pad=True)) == CD


def test_channeldata_decode_truncated_header_is_rejected() -> None:
    with pytest.raises(StunDecodeError, match=r"^truncated ChannelData header: 3 bytes$"):
        decode_channel_data(b"\x40\x01\x00")


def test_channeldata_decode_length_past_end_is_rejected() -> None:
    with pytest.raises(StunDecodeError, match=r"^ChannelData length 5 exceeds 4 bytes$"):
        decode_channel_data(CD.encode()[:-1])


@pytest.mark.parametrize("channel", [0x3FFF, 0x5000, 0x0001, 0xFFFF])
def test_channeldata_decode_channel_out_of_range_is_rejected(channel: int) -> None:
    data = channel.to_bytes(2, "big") + b"\x00\x00"
    with pytest.raises(StunDecodeError, match=rf"^channel number 0x{channel:04x} out of range$"):
        decode_channel_data(data)


@pytest.mark.parametrize("channel", [0x3FFF, 0x8000])
def test_channeldata_encode_channel_out_of_range_is_refused(channel: int) -> None:
    with pytest.raises(StunEncodeError):
        ChannelData(channel, b"").encode()


def test_channeldata_encode_oversize_is_refused() -> None:
    with pytest.raises(StunEncodeError):
        ChannelData(0x4000, bytes(65536)).encode()


def test_channeldata_demux_first_byte() -> None:
    assert is_channel_data(CD.encode())
    assert is_channel_data(b"\x4f\xff\x00\x00")
    assert not is_channel_data(b"\x50\x00\x00\x00")
    assert not is_channel_data(b"\x3f\xff\x00\x00")
    assert not is_channel_data(STUN)
    assert not is_channel_data(b"")
    assert not is_stun(CD.encode())


# --- StreamFramer ----------------------------------------------------------------------------


def test_framer_byte_by_byte_feeding() -> None:
    stream = STUN + CD.encode(pad=True) + STUN
    framer = StreamFramer()
    frames: list[bytes] = []
    for i in range(len(stream)):
        frames += framer.feed(stream[i : i + 1])
    assert frames == [STUN, CD.encode(), STUN]
    assert framer.buffered == 0


def test_framer_several_frames_in_one_chunk() -> None:
    cd2 = ChannelData(0x4FFF, b"")
    stream = CD.encode(pad=True) + STUN + cd2.encode(pad=True) + STUN[:10]
    framer = StreamFramer()
    assert framer.feed(stream) == [CD.encode(), STUN, cd2.encode()]
    assert framer.buffered == 10
    assert framer.feed(STUN[10:]) == [STUN]
    assert framer.buffered == 0


def test_framer_padding_arriving_later_is_skipped() -> None:
    framer = StreamFramer()
    assert framer.feed(CD.encode()) == [CD.encode()]
    assert framer.feed(b"\x00") == []
    assert framer.feed(b"\x00\x00" + STUN) == [STUN]


def test_framer_frames_decode() -> None:
    framer = StreamFramer()
    stun, cd = framer.feed(STUN + CD.encode(pad=True))
    assert decode_message(stun).get(Software) == Software("abc")
    assert decode_channel_data(cd) == CD


def test_framer_aligned_channeldata_has_no_padding() -> None:
    cd = ChannelData(0x4000, b"abcd")
    assert StreamFramer().feed(cd.encode(pad=True) + STUN) == [cd.encode(), STUN]


@pytest.mark.parametrize(
    "garbage", [b"\x80", b"\xff\x00", b"\x50\x00\x00\x00", b"POST / HTTP/1.1\r\n"]
)
def test_framer_garbage_raises(garbage: bytes) -> None:
    with pytest.raises(StunDecodeError, match="starts neither STUN nor ChannelData"):
        StreamFramer().feed(garbage)


def test_framer_garbage_after_frame_raises() -> None:
    framer = StreamFramer()
    assert framer.feed(STUN) == [STUN]
    with pytest.raises(StunDecodeError):
        framer.feed(b"\xc0\x00\x00\x00")
    with pytest.raises(StunDecodeError, match="starts neither"):
        framer.feed(STUN)  # the stream stays broken


def test_framer_bad_magic_cookie_raises() -> None:
    with pytest.raises(StunDecodeError, match=r"^stream: bad magic cookie 0x00000000$"):
        StreamFramer().feed(STUN[:4] + bytes(4))


def test_framer_bad_stun_length_raises() -> None:
    with pytest.raises(StunDecodeError, match=r"^stream: STUN length 3 not a multiple of 4$"):
        StreamFramer().feed(b"\x00\x01\x00\x03")


def test_framer_frame_larger_than_buffer_raises() -> None:
    framer = StreamFramer(max_buffer=64)
    with pytest.raises(StunDecodeError, match=r"^stream: frame of 104 bytes exceeds 64$"):
        framer.feed(ChannelData(0x4000, bytes(100)).encode()[:4])


def test_framer_overflow_raises() -> None:
    # A partial frame is held only if the whole frame will fit in max_buffer.
    framer = StreamFramer(max_buffer=100)
    big = ChannelData(0x4000, bytes(92)).encode()
    assert framer.feed(big[:50]) == []
    assert framer.buffered == 50
    assert framer.feed(big[50:]) == [big]
    header = b"\x00\x01\x00\xc8\x21\x12\xa4\x42"  # STUN claiming 200 attribute bytes
    with pytest.raises(StunDecodeError, match=r"^stream: frame of 220 bytes exceeds 100$"):
        framer.feed(header)


def test_framer_default_limit_refuses_65kb_stun() -> None:
    header = b"\x00\x01\xff\xfc\x21\x12\xa4\x42"
    with pytest.raises(StunDecodeError, match="exceeds"):
        StreamFramer().feed(header)


def test_framer_default_limit_accepts_largest_channeldata() -> None:
    cd = ChannelData(0x4000, bytes(65535))
    framer = StreamFramer()
    assert framer.feed(cd.encode(pad=True)) == [cd.encode()]
    assert framer.buffered == 0


def test_framer_many_frames_in_one_chunk_beyond_limit_are_all_returned() -> None:
    # The limit bounds what is held between reads, not the size of one read.
    framer = StreamFramer(max_buffer=64)
    frames = framer.feed(STUN * 20)
    assert frames == [STUN] * 20


# --- RFC 5766 channel range (0x4000-0x7FFF), opt-in -------------------------------------------


def test_channeldata_rfc5766_channel_encodes() -> None:
    assert ChannelData(0x7FFF, b"x").encode() == bytes.fromhex("7fff0001") + b"x"


def test_channeldata_rfc5766_range_is_opt_in() -> None:
    data = ChannelData(0x6001, b"x").encode()
    assert not is_channel_data(data)
    assert is_channel_data(data, channel_max=CHANNEL_MAX_RFC5766)
    with pytest.raises(StunDecodeError, match="out of range"):
        decode_channel_data(data)
    assert decode_channel_data(data, channel_max=CHANNEL_MAX_RFC5766) == ChannelData(0x6001, b"x")


def test_framer_rfc5766_range_is_opt_in() -> None:
    data = ChannelData(0x7000, b"xy").encode(pad=True)
    with pytest.raises(StunDecodeError, match="starts neither"):
        StreamFramer().feed(data)
    framer = StreamFramer(channel_max=CHANNEL_MAX_RFC5766)
    assert framer.feed(data + STUN) == [data[:6], STUN]
    with pytest.raises(StunDecodeError, match="starts neither"):
        framer.feed(b"\x80\x00\x00\x00")


def test_framer_bad_channel_max_is_refused() -> None:
    with pytest.raises(ValueError, match="channel_max"):
        StreamFramer(channel_max=0xFFFF)
