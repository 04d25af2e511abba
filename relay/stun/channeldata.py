"""TURN ChannelData messages (RFC 8656 §12.4) and stream framing over TCP/TLS (§12.5)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .constants import (
    CHANNEL_HEADER_LENGTH,
    CHANNEL_MAX,
    CHANNEL_MAX_RFC5766,
    CHANNEL_MIN,
    HEADER_LENGTH,
    MAGIC_COOKIE,
)
from .errors import StunDecodeError, StunEncodeError

_MAX_DATA = 0xFFFF


def _check_channel_max(channel_max: int) -> int:
    # RFC 8656 §12 allows 0x4000-0x4FFF; RFC 5766 §11 allowed up to 0x7FFF (coturn still does).
    # Anything above 0x7FFF would not start with the 01 bits that tell ChannelData from STUN.
    if not CHANNEL_MAX <= channel_max <= CHANNEL_MAX_RFC5766:
        raise ValueError(f"channel_max 0x{channel_max:04x} outside 0x4FFF..0x7FFF")
    return channel_max


@dataclass(frozen=True)
class ChannelData:
    """Channel number (0x4000-0x4FFF, or up to 0x7FFF for RFC 5766 peers) and data."""

    channel: int
    data: bytes

    def encode(self, pad: bool = False) -> bytes:
        """RFC 8656 §12.4; pad=True adds zeros to a multiple of 4, required over TCP/TLS (§12.5).

        Channels up to 0x7FFF (RFC 5766) are encoded: which range is bound is TURN's decision.
        """
        if not CHANNEL_MIN <= self.channel <= CHANNEL_MAX_RFC5766:
            raise StunEncodeError(f"channel number 0x{self.channel:04x} out of range")
        if len(self.data) > _MAX_DATA:
            raise StunEncodeError(f"ChannelData of {len(self.data)} bytes is too long")
        padding = bytes(-len(self.data) % 4) if pad else b""
        return struct.pack("!HH", self.channel, len(self.data)) + bytes(self.data) + padding


def is_channel_data(data: bytes, *, channel_max: int = CHANNEL_MAX) -> bool:
    """RFC 7983 demux: first byte 0x40..0x4F (0x40..0x7F with channel_max=0x7FFF)."""
    return len(data) > 0 and 0x40 <= data[0] <= channel_max >> 8


def decode_channel_data(data: bytes, *, channel_max: int = CHANNEL_MAX) -> ChannelData:
    """Parse a ChannelData datagram; bytes after the frame (padding) are ignored.

    channel_max=CHANNEL_MAX_RFC5766 (0x7FFF) also accepts RFC 5766 channel numbers.
    """
    if len(data) < CHANNEL_HEADER_LENGTH:
        raise StunDecodeError(f"truncated ChannelData header: {len(data)} bytes")
    channel = int.from_bytes(data[0:2], "big")
    length = int.from_bytes(data[2:4], "big")
    if not CHANNEL_MIN <= channel <= channel_max:
        raise StunDecodeError(f"channel number 0x{channel:04x} out of range")
    if length > len(data) - CHANNEL_HEADER_LENGTH:
        raise StunDecodeError(
            f"ChannelData length {length} exceeds {len(data) - CHANNEL_HEADER_LENGTH} bytes"
        )
    return ChannelData(channel, bytes(data[CHANNEL_HEADER_LENGTH : CHANNEL_HEADER_LENGTH + length]))


class StreamFramer:
    """Split a TCP/TLS byte stream into STUN messages and ChannelData frames (RFC 8656 §12.5).

    feed() returns whole frames: STUN messages (20 + length bytes) and ChannelData frames without
    their trailing padding (4 + length bytes). Padding that has not arrived yet is skipped when
    it does. Garbage or a frame bigger than max_buffer raises StunDecodeError; the stream is then
    unusable and the connection should be closed.
    """

    def __init__(self, max_buffer: int = 65536 + 8, *, channel_max: int = CHANNEL_MAX) -> None:
        self._channel_first_max = _check_channel_max(channel_max) >> 8
        self._buffer = bytearray()
        self._skip = 0  # ChannelData padding still to discard
        self._max_buffer = max_buffer
        self._error: StunDecodeError | None = None  # sticky: a broken stream stays broken

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        if self._error is not None:
            raise self._error
        try:
            return self._feed(data)
        except StunDecodeError as exc:
            self._error = exc
            raise

    def _feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        buf = self._buffer
        buf += data
        pos = 0
        while True:
            if self._skip:
                step = min(self._skip, len(buf) - pos)
                pos += step
                self._skip -= step
                if self._skip:
                    break
            size = self._frame_size(buf, pos)
            if size is None or len(buf) - pos < size:
                break
            frames.append(bytes(buf[pos : pos + size]))
            pos += size
            if buf[pos - size] & 0xC0 == 0x40:
                self._skip = -(size - CHANNEL_HEADER_LENGTH) % 4
        del buf[:pos]
        if len(buf) > self._max_buffer:
            raise StunDecodeError(f"stream buffer over {self._max_buffer} bytes")
        return frames

    def _frame_size(self, buf: bytearray, pos: int) -> int | None:
        """Total size of the frame at pos, None if more bytes are needed to tell."""
        available = len(buf) - pos
        if available == 0:
            return None
        first = buf[pos]
        if first & 0xC0 == 0x00:  # STUN (RFC 8489 §5)
            if available < 4:
                return None
            length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            if length % 4:
                raise StunDecodeError(f"stream: STUN length {length} not a multiple of 4")
            if available >= 8:
                cookie = int.from_bytes(buf[pos + 4 : pos + 8], "big")
                if cookie != MAGIC_COOKIE:
                    raise StunDecodeError(f"stream: bad magic cookie 0x{cookie:08x}")
            size = HEADER_LENGTH + length
        elif 0x40 <= first <= self._channel_first_max:  # ChannelData (RFC 8656 §12.4)
            if available < CHANNEL_HEADER_LENGTH:
                return None
            size = CHANNEL_HEADER_LENGTH + int.from_bytes(buf[pos + 2 : pos + 4], "big")
        else:
            raise StunDecodeError(f"stream: byte 0x{first:02x} starts neither STUN nor ChannelData")
        if size > self._max_buffer:
            raise StunDecodeError(f"stream: frame of {size} bytes exceeds {self._max_buffer}")
        return size
