"""Client-facing listeners: UDP sockets, and TCP/TLS connections framed by ``StreamFramer``.

Streams are bounded: a frame may not exceed the framer's buffer, a connection that sends no
complete frame for ``idle_timeout`` seconds is closed (unless it holds an allocation, whose
lifetime then governs), and a client that stops reading loses relayed data rather than making
the server buffer without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from relay.server.datapath import READS_PER_WAKEUP, Datapath, ToPeerTable
from relay.stun.channeldata import StreamFramer
from relay.stun.errors import StunDecodeError
from relay.turn.addresses import Address, FiveTuple, Transport, canonical_host


class PacketSink(Protocol):
    """What a listener hands its traffic to (``relay.server.app.PacketSink``): listeners
    know this much of the server and nothing else, so the import runs one way."""

    @property
    def channel_max(self) -> int: ...

    def client_datagram(self, listener: UdpListener, five_tuple: FiveTuple, data: bytes) -> None:
        """A datagram from a UDP client."""

    def client_data(self, five_tuple: FiveTuple, data: bytes) -> None:
        """One framed STUN message or ChannelData from a TCP/TLS client."""

    def stream_opened(self, conn: StreamConnection) -> bool:
        """A TCP/TLS connection arrived; False closes it (connection limit)."""

    def stream_closed(self, conn: StreamConnection) -> None: ...

    def count(self, name: str, n: int = 1) -> None: ...


log = logging.getLogger("relay.listeners")

MAX_STREAM_FRAME = 65535 + 20  # largest STUN message or ChannelData frame (RFC 8656 §12.5)
MAX_WRITE_BUFFER = 1 << 20  # bytes queued to a client before relayed data is dropped
RECV_SIZE = 65536
# A listener takes every client's packets: a deeper queue rides out the moments the loop is
# busy (an Allocate, a sweep) without loss. SO_RCVBUFFORCE passes net.core.rmem_max when the
# relay may (CAP_NET_ADMIN); otherwise SO_RCVBUF gets what the host allows.
LISTENER_RCVBUF = 4 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def _address(sockname: tuple[Any, ...]) -> Address:
    return (canonical_host(sockname[0]), sockname[1])


class UdpListener:
    """One UDP listening socket, read with ``loop.add_reader``: a burst of datagrams is handled
    in one wakeup, without asyncio's per-datagram transport machinery (the packet path)."""

    def __init__(self, server: PacketSink, sock: socket.socket, reuse_port: bool = False) -> None:
        self.server = server
        self.sock = sock
        self.local: Address = _address(sock.getsockname())
        self.fd = sock.fileno()
        self._v6 = sock.family == socket.AF_INET6
        # routes the C loop replays for this listener's clients (relay.server.datapath)
        self.channel_routes: ToPeerTable = {}
        self.send_routes: ToPeerTable = {}

    @classmethod
    def bind(cls, server: PacketSink, ip: str, port: int, reuse_port: bool = False) -> UdpListener:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if reuse_port:  # worker processes share the port; the kernel hashes 4-tuples
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            _deepen_receive_queue(sock)
            sock.bind((ip, port))
        except OSError:
            sock.close()
            raise
        return cls(server, sock)

    def start(self, loop: asyncio.AbstractEventLoop, datapath: Datapath | None = None) -> None:
        if datapath is None:
            loop.add_reader(self.fd, self._readable)
        else:
            loop.add_reader(self.fd, self._readable_c, datapath.forwarder.from_clients)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def _readable(self) -> None:
        recv = self.sock.recvfrom
        handle = self.server.client_datagram
        local = self.local
        for _ in range(READS_PER_WAKEUP):
            try:
                data, addr = recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # ICMP errors surface here on Linux; not fatal
                log.debug("udp listener %s: %s", local, err)
                continue
            host = canonical_host(addr[0]) if self._v6 else addr[0]
            handle(self, FiveTuple((host, addr[1]), local, Transport.UDP), data)

    def _readable_c(self, from_clients: Callable[..., list[tuple[bytes, tuple[str, int]]]]) -> None:
        """The C loop forwards what matches a learned route; the rest takes the path above."""
        rest = from_clients(self.fd, self.channel_routes, self.send_routes, READS_PER_WAKEUP)
        if rest:
            handle = self.server.client_datagram
            local = self.local
            for data, addr in rest:
                host = canonical_host(addr[0]) if self._v6 else addr[0]
                handle(self, FiveTuple((host, addr[1]), local, Transport.UDP), data)

    def send(self, data: bytes, client: Address) -> None:
        try:
            self.sock.sendto(data, client)
        except (BlockingIOError, InterruptedError):
            self.server.count("client_send_dropped")  # UDP: a full buffer is loss
        except OSError as err:
            self.server.count("client_send_dropped")
            log.debug("udp send to %s failed: %s", client, err)


def _deepen_receive_queue(sock: socket.socket) -> None:
    for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, LISTENER_RCVBUF)
            return
        except OSError:  # EPERM without CAP_NET_ADMIN: try the capped option
            continue


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS client connection: a 5-tuple of its own (RFC 8656 §3.1)."""

    def __init__(self, server: PacketSink, transport_kind: Transport) -> None:
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
