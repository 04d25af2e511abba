"""Building blocks shared by every lab topology. A topology only describes (Mininet's
``Topo.build``): hosts, routers, links and their parameters; ``lab.session`` starts it.

Node names carry the run id, so two runs never collide: ``nl<run id><role>``, e.g. ``nl3fa9pa``
(peer A of run 3fa9). Interface names are ``<node>-eth<N>``, ``<node>-wan`` and ``<node>-lan``
(at most 15 bytes, the Linux limit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mininet.topo import Topo

from lab.nat.behavior import NatBehavior, preset
from lab.nat.firewall import FirewallHosts, policy
from lab.nat.router import NatRouter
from lab.topologies.addressing import (
    HOSTILE_IP,
    INTERNET_PREFIX,
    RELAY_IPS,
    SIGNALING_IP,
    WEB_IP,
    SideAddresses,
)
from lab.topologies.nodes import LabHost, LabSwitch

RUN_ID_RE = re.compile(r"[0-9a-f]{4}")
NODE_PREFIX = "nl"
FIREWALL_HOSTS = FirewallHosts(web=WEB_IP, signaling=SIGNALING_IP, turn=RELAY_IPS)


@dataclass(frozen=True)
class SideSpec:
    """One side of a call: the NAT in front of its peer(s), and the firewall policy on it."""

    nat: str = "port-restricted-cone"
    firewall: str = "open"

    def __post_init__(self) -> None:
        preset(self.nat)  # raises ValueError listing the valid names
        policy(self.firewall)


@dataclass
class Roles:
    """role -> node name, and what the session needs to know about each side."""

    nodes: dict[str, str] = field(default_factory=dict)
    peers: dict[str, str] = field(default_factory=dict)  # "a"/"b" -> peer role
    routers: dict[str, list[str]] = field(default_factory=dict)  # side -> router roles, inner first


class NatlabTopo(Topo):  # type: ignore[misc]
    """Base: the simulated internet with the relay (two addresses), signaling, web, hostile."""

    kind = "base"

    def build(
        self, run_id: str, a: SideSpec = SideSpec(), b: SideSpec = SideSpec(), **_: object
    ) -> None:
        if not RUN_ID_RE.fullmatch(run_id):
            raise ValueError(f"run id {run_id!r} must be 4 lowercase hex digits")
        self.run_id = run_id
        self.roles = Roles()
        self.open_lans: list[tuple[str, str]] = []  # (public LAN, its router's WAN ip)
        self.internet = self.add_switch("s0")
        self.add_internet_host("rly", RELAY_IPS[0], extra=[f"{RELAY_IPS[1]}/{INTERNET_PREFIX}"])
        self.add_internet_host("web", WEB_IP)
        self.add_internet_host("sig", SIGNALING_IP)
        self.add_internet_host("hos", HOSTILE_IP)
        self.build_sides(a=a, b=b)
        # Public (open-preset) LANs lie inside 198.18.0.0/15, which every internet-facing node
        # sees as on-link: each of them needs a route through that side's router.
        outer_routers = [r[-1] for r in self.roles.routers.values()]
        for role in ("rly", "web", "sig", "hos", *outer_routers):
            info = self.nodeInfo(self.roles.nodes[role])
            own_wan = info.get("wan_ip")
            info["routes"] = [(lan, via) for lan, via in self.open_lans if via != own_wan]

    def build_sides(self, a: SideSpec = SideSpec(), b: SideSpec = SideSpec(), **_: object) -> None:
        """Add the topology's sides (A and B) and their peers; each topology says how."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers

    def node_name(self, role: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,3}", role):
            raise ValueError(f"role {role!r}: 1-4 lowercase letters/digits")
        return f"{NODE_PREFIX}{self.run_id}{role}"

    def add_switch(self, role: str) -> str:
        name = self.node_name(role)
        self.roles.nodes[role] = name
        return str(self.addSwitch(name, cls=LabSwitch))

    def add_internet_host(self, role: str, ip: str, extra: list[str] | None = None) -> str:
        name = self.node_name(role)
        self.roles.nodes[role] = name
        self.addHost(name, cls=LabHost, ip=f"{ip}/{INTERNET_PREFIX}", extra_ips=extra or [])
        self.addLink(name, self.internet)
        return name

    def add_side(self, side: str, index: int, spec: SideSpec, peers: int = 1) -> list[str]:
        """A router (two for ``cgnat``) between the internet and a LAN with ``peers`` hosts."""
        addr = SideAddresses(index)
        layers = preset(spec.nat).layers
        public = not layers
        lan = addr.lan(public)
        router_role = f"r{side}"
        routers = [router_role]
        if len(layers) == 2:  # cgnat: home router (client side) behind a carrier-grade NAT
            inner, outer = layers
            cgn_role, home_role = f"c{side}", f"h{side}"
            routers = [home_role, cgn_role]
            cgn_lan = addr.cgn_lan
            cgn = self._add_router(
                cgn_role,
                wan_ip=addr.wan_ip,
                lan_cidr=str(cgn_lan),
                behavior=outer,
                firewall="open",
            )
            lan = addr.home_lan
            home = self._add_router(
                home_role,
                wan_ip=str(cgn_lan[2]),
                lan_cidr=str(lan),
                behavior=inner,
                firewall=spec.firewall,
                gateway=str(cgn_lan[1]),
            )
            self.addLink(
                home,
                cgn,
                intfName1=f"{home}-wan",
                intfName2=f"{cgn}-lan",
                params1={"ip": f"{cgn_lan[2]}/{cgn_lan.prefixlen}"},
                params2={"ip": f"{cgn_lan[1]}/{cgn_lan.prefixlen}"},
            )
            self.addLink(
                cgn,
                self.internet,
                intfName1=f"{cgn}-wan",
                params1={"ip": f"{addr.wan_ip}/{INTERNET_PREFIX}"},
            )
            lan_router, lan_gateway = home, str(lan[1])
        else:
            behavior = layers[0] if layers else None
            router = self._add_router(
                router_role,
                wan_ip=addr.wan_ip,
                lan_cidr=str(lan),
                behavior=behavior,
                firewall=spec.firewall,
            )
            self.addLink(
                router,
                self.internet,
                intfName1=f"{router}-wan",
                params1={"ip": f"{addr.wan_ip}/{INTERNET_PREFIX}"},
            )
            lan_router, lan_gateway = router, str(lan.network_address + 1)
            if public:
                self.open_lans.append((str(lan), addr.wan_ip))
        self.roles.routers[side] = routers
        lan_switch = None
        if peers > 1:
            lan_switch = self.add_switch(f"l{side}")
            self.addLink(
                lan_router,
                lan_switch,
                intfName1=f"{lan_router}-lan",
                params1={"ip": f"{lan_gateway}/{lan.prefixlen}"},
            )
        names = []
        for n in range(peers):
            role = f"p{side}" if n == 0 else f"p{side}{n + 1}"
            name = self.node_name(role)
            ip = str(lan.network_address + 2 + n)
            self.roles.nodes[role] = name
            self.addHost(name, cls=LabHost, ip=f"{ip}/{lan.prefixlen}", gateway=lan_gateway)
            if lan_switch is None:
                self.addLink(
                    name,
                    lan_router,
                    intfName2=f"{lan_router}-lan",
                    params2={"ip": f"{lan_gateway}/{lan.prefixlen}"},
                )
            else:
                self.addLink(name, lan_switch)
            names.append(role)
        return names

    def _add_router(
        self,
        role: str,
        *,
        wan_ip: str,
        lan_cidr: str,
        behavior: NatBehavior | None,
        firewall: str,
        gateway: str | None = None,
    ) -> str:
        name = self.node_name(role)
        self.roles.nodes[role] = name
        self.addHost(
            name,
            cls=NatRouter,
            ip=None,
            wan_intf=f"{name}-wan",
            lan_intf=f"{name}-lan",
            wan_ip=wan_ip,
            lan_cidr=lan_cidr,
            behavior=behavior,
            firewall=firewall,
            fw_hosts=FIREWALL_HOSTS,
            gateway=gateway,
        )
        return name
