"""The lab address plan (DESIGN.md): every address a topology hands out comes from here.

Simulated internet: 198.18.0.0/15 (RFC 2544), one flat segment. LANs behind NATs: 10.0.N.0/24
(192.168.N.0/24 for the home LAN behind a carrier-grade NAT), CGN layer: 100.64.N.0/24. A side
with the ``open`` preset gets a public LAN 198.19.N.0/24 routed by its router.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

INTERNET = ipaddress.ip_network("198.18.0.0/15")
INTERNET_PREFIX = 15
RELAY_IPS = ("198.18.0.2", "198.18.0.3")  # two addresses for RFC 5780 discovery
WEB_IP = "198.18.0.20"
SIGNALING_IP = "198.18.0.30"
# Lab host names (the reserved .test TLD, RFC 6761): in the server certificate, and resolved
# inside each agent's own mount namespace (lab.agents.launch), never in the host's /etc/hosts.
RELAY_NAME = "turn.lab.test"
SIGNALING_NAME = "signal.lab.test"
LAB_NAMES = {RELAY_NAME: RELAY_IPS[0], SIGNALING_NAME: SIGNALING_IP}
HOSTILE_IP = "198.18.0.66"  # the attacker of the denied-peer scenarios
RELAY_LAN = ipaddress.ip_network("10.10.0.0/24")  # relay-lan: the relay's internal LAN
RELAY_LAN_IP = "10.10.0.2"
INTERNAL_SERVICE_IP = "10.10.0.5"
METADATA_IP = "169.254.169.254"
METADATA_LINK = ipaddress.ip_network("169.254.0.0/16")

# Every address a lab namespace may hold or route to (the safety test checks routes against it).
ADDRESS_PLAN = (
    INTERNET,
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("192.168.0.0/16"),
    ipaddress.ip_network("100.64.0.0/10"),
    METADATA_LINK,
)


@dataclass(frozen=True)
class SideAddresses:
    """Addresses of one side (A = 1, B = 2, ...) of a topology."""

    index: int

    @property
    def wan_ip(self) -> str:
        return f"198.18.{self.index}.1"

    def lan(self, public: bool) -> ipaddress.IPv4Network:
        base = "198.19" if public else "10.0"
        return ipaddress.IPv4Network(f"{base}.{self.index}.0/24")

    def peer_ip(self, public: bool, n: int = 0) -> str:
        return str(self.lan(public).network_address + 2 + n)

    # carrier-grade NAT: home LAN 192.168.N/24 behind the home router, CGN layer 100.64.N/24
    @property
    def home_lan(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"192.168.{self.index}.0/24")

    @property
    def cgn_lan(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"100.64.{self.index}.0/24")


def in_plan(network: str) -> bool:
    """True when a route's destination lies inside the lab address plan (or is a blackhole)."""
    net = ipaddress.ip_network(network, strict=False)
    return any(net.version == p.version and net.subnet_of(p) for p in ADDRESS_PLAN)  # type: ignore[arg-type]
