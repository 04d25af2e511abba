"""The asyncio shell: listeners, relay sockets and timers around the sans-IO ``TurnCore``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import ssl
import time
from collections import Counter
from collections.abc import Callable

from relay.server import datapath as datapaths
from relay.server import tls
from relay.server.datapath import Datapath, address_key, xor_peer_value
from relay.server.listeners import StreamConnection, UdpListener
from relay.server.metrics import MetricsEndpoint
from relay.server.options import ServerOptions
from relay.server.relay_sockets import SocketRelayPorts
from relay.turn.addresses import Address, FiveTuple, Transport
from relay.turn.core import Fallback, TurnCore
from relay.turn.effects import Effect, PeerHop, SendToClient, SendToPeer
from relay.turn.ports import ReservationBook
from relay.turn.quota import QuotaLedger

log = logging.getLogger("relay")

SEND_INDICATION_TYPE = b"\x00\x16"  # RFC 8656 §11.2: Send method, indication class
TICK_INTERVAL = 1.0  # seconds between expiry sweeps
MAX_DATAGRAM = 65535 + 4  # largest ChannelData frame (RFC 8656 §12.4) a client can send
STALL_TIMEOUT = 10.0  # seconds a stream may sit on half a frame
TLS_HANDSHAKE_TIMEOUT = 10.0


class RelayServer:
    def __init__(
        self, options: ServerOptions, *, reuse_port: bool = False, nonce_secret: bytes | None = None
    ) -> None:
        self.nonce_secret = nonce_secret
        self.options = options
        self.core: TurnCore | None = None
        self.ports: SocketRelayPorts | None = None
        self.udp: dict[Address, UdpListener] = {}
        self.stream_servers: list[asyncio.Server] = []
        self.streams: dict[FiveTuple, StreamConnection] = {}
        self.tls_context: ssl.SSLContext | None = None
        self.listening: list[tuple[str, Address]] = []  # (transport, address), for logs and tests
        self._tick_task: asyncio.Task[None] | None = None
        self._own_counters: Counter[str] = Counter()
        self.metrics: MetricsEndpoint | None = None
        self.reuse_port = reuse_port
        # worker mode: a quota ledger and a reservation book shared across processes
        self.quota: QuotaLedger | None = None
        self.reservations: ReservationBook | None = None
        self._channel_first_byte_max = 0x7F
        self.metrics_address: Address | None = None
        self.datapath: Datapath | None = None  # the C packet loop (relay.server.datapath)

    # ------------------------------------------------------------------ state

    @property
    def counters(self) -> Counter[str]:
        """The core's counters plus the shell's own (drops before the core saw a packet)."""
        merged: Counter[str] = Counter(self._own_counters)
        if self.core is not None:
            merged.update(self.core.counters)
        if self.ports is not None:
            merged.update(self.ports.counters)
        if self.datapath is not None:
            merged.update(self.datapath.counters())
        return merged

    @property
    def channel_max(self) -> int:
        assert self.core is not None
        return self.core.config.channel_max

    def count(self, name: str, n: int = 1) -> None:
        self._own_counters[name] += n

    @property
    def bound_addresses(self) -> list[Address]:
        """UDP listening addresses with their actual ports."""
        return list(self.udp)

    def addresses(self, transport: str) -> list[Address]:
        return [a for t, a in self.listening if t == transport]

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        opts = self.options
        _raise_fd_limit()
        config = opts.turn_config(nonce_secret=self.nonce_secret)
        if datapaths.resolve(opts.datapath) == "c":
            self.datapath = Datapath(config.max_payload, config.channel_max)
        self.ports = SocketRelayPorts(
            loop,
            opts.relay_hosts,
            opts.min_port,
            opts.max_port,
            self.peer_data,
            hold_reserved=self.reservations is None,
            datapath=self.datapath,
        )
        self.core = TurnCore(config, self.ports, self.quota, self.reservations)
        self._channel_first_byte_max = self.core.config.channel_max >> 8
        if not opts.no_tls:
            self.tls_context = tls.server_context(opts) if opts.cert else None
            if self.tls_context is None:
                log.warning("no cert/pkey: TLS listener disabled")
        try:
            for ip in opts.listening_ips:
                for port in () if opts.no_udp else opts.udp_ports:
                    await self._listen_udp(ip, port)
                for port in () if opts.no_tcp else opts.tcp_ports:
                    await self._listen_stream(ip, port, Transport.TCP)
                if self.tls_context is not None:
                    for port in opts.tls_ports:
                        await self._listen_stream(ip, port, Transport.TLS)
        except OSError:
            await self.close()
            raise
        if opts.prometheus:
            self.metrics = MetricsEndpoint(self)
            self.metrics_address = await self.metrics.start(
                opts.prometheus_ip, opts.prometheus_port
            )
        self._tick_task = loop.create_task(self._ticker())

    async def _listen_udp(self, ip: str, port: int) -> None:
        listener = UdpListener.bind(self, ip, port, reuse_port=self.reuse_port)
        listener.start(asyncio.get_running_loop(), self.datapath)
        self.udp[listener.local] = listener
        self.listening.append(("udp", listener.local))
        log.info("listening udp %s:%d", *listener.local)

    async def _listen_stream(self, ip: str, port: int, kind: Transport) -> None:
        loop = asyncio.get_running_loop()
        factory: Callable[[], StreamConnection] = lambda: StreamConnection(self, kind)  # noqa: E731
        server = await loop.create_server(
            factory,
            ip,
            port,
            ssl=self.tls_context if kind is Transport.TLS else None,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if kind is Transport.TLS else None,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
            backlog=1024,
        )
        self.stream_servers.append(server)
        for sock in server.sockets:
            name = sock.getsockname()
            self.listening.append((kind.value, (name[0], name[1])))
            log.info("listening %s %s:%d", kind.value, name[0], name[1])

    def reload_tls(self) -> None:
        """SIGUSR2: re-read cert and key; allocations and open connections stay."""
        if self.tls_context is not None:
            tls.reload(self.tls_context, self.options)
            log.info("TLS certificate reloaded from %s", self.options.cert)

    async def close(self) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
            self._tick_task = None
        if self.metrics is not None:
            await self.metrics.close()
            self.metrics = None
        for server in self.stream_servers:
            server.close()
        for conn in list(self.streams.values()):
            conn.close()
        for server in self.stream_servers:
            await server.wait_closed()
        self.stream_servers.clear()
        loop = asyncio.get_running_loop()
        for listener in self.udp.values():
            listener.close(loop)
        self.udp.clear()
        if self.ports is not None:
            self.ports.close_all()

    # ------------------------------------------------------------------ data paths

    def client_datagram(self, listener: UdpListener, five_tuple: FiveTuple, data: bytes) -> None:
        """The UDP packet path: ChannelData goes straight through the core's fast path."""
        core = self.core
        assert core is not None
        if data and 0x40 <= data[0] <= self._channel_first_byte_max:
            hop = core.relay_channel_data(time.time(), five_tuple, data)
            if hop is not None:
                assert self.ports is not None
                self.ports.send(hop.relay, hop.peer, hop.payload)
                if self.datapath is not None:
                    key = address_key(*five_tuple.client) + data[:2]
                    self._learn_to_peer(listener.channel_routes, key, hop)
            return
        if data[:2] == SEND_INDICATION_TYPE:
            sent = core.relay_send_indication(time.time(), five_tuple, data)
            if sent is not Fallback.FULL_DECODE:
                if sent is not None:
                    assert self.ports is not None
                    self.ports.send(sent.relay, sent.peer, sent.payload)
                    if self.datapath is not None and ":" not in sent.peer[0]:
                        key = address_key(*five_tuple.client) + xor_peer_value(sent.peer)
                        self._learn_to_peer(listener.send_routes, key, sent)
                return
        self.client_data(five_tuple, data)

    def _learn_to_peer(
        self, table: dict[bytes, tuple[int, bytes, float]], key: bytes, hop: PeerHop
    ) -> None:
        """Let the C loop replay what the core just allowed, until the hop's deadline."""
        assert self.ports is not None and self.datapath is not None
        fd = self.ports.fd_of(hop.relay)
        if fd is not None and hop.deadline > 0:
            self.datapath.learn_to_peer(table, key, hop.relay, fd, hop.peer, hop.deadline)

    def client_data(self, five_tuple: FiveTuple, data: bytes) -> None:
        assert self.core is not None
        if len(data) > MAX_DATAGRAM:
            self._own_counters["oversize_dropped"] += 1
            return
        self._run(self.core.handle_client(time.time(), five_tuple, data))

    def peer_data(self, relay: Address, peer: Address, data: bytes) -> None:
        core = self.core
        assert core is not None
        hop = core.relay_to_client(time.time(), relay, peer, data)
        if hop is None:
            return
        five_tuple, frame, deadline = hop
        if five_tuple.transport is Transport.UDP:
            listener = self.udp.get(five_tuple.server)
            if listener is not None:
                listener.send(frame, five_tuple.client)
                if self.datapath is not None and deadline > 0:  # ChannelData on a channel
                    number = frame[0] << 8 | frame[1]
                    self.datapath.learn_to_client(
                        relay, peer, listener.fd, five_tuple.client, number, deadline
                    )
                return
            self._own_counters["client_send_dropped"] += 1
            return
        self._send_to_client(SendToClient(five_tuple, frame))

    def _run(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, SendToPeer):
                assert self.ports is not None
                self.ports.send(effect.relay, effect.peer, effect.data)
            elif isinstance(effect, SendToClient):
                self._send_to_client(effect)

    def _send_to_client(self, effect: SendToClient) -> None:
        five_tuple = effect.five_tuple
        if five_tuple.transport is Transport.UDP:
            listener = self.udp.get(five_tuple.server)
            if listener is None:
                self._own_counters["client_send_dropped"] += 1
                return
            listener.send(effect.data, five_tuple.client)
            return
        conn = self.streams.get(five_tuple)
        if conn is None:
            self._own_counters["client_send_dropped"] += 1
            return
        conn.send(effect.data)

    # ------------------------------------------------------------------ streams

    def stream_opened(self, conn: StreamConnection) -> bool:
        assert conn.five_tuple is not None
        if len(self.streams) >= self.options.max_connections:
            self._own_counters["connections_refused"] += 1
            return False
        self.streams[conn.five_tuple] = conn
        self._own_counters[f"connections_{conn.kind.value}"] += 1
        return True

    def stream_closed(self, conn: StreamConnection) -> None:
        if conn.five_tuple is None or self.streams.get(conn.five_tuple) is not conn:
            return
        del self.streams[conn.five_tuple]
        if self.core is not None:
            # RFC 8656 §3.1: over TCP/TLS the allocation dies with its connection
            self.core.close_connection(conn.five_tuple)

    def _sweep_streams(self) -> None:
        if not self.streams or self.core is None:
            return
        now = time.monotonic()
        allocations = self.core.allocations.by_five_tuple
        for five_tuple, conn in list(self.streams.items()):
            if conn.idle(now, self.options.idle_timeout, STALL_TIMEOUT, five_tuple in allocations):
                self._own_counters["connections_idle_closed"] += 1
                conn.close()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL)
            assert self.core is not None
            self._run(self.core.tick(time.time()))
            self._sweep_streams()


def _raise_fd_limit() -> None:
    """Every allocation and stream costs a descriptor: use the hard limit, as coturn does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
