"""The named topologies of DESIGN.md. Each only describes; ``lab.session`` starts them."""

from __future__ import annotations

from lab.topologies.addressing import (
    INTERNAL_SERVICE_IP,
    METADATA_IP,
    RELAY_LAN,
    RELAY_LAN_IP,
)
from lab.topologies.base import NatlabTopo, SideSpec
from lab.topologies.nodes import LabHost

DEFAULT_SIDE = SideSpec()
ENTERPRISE_A = SideSpec("symmetric", "recommended")


class TwoNats(NatlabTopo):
    """Peer A behind NAT A, peer B behind NAT B; relay, signaling and web on the internet."""

    kind = "two-nats"

    def build_sides(
        self, a: SideSpec = DEFAULT_SIDE, b: SideSpec = DEFAULT_SIDE, **_: object
    ) -> None:
        self.add_side("a", 1, a)
        self.add_side("b", 2, b)
        self.roles.peers = {"a": "pa", "b": "pb"}


class SameLan(NatlabTopo):
    """Both peers on one LAN behind one NAT (hairpinning decides the srflx-srflx pair)."""

    kind = "same-lan"

    def build_sides(
        self, a: SideSpec = DEFAULT_SIDE, b: SideSpec = DEFAULT_SIDE, **_: object
    ) -> None:
        # b shares a's LAN and NAT: its own spec has nothing to build
        self.add_side("a", 1, a, peers=2)
        self.roles.peers = {"a": "pa", "b": "pa2"}


class Cgnat(TwoNats):
    """Peer A behind a home NAT behind a carrier-grade NAT (two layers); peer B as given."""

    kind = "cgnat"

    def build_sides(
        self, a: SideSpec = DEFAULT_SIDE, b: SideSpec = DEFAULT_SIDE, **_: object
    ) -> None:
        super().build_sides(a=SideSpec("cgnat", a.firewall), b=b)


class Enterprise(TwoNats):
    """A firewall policy (seed 000) plus a NAT in front of peer A."""

    kind = "enterprise"

    def build_sides(
        self,
        a: SideSpec = ENTERPRISE_A,
        b: SideSpec = DEFAULT_SIDE,
        **_: object,
    ) -> None:
        super().build_sides(a=a, b=b)


class RelayLan(TwoNats):
    """The relay also sits on an internal LAN with a service host and a metadata host: the
    targets a TURN server must refuse to relay to (denied-peer tests)."""

    kind = "relay-lan"

    def build_sides(
        self, a: SideSpec = DEFAULT_SIDE, b: SideSpec = DEFAULT_SIDE, **_: object
    ) -> None:
        super().build_sides(a=a, b=b)
        lan = self.add_switch("s1")
        relay = self.roles.nodes["rly"]
        self.addLink(relay, lan, params1={"ip": f"{RELAY_LAN_IP}/{RELAY_LAN.prefixlen}"})
        for role, ip, prefix in (
            ("svc", INTERNAL_SERVICE_IP, RELAY_LAN.prefixlen),
            ("md", METADATA_IP, 16),
        ):
            name = self.node_name(role)
            self.roles.nodes[role] = name
            self.addHost(name, cls=LabHost, ip=f"{ip}/{prefix}")
            self.addLink(name, lan)
        # the relay reaches the metadata host on its link, as a cloud VM does
        self.nodeInfo(relay)["extra_ips"].append("169.254.169.1/16@eth1")


TOPOLOGIES: dict[str, type[NatlabTopo]] = {
    t.kind: t for t in (TwoNats, SameLan, Cgnat, Enterprise, RelayLan)
}


def topology(name: str) -> type[NatlabTopo]:
    try:
        return TOPOLOGIES[name]
    except KeyError:
        raise ValueError(f"unknown topology {name!r}; valid: {', '.join(TOPOLOGIES)}") from None
