"""``NatRouter``: a Mininet node that routes between a LAN and the simulated internet and applies
a NAT behaviour and a firewall policy as nftables rulesets in its own namespace.

The rulesets come from the pure renderers in ``lab.nat.nftables`` and ``lab.nat.firewall``;
this class only loads them (``config``), resets their state between uses (``reset_state``),
shows them as evidence (``evidence``) and removes them (``terminate``).
"""

from __future__ import annotations

from typing import Any

from mininet.node import Node

from lab.nat.behavior import NatBehavior
from lab.nat.firewall import FirewallHosts, policy, render_firewall
from lab.nat.netns import run_in
from lab.nat.nftables import render_nat, render_open_router, router_sysctls

NAT_TABLE = "natlab_nat"
FW_TABLE = "natlab_fw"


class NatRouter(Node):
    """params: wan_intf, lan_intf, wan_ip, lan_cidr, behavior (None = route only), firewall,
    fw_hosts, routes [(dest, via)]."""

    def config(self, **params: Any) -> dict[str, Any]:
        self.behavior: NatBehavior | None = params.pop("behavior", None)
        self.firewall_name: str = params.pop("firewall", "open")
        self.fw_hosts: FirewallHosts | None = params.pop("fw_hosts", None)
        self.firewall_applied = False
        self.wan_intf: str = params.pop("wan_intf")
        self.lan_intf: str = params.pop("lan_intf")
        wan_ip: str = params.pop("wan_ip")
        lan_cidr: str = params.pop("lan_cidr")
        routes: list[tuple[str, str]] = params.pop("routes", [])
        gateway: str | None = params.pop("gateway", None)
        result: dict[str, Any] = super().config(**params)
        run_in(self, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        run_in(self, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        for key in ("all", "default", self.wan_intf, self.lan_intf):
            run_in(self, ["sysctl", "-qw", f"net.ipv4.conf.{key}.rp_filter=0"])
        for dest, via in routes:
            run_in(self, ["ip", "route", "replace", dest, "via", via])
        if gateway:
            run_in(self, ["ip", "route", "replace", "default", "via", gateway])
        else:
            run_in(self, ["ip", "route", "replace", "blackhole", "default"])
        if self.behavior is None:
            ruleset = render_open_router(
                wan_if=self.wan_intf, lan_if=self.lan_intf, table=NAT_TABLE
            )
        else:
            for key, value in router_sysctls(self.behavior).items():
                run_in(self, ["sysctl", "-qw", f"{key}={value}"])
            ruleset = render_nat(
                self.behavior,
                wan_if=self.wan_intf,
                lan_if=self.lan_intf,
                wan_ip=wan_ip,
                lan_cidr=lan_cidr,
                table=NAT_TABLE,
            )
        run_in(self, ["nft", "-f", "-"], stdin=ruleset)
        return result

    def apply_firewall(self) -> None:
        """Load the firewall policy. Separate from ``config`` so that a cell can verify the
        NAT alone first (the probe would otherwise measure NAT and firewall together)."""
        if self.firewall_name == "open" or self.firewall_applied:
            return
        assert self.fw_hosts is not None, "a firewall policy needs the hosts it names"
        fw = render_firewall(
            policy(self.firewall_name),
            hosts=self.fw_hosts,
            client_if=self.lan_intf,
            outside_if=self.wan_intf,
            table=FW_TABLE,
        )
        run_in(self, ["nft", "-f", "-"], stdin=fw)
        self.firewall_applied = True

    def reset_state(self) -> None:
        """Forget every mapping: conntrack entries and the NAT's dynamic sets and maps."""
        run_in(self, ["conntrack", "-F"], timeout=10)
        listing = run_in(self, ["nft", "-j", "list", "table", "ip", NAT_TABLE])
        import json

        for item in json.loads(listing).get("nftables", []):
            for kind in ("set", "map"):
                if kind in item:
                    run_in(self, ["nft", "flush", kind, "ip", NAT_TABLE, item[kind]["name"]])

    def evidence(self) -> str:
        """What a failing cell prints: the ruleset and the conntrack table."""
        parts = []
        for argv in (["nft", "list", "ruleset"], ["conntrack", "-L"]):
            proc = self.popen(argv, text=True)
            out, err = proc.communicate(timeout=10)
            parts.append(f"$ {' '.join(argv)}  # on {self.name}\n{out}{err}")
        return "\n".join(parts)

    def terminate(self) -> None:
        for table in (NAT_TABLE, FW_TABLE):
            self.cmd(f"nft delete table ip {table} 2>/dev/null")
        super().terminate()
