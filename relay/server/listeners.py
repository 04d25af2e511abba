"""Client-facing listeners: UDP sockets, and TCP/TLS connections framed by ``StreamFramer``.

Streams are bounded: a frame may not exceed the framer's buffer, a connection that sends no
complete frame for ``idle_timeout`` seconds is closed (unless it holds an allocation, whose
lifetime then governs), and a client that stops reading loses relayed data rather than making
the server buffer without limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, cast

from relay.stun.channeldata import StreamFramer
from relay.stun.errors import StunDecodeError
from relay.turn.addresses import Address, FiveTuple, Transport, canonical_host

if TYPE_CHECKING:
    from relay.server.app import RelayServer

log = logging.getLogger("relay.listeners")

MAX_STREAM_FRAME = 65535 + 20  # largest STUN message or ChannelData frame (RFC 8656 §12.5)
MAX_WRITE_BUFFER = 1 << 20  # bytes queued to a client before relayed data is dropped


def _address(sockname: tuple[Any, ...]) -> Address:
    return (canonical_host(sockname[0]), sockname[1])


class UdpListener(asyncio.DatagramProtocol):
    """One UDP listening address: every datagram goes to the core with its 5-tuple."""

    def __init__(self, server: RelayServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self.local: Address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # typed loosely: CPython's selector datagram transport is no DatagramTransport subclass
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.local = _address(transport.get_extra_info("sockname"))

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        five_tuple = FiveTuple((canonical_host(addr[0]), addr[1]), self.local, Transport.UDP)
        self.server.client_data(five_tuple, data)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp listener %s: %s", self.local, exc)

    def send(self, data: bytes, client: Address) -> None:
        if self.transport is not None:
            self.transport.sendto(data, client)


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS client connection: a 5-tuple of its own (RFC 8656 §3.1)."""

    def __init__(self, server: RelayServer, transport_kind: Transport) -> None:
        self.server = server
        self.kind = transport_kind
        self.framer = StreamFramer(max_buffer=MAX_STREAM_FRAME, channel_max=server.channel_max)
        self.transport: asyncio.Transport | None = None
        self.five_tuple: FiveTuple | None = None
        self.last_frame = time.monotonic()
        self.partial_since: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.five_tuple = FiveTuple((canonical_host(peer[0]), peer[1]), _address(local), self.kind)
        if not self.server.stream_opened(self):
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        assert self.five_tuple is not None and self.transport is not None
        try:
            frames = self.framer.feed(data)
        except StunDecodeError as err:
            # garbage or an oversized frame on a stream: nothing after it can be trusted
            self.server.count("stream_garbage_closed")
            log.info("closing %s %s:%d: %s", self.kind.value, *self.five_tuple.client, err)
            self.transport.abort()
            return
        now = time.monotonic()
        if frames:
            self.last_frame = now
        self.partial_since = (self.partial_since or now) if self.framer.buffered else None
        for frame in frames:
            self.server.client_data(self.five_tuple, frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.stream_closed(self)

    def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self.server.count("client_send_dropped")
            return
        transport.write(data)

    def idle(
        self, now: float, idle_timeout: float, stall_timeout: float, has_allocation: bool
    ) -> bool:
        """True when the connection should be closed: stalled mid-frame, or silent and unused."""
        if self.partial_since is not None and now - self.partial_since > stall_timeout:
            return True
        return not has_allocation and now - self.last_frame > idle_timeout

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()
