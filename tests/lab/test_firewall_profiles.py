"""Seed 000 firewall profiles, applied on a forwarding node, probed row by row.

client (10.1.0.2) -- fw (10.1.0.1 | 198.18.1.1) -- inet: web 198.18.0.20,
signaling 198.18.0.30, turn 198.18.0.2, peer 198.18.5.5.  No NAT, so E rows are testable.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from udp_helper import Agent

from lab.nat.firewall import (
    FIREWALL_ROWS,
    FirewallHosts,
    FirewallRow,
    Proto,
    Role,
    policy,
    render_firewall,
)
from lab.nat.firewall import Direction as D
from lab.nat.netns import (
    add_veth,
    apply_sysctls,
    check_ruleset,
    flush_conntrack,
    load_ruleset,
    namespaces,
    ns_run,
)

pytestmark = pytest.mark.lab

CLIENT = "10.1.0.2"
WEB, SIGNALING, TURN, PEER = "198.18.0.20", "198.18.0.30", "198.18.0.2", "198.18.5.5"
HOSTS = FirewallHosts(web=WEB, signaling=SIGNALING, turn=(TURN,))
QUIET_S = 0.2
CLOSED_UDP_PORT = 40999  # nothing listens: the host answers ICMP port-unreachable
_ports = itertools.count(50000)


@dataclass
class FwTopo:
    ns: dict[str, str]
    client: Agent
    inet: Agent
    loaded: str | None = None
    udp_socks: dict[tuple[str, int], str] = field(default_factory=dict)
    tcp_listening: set[tuple[str, int]] = field(default_factory=set)

    def use(self, profile: str) -> None:
        if profile != self.loaded:
            load_ruleset(
                self.ns["fw"],
                render_firewall(policy(profile), hosts=HOSTS, client_if="lan0", outside_if="wan0"),
            )
            self.loaded = profile
        flush_conntrack(self.ns["fw"])  # no flow admitted by an earlier test survives

    def server_udp(self, ip: str, port: int) -> str:
        if (ip, port) not in self.udp_socks:
            self.udp_socks[(ip, port)] = self.inet.udp(ip, port, echo=True)
        return self.udp_socks[(ip, port)]

    # --- probes: True = the packet got through ---
    def tcp_out(self, ip: str, port: int) -> bool:
        if (ip, port) not in self.tcp_listening:
            self.inet.call(op="tcp_listen", addr=[ip, port])
            self.tcp_listening.add((ip, port))
        r = self.client.call(op="tcp_connect", to=[ip, port], timeout=QUIET_S)["result"]
        return bool(r == "connected")

    def udp_out(self, ip: str, port: int) -> bool:
        self.server_udp(ip, port)
        sid = self.client.udp(CLIENT, next(_ports))
        try:
            return self.client.observed(sid, (ip, port), wait=QUIET_S) is not None
        finally:
            self.client.call(op="close", id=sid)

    def udp_in(self, ip: str, port: int) -> bool:
        """An unsolicited datagram from ip:port to the client."""
        src = self.server_udp(ip, port)
        cport = next(_ports)
        sid = self.client.udp(CLIENT, cport)
        try:
            self.inet.send(src, (CLIENT, cport), "unsolicited")
            return bool(self.client.recv(sid, wait=QUIET_S))
        finally:
            self.client.call(op="close", id=sid)

    def icmp_out(self, ip: str) -> bool:
        r = ns_run(self.ns["client"], ["ping", "-n", "-c1", "-W", str(QUIET_S), ip], check=False)
        return r.returncode == 0

    def icmp_error_in(self, ip: str) -> bool:
        """An ICMP port-unreachable from ip, related to a UDP flow the client started."""
        r = self.client.call(op="udp_error", to=[ip, CLOSED_UDP_PORT], wait=QUIET_S)["result"]
        return bool(r == "refused")

    @contextlib.contextmanager
    def diagnostics(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            for argv in (["nft", "list", "ruleset"], ["conntrack", "-L"]):
                out = ns_run(self.ns["fw"], argv, check=False)
                print(f"--- [fw] {' '.join(argv)}\n{out.stdout}{out.stderr}")
            raise


@pytest.fixture(scope="module")
def fw() -> Iterator[FwTopo]:
    with namespaces("client", "fw", "inet") as ns:
        agents: list[Agent] = []
        try:
            add_veth(ns["client"], "eth0", ns["fw"], "lan0")
            add_veth(ns["fw"], "wan0", ns["inet"], "eth0")
            for node, cmds in {
                "client": [f"addr add {CLIENT}/24 dev eth0", "route add default via 10.1.0.1"],
                "fw": [
                    "addr add 10.1.0.1/24 dev lan0",
                    "addr add 198.18.1.1/24 dev wan0",
                    "route add default via 198.18.1.2",  # stays inside the lab
                ],
                "inet": [
                    "addr add 198.18.1.2/24 dev eth0",
                    *(f"addr add {a}/32 dev eth0" for a in (WEB, SIGNALING, TURN, PEER)),
                    "route add 10.1.0.0/24 via 198.18.1.1",
                ],
            }.items():
                for c in cmds:
                    ns_run(ns[node], ["ip", *c.split()])
            apply_sysctls(ns["fw"], {"net.ipv4.ip_forward": "1"})
            inet = Agent(ns["inet"])
            agents.append(inet)
            client = Agent(ns["client"])
            agents.append(client)
            yield FwTopo(ns, client, inet)
        finally:
            for a in agents:
                a.close()


def _ip(row: FirewallRow) -> str:
    addrs = HOSTS.addresses(row.role)
    return addrs[0] if addrs else PEER


def _observe(fw: FwTopo, d: D, proto: Proto, ip: str, port: int | None) -> bool:
    if proto is Proto.TCP:
        assert d is D.OUT and port is not None
        return fw.tcp_out(ip, port)
    if proto is Proto.UDP:
        assert port is not None
        return fw.udp_out(ip, port) if d is D.OUT else fw.udp_in(ip, port)
    return fw.icmp_out(ip) if d is D.OUT else fw.icmp_error_in(ip)


@pytest.mark.parametrize("row", FIREWALL_ROWS, ids=[r.id for r in FIREWALL_ROWS])
def test_firewall_row_passes_and_neighbours_follow_policy(fw: FwTopo, row: FirewallRow) -> None:
    fw.use(row.profile)
    pol = policy(row.profile)
    ip = _ip(row)
    lo, hi = row.ports or (None, None)
    dirs = [d for d in (D.OUT, D.IN) if row.direction in (d, D.BOTH)]
    with fw.diagnostics():
        # what the row allows
        for d, proto in itertools.product(dirs, row.protocols):
            if proto is Proto.TCP and d is D.IN:
                continue
            for port in dict.fromkeys((lo, hi)):
                if d is D.IN and row.dynamic:
                    # hole punching: inbound only as the reply to an outbound packet
                    assert fw.udp_out(ip, port), f"reply from {ip}:{port} blocked"
                    assert not fw.udp_in(ip, port), f"unsolicited {ip}:{port} admitted"
                    continue
                assert _observe(fw, d, proto, ip, port), f"{d.name} {proto.name} {ip}:{port}"
        # a sample of neighbours: whatever the whole policy says (other rows may allow them)
        samples: list[tuple[D, Proto, str, int | None]] = [(D.OUT, Proto.UDP, ip, 53)]
        if lo is not None and hi is not None:
            samples += [(D.OUT, Proto.TCP, ip, lo - 1)]
            if hi < 65535:
                samples.append((D.OUT, Proto.TCP, ip, hi + 1))
            for proto in (Proto.TCP, Proto.UDP):
                if proto not in row.protocols:
                    samples.append((D.OUT, proto, ip, lo))
            if D.IN not in dirs:
                samples.append((D.IN, Proto.UDP, ip, lo))
            if row.role not in (Role.PEER, Role.ANY):
                samples.append((D.OUT, row.protocols[0], PEER, lo))
        else:
            samples.append((D.OUT, Proto.TCP, ip, 22))
        for d, proto, sip, port in samples:
            want = pol.allows(HOSTS, d, proto, sip, port)
            got = _observe(fw, d, proto, sip, port)
            assert got == want, f"{d.name} {proto.name} {sip}:{port}: passed={got}, policy={want}"


# Written by hand from the seed and DESIGN.md, independent of FirewallPolicy.allows.
LADDER = {
    # probe: (open, recommended, minimal, udp-blocked)
    ("out", "udp", TURN, 3478): (True, True, False, False),  # STUN port: only via PEER row
    ("out", "udp", TURN, 443): (True, True, True, False),
    ("out", "tcp", TURN, 443): (True, True, True, True),
    ("out", "udp", TURN, 40000): (True, True, False, False),  # relay ports
    ("out", "udp", PEER, 5000): (True, True, False, False),  # direct P2P
    ("in", "udp", PEER, 5000): (True, False, False, False),  # unsolicited peer
    ("in", "udp", TURN, 40000): (True, True, False, False),  # turn E row
    ("in", "udp", TURN, 443): (True, False, False, False),
    ("out", "udp", WEB, 53): (True, False, False, False),  # DNS is never allowed
    ("out", "tcp", WEB, 22): (True, False, False, False),
    ("out", "tcp", PEER, 443): (True, False, False, True),
    ("out", "tcp", SIGNALING, 80): (True, False, False, True),
    ("out", "icmp", PEER, None): (True, True, False, False),
}


@pytest.mark.parametrize("profile", ["open", "recommended", "minimal", "udp-blocked"])
def test_firewall_ladder_by_hand(fw: FwTopo, profile: str) -> None:
    fw.use(profile)
    col = ["open", "recommended", "minimal", "udp-blocked"].index(profile)
    with fw.diagnostics():
        got = {}
        for d, proto, ip, port in LADDER:
            got[(d, proto, ip, port)] = _observe(
                fw, D.OUT if d == "out" else D.IN, Proto(proto), ip, port
            )
        wrong = {k: v for k, v in got.items() if v != LADDER[k][col]}
        assert not wrong, f"{profile}: passed= differs from the seed for {wrong}"


def test_firewall_every_profile_passes_nft_check(fw: FwTopo) -> None:
    for name in ("open", "recommended", "minimal", "udp-blocked"):
        script = render_firewall(policy(name), hosts=HOSTS, client_if="lan0", outside_if="wan0")
        r = check_ruleset(fw.ns["fw"], script)
        assert r.returncode == 0, f"{name}: {r.stderr}"
