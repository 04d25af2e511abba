"""Each NAT behaviour, built in namespaces, classified as RFC 5780 sections 4.3/4.4 do.

client (10.0.0.2, 10.0.0.3) -- router (10.0.0.1 | 198.18.1.1) -- inet (198.18.0.2, 198.18.0.3)
cgclient (192.168.1.2) -- home (| 100.64.0.2) -- cgn (100.64.0.1 | 198.18.2.1) -- inet
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from udp_helper import Addr, Agent

from lab.nat.behavior import Filtering, Mapping, NatBehavior, PortAllocation, preset
from lab.nat.netns import (
    add_veth,
    apply_sysctls,
    check_ruleset,
    flush_conntrack,
    load_ruleset,
    namespaces,
    ns_run,
)
from lab.nat.nftables import (
    DEFAULT_PORT_RANGE,
    render_nat,
    render_open_router,
    router_sysctls,
)

pytestmark = pytest.mark.lab

WAN_IP = "198.18.1.1"
S1, S2 = "198.18.0.2", "198.18.0.3"  # the RFC 5780 server's primary and alternate address
P1, P2 = 3478, 3479
SERVERS = [(S1, P1), (S1, P2), (S2, P1), (S2, P2)]
LO, HI = DEFAULT_PORT_RANGE
QUIET_S = 0.4  # how long "nothing arrives" is waited for
_ports = itertools.count(61000)  # client ports outside the NAT's range: preservation is visible


def fresh_port() -> int:
    return next(_ports)


@dataclass
class Topo:
    ns: dict[str, str]
    client: Agent
    cgclient: Agent
    inet: Agent
    server: dict[Addr, str]  # server address -> agent socket id

    def configure(self, behavior: NatBehavior | None, router: str = "router") -> None:
        ns = self.ns[router]
        if behavior is None:
            load_ruleset(ns, render_open_router(wan_if="wan0", lan_if="lan0"))
        else:
            load_ruleset(
                ns,
                render_nat(
                    behavior, wan_if="wan0", lan_if="lan0", wan_ip=WAN_IP, lan_cidr="10.0.0.0/24"
                ),
            )
        apply_sysctls(ns, router_sysctls(behavior))
        flush_conntrack(ns)

    def server_send(self, frm: Addr, to: Addr, data: str = "unsolicited") -> None:
        self.inet.send(self.server[frm], to, data)

    @contextlib.contextmanager
    def diagnostics(self, *routers: str) -> Iterator[None]:
        try:
            yield
        except BaseException:
            for r in routers or ("router",):
                for argv in (["nft", "list", "ruleset"], ["conntrack", "-L"]):
                    out = ns_run(self.ns[r], argv, check=False)
                    print(f"--- [{r}] {' '.join(argv)}\n{out.stdout}{out.stderr}")
            raise


@pytest.fixture(scope="module")
def topo() -> Iterator[Topo]:
    roles = ("client", "router", "inet", "cgclient", "home", "cgn")
    with namespaces(*roles) as ns:
        agents: list[Agent] = []
        try:
            add_veth(ns["client"], "eth0", ns["router"], "lan0")
            add_veth(ns["router"], "wan0", ns["inet"], "eth0")
            add_veth(ns["cgclient"], "eth0", ns["home"], "lan0")
            add_veth(ns["home"], "wan0", ns["cgn"], "lan0")
            add_veth(ns["cgn"], "wan0", ns["inet"], "eth1")
            for node, cmds in {
                "client": [
                    "addr add 10.0.0.2/24 dev eth0",
                    "addr add 10.0.0.3/24 dev eth0",
                    "route add default via 10.0.0.1",
                ],
                "router": [
                    "addr add 10.0.0.1/24 dev lan0",
                    f"addr add {WAN_IP}/24 dev wan0",
                    "route add default via 198.18.1.2",  # stays inside the lab
                ],
                "inet": [
                    "addr add 198.18.1.2/24 dev eth0",
                    f"addr add {S1}/32 dev eth0",
                    f"addr add {S2}/32 dev eth0",
                    "addr add 198.18.2.2/24 dev eth1",
                    "route add 10.0.0.0/24 via 198.18.1.1",  # only used by the open router
                ],
                "cgclient": [
                    "addr add 192.168.1.2/24 dev eth0",
                    "route add default via 192.168.1.1",
                ],
                "home": [
                    "addr add 192.168.1.1/24 dev lan0",
                    "addr add 100.64.0.2/24 dev wan0",
                    "route add default via 100.64.0.1",
                ],
                "cgn": [
                    "addr add 100.64.0.1/24 dev lan0",
                    "addr add 198.18.2.1/24 dev wan0",
                    "route add default via 198.18.2.2",
                ],
            }.items():
                for c in cmds:
                    ns_run(ns[node], ["ip", *c.split()])
            inet = Agent(ns["inet"])
            agents.append(inet)
            server = {a: inet.udp(*a, echo=True) for a in SERVERS}
            inet.call(op="tcp_listen", addr=[S1, 443])
            client = Agent(ns["client"])
            agents.append(client)
            cgclient = Agent(ns["cgclient"])
            agents.append(cgclient)
            yield Topo(ns, client, cgclient, inet, server)
        finally:
            for a in agents:
                a.close()


def probe_mapping(agent: Agent, ip: str, port: int) -> tuple[Addr | None, ...]:
    """RFC 5780 section 4.3 tests I-III from one socket: mapped address per destination."""
    sid = agent.udp(ip, port)
    try:
        return tuple(agent.observed(sid, dst) for dst in ((S1, P1), (S2, P1), (S2, P2)))
    finally:
        agent.call(op="close", id=sid)


def classify_mapping(o1: Addr | None, o2: Addr | None, o3: Addr | None) -> Mapping:
    assert o1 and o2 and o3, f"no answer from the server: {o1} {o2} {o3}"
    if o1 == o2:
        return Mapping.EIM
    return Mapping.ADM if o2 == o3 else Mapping.APDM


def probe_filtering(topo: Topo, agent: Agent, ip: str) -> Filtering:
    """RFC 5780 section 4.4: after sending to S1:P1, what may send back to the mapping?"""
    sid = agent.udp(ip, fresh_port())
    try:
        mapped = agent.observed(sid, (S1, P1))
        assert mapped, "no answer from the server"
        topo.server_send((S2, P2), mapped, "other-address")
        topo.server_send((S1, P2), mapped, "other-port")
        got = {d["data"] for d in agent.recv(sid, wait=QUIET_S, count=2)}
        if "other-address" in got:
            assert "other-port" in got, got
            return Filtering.EIF
        return Filtering.ADF if "other-port" in got else Filtering.APDF
    finally:
        agent.call(op="close", id=sid)


CASES = {
    "full-cone": preset("full-cone").behavior,
    "restricted-cone": preset("restricted-cone").behavior,
    "port-restricted-cone": preset("port-restricted-cone").behavior,
    "symmetric": preset("symmetric").behavior,
    "adm-apdf-random": NatBehavior(Mapping.ADM, Filtering.APDF, PortAllocation.RANDOM),
    "adm-adf-sequential": NatBehavior(Mapping.ADM, Filtering.ADF, PortAllocation.SEQUENTIAL),
    "eim-eif-random": NatBehavior(Mapping.EIM, Filtering.EIF, PortAllocation.RANDOM),
    "eim-apdf-sequential": NatBehavior(Mapping.EIM, Filtering.APDF, PortAllocation.SEQUENTIAL),
    "apdm-eif-sequential": NatBehavior(Mapping.APDM, Filtering.EIF, PortAllocation.SEQUENTIAL),
}


@pytest.mark.parametrize("name", list(CASES))
def test_nat_behaviour_matches_declaration(topo: Topo, name: str) -> None:
    b = CASES[name]
    topo.configure(b)
    with topo.diagnostics():
        port = fresh_port()
        obs = probe_mapping(topo.client, "10.0.0.2", port)
        assert classify_mapping(*obs) is b.mapping, obs
        assert all(o is not None and o[0] == WAN_IP for o in obs), obs
        assert probe_filtering(topo, topo.client, "10.0.0.2") is b.filtering

        ports = [o[1] for o in obs if o]
        new_mappings = list(dict.fromkeys(ports))  # creation order, duplicates removed
        second = probe_mapping(topo.client, "10.0.0.2", fresh_port())[0]
        assert second is not None
        if b.port_allocation is PortAllocation.PRESERVE:
            assert ports[0] == port
        else:
            assert all(LO <= p <= HI for p in [*ports, second[1]]), (ports, second)
        if b.port_allocation is PortAllocation.SEQUENTIAL:
            # the filtering probe made exactly one mapping between the two mapping probes
            assert [q - new_mappings[0] for q in new_mappings] == list(range(len(new_mappings)))
            assert second[1] == new_mappings[-1] + 2, (new_mappings, second)


def test_nat_open_router_translates_and_filters_nothing(topo: Topo) -> None:
    topo.configure(None)
    with topo.diagnostics():
        port = fresh_port()
        obs = probe_mapping(topo.client, "10.0.0.2", port)
        assert obs == (("10.0.0.2", port),) * 3
        sid = topo.client.udp("10.0.0.2", fresh_port())
        topo.server_send((S2, P2), ("10.0.0.2", fresh_port() - 1), "unsolicited")
        assert [d["data"] for d in topo.client.recv(sid)] == ["unsolicited"]
        topo.client.call(op="close", id=sid)


@pytest.mark.parametrize(
    "behavior",
    [
        preset("port-restricted-cone").behavior,
        NatBehavior(Mapping.EIM, Filtering.APDF, PortAllocation.RANDOM),
    ],
    ids=["preserve", "random"],
)
def test_nat_unsolicited_inbound_then_outbound_keeps_eim_port(
    topo: Topo, behavior: NatBehavior
) -> None:
    # DESIGN.md pitfall: a confirmed conntrack entry for an unsolicited packet would hold
    # WAN_IP:port -> remote and force the later outbound flow to that remote onto another port.
    topo.configure(behavior)
    with topo.diagnostics():
        port = fresh_port()
        sid = topo.client.udp("10.0.0.2", port)
        if behavior.port_allocation is PortAllocation.PRESERVE:
            expected = port
        else:
            mapped = topo.client.observed(sid, (S1, P1))
            assert mapped
            expected = mapped[1]
        for _ in range(2):
            topo.server_send((S2, P2), (WAN_IP, expected))
        assert topo.client.recv(sid, wait=QUIET_S) == [], "APDF admitted an unsolicited packet"
        assert topo.client.observed(sid, (S2, P2)) == (WAN_IP, expected)
        topo.client.call(op="close", id=sid)


@pytest.mark.parametrize("hairpin", [True, False], ids=["on", "off"])
@pytest.mark.parametrize("name", ["full-cone", "port-restricted-cone"])
def test_nat_hairpin(topo: Topo, name: str, hairpin: bool) -> None:
    b = NatBehavior(
        preset(name).behavior.mapping,
        preset(name).behavior.filtering,
        PortAllocation.RANDOM,
        hairpin=hairpin,
    )
    topo.configure(b)
    with topo.diagnostics():
        a = topo.client.udp("10.0.0.2", fresh_port())
        c = topo.client.udp("10.0.0.3", fresh_port())
        xa, xc = topo.client.observed(a, (S1, P1)), topo.client.observed(c, (S1, P1))
        assert xa and xc and xa != xc
        topo.client.send(c, xa, "hairpin")
        got = topo.client.recv(a, wait=1.0 if hairpin else QUIET_S)
        if not hairpin:
            assert got == []
            return
        # RFC 4787 REQ-9: the target sees the sender's external address
        assert [(tuple(d["from"]), d["data"]) for d in got] == [(xc, "hairpin")]
        topo.client.send(a, xc, "back")
        assert [(tuple(d["from"]), d["data"]) for d in topo.client.recv(c, wait=1.0)] == [
            (xa, "back")
        ]


def test_nat_udp_timeout_expires_mapping(topo: Topo) -> None:
    b = NatBehavior(Mapping.EIM, Filtering.EIF, PortAllocation.RANDOM, udp_timeout=3)
    topo.configure(b)
    assert (
        ns_run(
            topo.ns["router"], ["sysctl", "-n", "net.netfilter.nf_conntrack_udp_timeout"]
        ).stdout.strip()
        == "3"
    )
    with topo.diagnostics():
        sid = topo.client.udp("10.0.0.2", fresh_port())
        mapped = topo.client.observed(sid, (S1, P1))
        assert mapped
        topo.server_send((S2, P2), mapped, "fresh")
        assert [d["data"] for d in topo.client.recv(sid, wait=1.0)] == ["fresh"]
        time.sleep(b.udp_timeout + 1.5)  # idle: nothing refreshes the mapping
        topo.server_send((S2, P1), mapped, "stale")
        assert topo.client.recv(sid, wait=QUIET_S) == [], "expired mapping still admits (EIF)"
        again = topo.client.observed(sid, (S1, P1))
        assert again and again != mapped, "expired mapping was reused"


def test_nat_conntrack_flush_keeps_explicit_eim_mapping(topo: Topo) -> None:
    topo.configure(NatBehavior(Mapping.EIM, Filtering.APDF, PortAllocation.RANDOM))
    router = topo.ns["router"]
    with topo.diagnostics():
        sid = topo.client.udp("10.0.0.2", fresh_port())
        mapped = topo.client.observed(sid, (S1, P1))
        assert mapped
        assert "dport=3478" in ns_run(router, ["conntrack", "-L"]).stdout
        flush_conntrack(router)
        assert "dport=3478" not in ns_run(router, ["conntrack", "-L"]).stdout
        # the mapping lives in @eim, not in conntrack: the next session gets the same port
        assert topo.client.observed(sid, (S2, P2)) == mapped
        assert topo.client.observed(sid, (S1, P1)) == mapped


def test_nat_tcp_outbound_works_unsolicited_inbound_dropped(topo: Topo) -> None:
    topo.configure(preset("port-restricted-cone").behavior)
    with topo.diagnostics():
        assert topo.client.call(op="tcp_connect", to=[S1, 443])["result"] == "connected"
        r = topo.inet.call(op="tcp_connect", to=[WAN_IP, 443], timeout=QUIET_S)["result"]
        assert r == "timeout"  # dropped, not even refused by the router


def test_nat_cgnat_two_layers_behave_as_eim_apdf(topo: Topo) -> None:
    home, cgn = preset("cgnat").layers
    for router, b, wan_ip, lan in (
        ("home", home, "100.64.0.2", "192.168.1.0/24"),
        ("cgn", cgn, "198.18.2.1", "100.64.0.0/24"),
    ):
        ns = topo.ns[router]
        load_ruleset(ns, render_nat(b, wan_if="wan0", lan_if="lan0", wan_ip=wan_ip, lan_cidr=lan))
        apply_sysctls(ns, router_sysctls(b))
        flush_conntrack(ns)
    with topo.diagnostics("home", "cgn"):
        obs = probe_mapping(topo.cgclient, "192.168.1.2", fresh_port())
        assert classify_mapping(*obs) is Mapping.EIM
        assert obs[0] and obs[0][0] == "198.18.2.1" and LO <= obs[0][1] <= HI
        assert probe_filtering(topo, topo.cgclient, "192.168.1.2") is Filtering.APDF


def test_nat_every_combination_passes_nft_check(topo: Topo) -> None:
    for m, f, a, h in itertools.product(Mapping, Filtering, PortAllocation, (True, False)):
        if m is not Mapping.EIM and a is PortAllocation.PRESERVE:
            continue
        script = render_nat(
            NatBehavior(m, f, a, h),
            wan_if="wan0",
            lan_if="lan0",
            wan_ip=WAN_IP,
            lan_cidr="10.0.0.0/24",
        )
        r = check_ruleset(topo.ns["router"], script)
        assert r.returncode == 0, f"{m} {f} {a} hairpin={h}: {r.stderr}"
