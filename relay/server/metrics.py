"""Prometheus metrics (coturn's ``prometheus`` / ``prometheus-port``), served from the event loop.

A custom collector reads the core's and the shell's counters at scrape time, so the packet
path only bumps plain ints. Label sets are bounded: auth failure reasons and error codes are
fixed vocabularies; there is no per-user or per-address label.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Sized
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.turn.core import TurnCore


class MetricsSource(Protocol):
    """What the collector reads from the server (``relay.server.app.MetricsSource``)."""

    @property
    def counters(self) -> Counter[str]: ...

    @property
    def core(self) -> TurnCore | None: ...

    @property
    def streams(self) -> Sized: ...


log = logging.getLogger("relay.metrics")

# counter key -> (metric name, help, labels) for counters without a label
PLAIN_COUNTERS = {
    "allocations_total": ("turn_allocations_created", "Allocations created"),
    "allocations_deleted": ("turn_allocations_deleted", "Allocations deleted or expired"),
    "permissions_created": ("turn_permissions_created", "Permissions installed or refreshed"),
    "channels_bound": ("turn_channels_bound", "Channel bindings created"),
    "binding_requests": ("stun_binding_requests", "STUN Binding requests answered"),
    "peer_refused": ("turn_peer_refused", "403 answers: peer refused by the peer policy"),
    "send_refused_dropped": ("turn_send_refused", "Send indications to refused peers dropped"),
    "malformed_dropped": ("stun_malformed_dropped", "Undecodable packets dropped"),
    "oversize_dropped": ("stun_oversize_dropped", "Oversized packets dropped"),
    "channel_unbound_dropped": ("turn_channel_unbound_dropped", "ChannelData on unbound channels"),
    "auth_challenges": ("turn_auth_challenges", "401 challenges to requests without credentials"),
    "stream_garbage_closed": ("turn_stream_garbage_closed", "Streams closed for garbage"),
    "connections_idle_closed": ("turn_connections_idle_closed", "Idle or stalled streams closed"),
    "connections_refused": ("turn_connections_refused", "Streams refused at the limit"),
}
DIRECTIONS = {"to_peer": "relayed_to_peer", "to_client": "relayed_to_client"}


class RelayCollector(Collector):
    def __init__(self, server: MetricsSource) -> None:
        self.server = server

    def collect(self) -> Iterable[Metric]:
        counters = self.server.counters
        for key, (name, text) in PLAIN_COUNTERS.items():
            yield CounterMetricFamily(name, text, value=counters.get(key, 0))
        packets = CounterMetricFamily(
            "turn_relayed_packets", "Packets relayed", labels=["direction"]
        )
        octets = CounterMetricFamily(
            "turn_relayed_bytes", "Payload bytes relayed", labels=["direction"]
        )
        for label, prefix in DIRECTIONS.items():
            packets.add_metric([label], counters.get(f"{prefix}_packets", 0))
            octets.add_metric([label], counters.get(f"{prefix}_bytes", 0))
        yield packets
        yield octets
        failures = CounterMetricFamily(
            "turn_auth_failures", "Authentication failures by reason", labels=["reason"]
        )
        errors = CounterMetricFamily(
            "turn_error_responses", "Error responses by code", labels=["code"]
        )
        for key, value in counters.items():
            if key.startswith("auth_failed:"):
                failures.add_metric([key.split(":", 1)[1]], value)
            elif key.startswith("error_"):
                errors.add_metric([key[len("error_") :]], value)
        yield failures
        yield errors
        core = self.server.core
        allocations = core.allocations.by_five_tuple.values() if core is not None else ()
        yield GaugeMetricFamily("turn_allocations", "Current allocations", value=len(allocations))
        yield GaugeMetricFamily(
            "turn_permissions",
            "Current permissions",
            value=sum(len(a.permissions) for a in allocations),
        )
        yield GaugeMetricFamily(
            "turn_channels",
            "Current channel bindings",
            value=sum(len(a.channels) for a in allocations),
        )
        yield GaugeMetricFamily(
            "turn_streams", "Open TCP/TLS connections", value=len(self.server.streams)
        )


class MetricsEndpoint:
    """A minimal HTTP/1.0 responder for GET /metrics on the relay's own event loop."""

    MAX_REQUEST = 8192

    def __init__(self, server: MetricsSource) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(RelayCollector(server))
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._handle, host, port)
        name = self._server.sockets[0].getsockname()
        log.info("metrics on http://%s:%d/metrics", name[0], name[1])
        return (name[0], name[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5.0)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        parts = head.split(b" ", 2)
        if (
            len(parts) < 2
            or parts[0] != b"GET"
            or parts[1].split(b"?")[0] not in (b"/metrics", b"/")
        ):
            writer.write(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        else:
            body = generate_latest(self.registry)
            writer.write(
                b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
        try:
            await writer.drain()
        finally:
            writer.close()
