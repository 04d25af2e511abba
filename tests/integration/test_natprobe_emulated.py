"""natprobe end to end against a fake RFC 5780 server that answers as if a NAT were in between.

No root and no real NAT: the fake server (4 UDP sockets, 127.0.0.1/127.0.0.2 x P/P+1) reports
the mapped address a NAT with the given mapping behaviour would have given, and drops the
answers a NAT with the given filtering behaviour would have dropped. This checks the probe's
whole decision path (order of the tests, source checks, classification) for all nine
mapping x filtering combinations; the real NATs are lab/nat's, run in namespaces elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from typing import Any

import pytest

from lab.agents.natclass import (
    ADDRESS_AND_PORT_DEPENDENT,
    ADDRESS_DEPENDENT,
    BEHAVIOURS,
    ENDPOINT_INDEPENDENT,
    FILTERING_II,
    MAPPING_II,
    MAPPING_III,
    TEST_I,
    Addr,
    ProbeResult,
)
from lab.agents.natprobe import probe
from relay.stun import (
    ChangeRequest,
    Message,
    MessageClass,
    OtherAddress,
    ResponseOrigin,
    XorMappedAddress,
    decode_message,
    encode_message,
)
from relay.stun.attributes import Attribute

IPS = ("127.0.0.1", "127.0.0.2")
PUBLIC_IP = "198.51.100.1"  # the emulated NAT's external address (never sent to)
FAST = {"rto": 0.05, "tries": 2}  # an unanswered test costs 0.15 s


class FakeNatServer:
    """RFC 5780 server whose answers show what a client behind (mapping, filtering) would see."""

    def __init__(
        self,
        mapping: str,
        filtering: str,
        *,
        honour_change: bool = True,
        conntrack_pitfall: bool = False,
    ) -> None:
        self.mapping = mapping
        # a dropped inbound packet blocks its (source, external port) pair, as the conntrack
        # entry a Linux router creates for it does (DESIGN.md "NAT model" pitfall)
        self.conntrack_pitfall = conntrack_pitfall
        self.blocked: set[Addr] = set()
        self.filtering = filtering
        self.honour_change = honour_change
        self.ports: tuple[int, int] = (0, 0)
        self.transports: dict[Addr, asyncio.DatagramTransport] = {}
        self.public_ports: dict[Any, int] = {}  # mapping key -> external port
        self.contacted: dict[Addr, set[Addr]] = {}  # external address -> destinations it sent to
        self.dropped = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        rng = random.Random()
        for _ in range(30):
            base = rng.randrange(32000, 44000)
            try:
                for ip in IPS:
                    for port in (base, base + 1):
                        transport, _ = await loop.create_datagram_endpoint(
                            lambda a=(ip, port): _Socket(self, a),  # type: ignore[misc]
                            local_addr=(ip, port),
                        )
                        self.transports[(ip, port)] = transport
            except OSError:
                self.close()
                continue
            self.ports = (base, base + 1)
            return
        raise RuntimeError("no free port pair for the fake server")

    def close(self) -> None:
        for transport in self.transports.values():
            transport.close()
        self.transports.clear()

    @property
    def primary(self) -> Addr:
        return (IPS[0], self.ports[0])

    def _other(self, addr: Addr, *, change_ip: bool, change_port: bool) -> Addr:
        ip, port = addr
        if change_ip:
            ip = IPS[1] if ip == IPS[0] else IPS[0]
        if change_port:
            port = self.ports[1] if port == self.ports[0] else self.ports[0]
        return (ip, port)

    def external(self, destination: Addr) -> Addr:
        """The NAT's mapping for a packet from our (single) client to destination."""
        key: Any = {
            ENDPOINT_INDEPENDENT: (),
            ADDRESS_DEPENDENT: destination[0],
            ADDRESS_AND_PORT_DEPENDENT: destination,
        }[self.mapping]
        if destination in self.blocked:
            key = ("blocked", destination)
        port = self.public_ports.setdefault(key, 40000 + len(self.public_ports))
        return (PUBLIC_IP, port)

    def inbound_allowed(self, external: Addr, source: Addr) -> bool:
        sent_to = self.contacted.get(external, set())
        if self.filtering == ENDPOINT_INDEPENDENT:
            return True
        if self.filtering == ADDRESS_DEPENDENT:
            return any(d[0] == source[0] for d in sent_to)
        return source in sent_to

    def received(self, local: Addr, data: bytes, client: Addr) -> None:
        msg = decode_message(data)
        if msg.msg_class is not MessageClass.REQUEST:
            return
        external = self.external(local)
        self.contacted.setdefault(external, set()).add(local)  # the outbound packet opened this
        change = msg.get(ChangeRequest)
        source = local
        if change is not None and self.honour_change:
            source = self._other(local, change_ip=change.change_ip, change_port=change.change_port)
        if not self.inbound_allowed(external, source):
            self.dropped += 1
            if self.conntrack_pitfall:
                self.blocked.add(source)
            return
        other = self._other(local, change_ip=True, change_port=True)
        attrs: tuple[Attribute, ...] = (
            XorMappedAddress(_ip(external[0]), external[1]),
            ResponseOrigin(_ip(source[0]), source[1]),
            OtherAddress(_ip(other[0]), other[1]),
        )
        reply = Message(msg.method, MessageClass.SUCCESS, msg.transaction_id, attrs)
        self.transports[source].sendto(encode_message(reply), client)


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, server: FakeNatServer, local: Addr) -> None:
        self.server = server
        self.local = local

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        with contextlib.suppress(Exception):
            self.server.received(self.local, data, (addr[0], addr[1]))


def _ip(text: str) -> Any:
    import ipaddress

    return ipaddress.ip_address(text)


async def run_probe(server: FakeNatServer) -> ProbeResult:
    await server.start()
    try:
        return await probe(server.primary, local=(IPS[0], 0), **FAST)  # type: ignore[arg-type]
    finally:
        server.close()


@pytest.mark.parametrize("filtering", BEHAVIOURS)
@pytest.mark.parametrize("mapping", BEHAVIOURS)
def test_classifies_emulated_nat(mapping: str, filtering: str) -> None:
    server = FakeNatServer(mapping, filtering)
    result = asyncio.run(run_probe(server))
    assert result.status == "ok", result.errors
    assert result.nat_present is True
    assert result.port_preserved is False
    assert (result.mapping, result.filtering) == (mapping, filtering)
    assert result.mapped[TEST_I] == (PUBLIC_IP, 40000)
    # mapping-III runs even when mapping-II already decided EIM: extra evidence (anomalies)
    assert result.mapped[MAPPING_II] is not None and result.mapped[MAPPING_III] is not None
    assert result.errors == () and result.anomalies == () and result.consistent
    dropped = {ENDPOINT_INDEPENDENT: 0, ADDRESS_DEPENDENT: 1, ADDRESS_AND_PORT_DEPENDENT: 2}
    assert server.dropped == dropped[filtering] * FAST["tries"]


def test_server_ignoring_change_request_is_not_trusted() -> None:
    """A server that answers CHANGE-REQUEST from its primary address must not look like EIF."""
    server = FakeNatServer(ENDPOINT_INDEPENDENT, ENDPOINT_INDEPENDENT, honour_change=False)
    result = asyncio.run(run_probe(server))
    assert result.status == "error"
    assert result.exit_code == 1
    assert result.filtering is None
    assert result.mapping == ENDPOINT_INDEPENDENT
    step = result.step(FILTERING_II)
    assert step is not None and step.answered and step.source == server.primary
    assert any("ignored CHANGE-REQUEST" in e for e in result.errors)


def test_filtering_runs_before_mapping_tests_open_the_filter() -> None:
    """APDF behind EIM: if mapping-III (to OTHER-ADDRESS) ran first, change IP+port would pass."""
    server = FakeNatServer(ENDPOINT_INDEPENDENT, ADDRESS_AND_PORT_DEPENDENT)
    result = asyncio.run(run_probe(server))
    names = [s.name for s in result.steps]
    assert names.index(FILTERING_II) < names.index(MAPPING_II)
    assert result.filtering == ADDRESS_AND_PORT_DEPENDENT
    assert server.dropped == 2 * FAST["tries"]  # filtering II and III, every send


def test_wildcard_local_is_resolved() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((IPS[0], 9))
        assert s.getsockname()[0] == IPS[0]


def test_conntrack_pitfall_shows_as_anomaly() -> None:
    """Mapping-III gets another port than I and II: EIM by the RFC tree, but flagged."""
    server = FakeNatServer(ENDPOINT_INDEPENDENT, ADDRESS_AND_PORT_DEPENDENT, conntrack_pitfall=True)
    result = asyncio.run(run_probe(server))
    assert result.status == "ok" and result.exit_code == 0
    assert result.mapping == ENDPOINT_INDEPENDENT
    assert result.filtering == ADDRESS_AND_PORT_DEPENDENT
    assert result.mapped[MAPPING_III] != result.mapped[TEST_I]
    assert not result.consistent
    assert len(result.anomalies) == 1 and "inconsistent mapping" in result.anomalies[0]
    assert "1 anomalies" in result.summary()
