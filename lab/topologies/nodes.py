"""Mininet node classes of the lab. Each owns its side effects: ``config()`` applies addresses,
routes and rules, ``terminate()`` removes them (Mininet calls both).
"""

from __future__ import annotations

from typing import Any

from mininet.node import Host
from mininet.nodelib import LinuxBridge

from lab.nat.netns import run_in

SINK = "sink0"  # a default route for hosts without a router: a veth pair inside the host


class LabHost(Host):
    """A lab host: extra addresses, extra routes, and a default route that stays in the lab.

    DESIGN.md: a host without a default route gets ENETUNREACH for destinations outside its
    subnets, and a relay asked to reach a private host candidate then fails the whole session
    (coturn drops the allocation). A blackhole default is no better: sendto() fails with
    EINVAL. So a host with no router routes its default into a veth pair that lives inside its
    own namespace: datagrams leave, nobody answers, nothing leaves the namespace.
    """

    def config(self, **params: Any) -> dict[str, Any]:
        extra_ips: list[str] = params.pop("extra_ips", [])
        routes: list[tuple[str, str]] = params.pop("routes", [])
        gateway: str | None = params.pop("gateway", None)
        result: dict[str, Any] = super().config(**params)
        for spec in extra_ips:
            # "CIDR" goes on the default interface, "CIDR@ethN" on interface <node>-ethN
            cidr, _, suffix = spec.partition("@")
            intf = f"{self.name}-{suffix}" if suffix else str(self.defaultIntf())
            run_in(self, ["ip", "addr", "add", cidr, "dev", intf])
        for dest, via in routes:
            run_in(self, ["ip", "route", "replace", dest, "via", via])
        if gateway:
            run_in(self, ["ip", "route", "replace", "default", "via", gateway])
        else:
            run_in(self, ["ip", "link", "add", SINK, "type", "veth", "peer", "name", "sink1"])
            for name in (SINK, "sink1"):
                run_in(self, ["ip", "link", "set", name, "up"])
            run_in(self, ["ip", "route", "replace", "default", "dev", SINK])
        # IPv6 link-local addresses would give ICE host candidates outside the address plan
        run_in(self, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        return result


class LabSwitch(LinuxBridge):
    """A Linux bridge in a namespace of its own, so no lab frame crosses the root namespace
    (where br_netfilter would feed it to the host's firewall and conntrack)."""

    def __init__(self, name: str, **params: Any) -> None:
        # Mininet passes inNamespace=False for switches; a lab bridge never lives in the root ns
        params["inNamespace"] = True
        super().__init__(name, **params)

    def start(self, controllers: Any) -> None:
        super().start(controllers)
        # br_netfilter defaults are per namespace; a plain L2 segment must not see nftables
        for key in ("iptables", "ip6tables", "arptables"):
            self.cmd(f"sysctl -qw net.bridge.bridge-nf-call-{key}=0 2>/dev/null")
