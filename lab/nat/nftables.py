"""Render a `NatBehavior` to an `nft -f` script for a router with one WAN and one LAN interface.

Pure functions: no I/O; the caller loads the script inside the router's namespace with
`nft -f -` and then applies `router_sysctls()` (the `net.netfilter.*` keys exist only once
nf_conntrack is loaded, which loading this ruleset guarantees).  New inbound packets from the
WAN that are not admitted are dropped, except ICMP echo requests to the router itself.

How each RFC 4787 behaviour is rendered (UDP; TCP/ICMP get a plain conntrack SNAT):

- Mapping state lives in explicit dynamic maps, never in conntrack's port choice alone:
  conntrack keeps the source port only while the tuple is free, so a stale entry silently
  moves a mapping (DESIGN.md "Linux pitfalls").
  - EIM: `@eim` maps internal ip.port -> external port; a new flow of an endpoint found
    there is SNATed to that port (REQ-1).  ADM: `@adm` maps internal ip.port.remote-ip ->
    external port.  APDM: no map, every session gets a new port.
  - A flow with no mapping yet gets its port by allocation (REQ-3/4 and section 4.2.1):
    preserve -> the internal port itself, or a kernel-chosen random port when another
    internal endpoint already owns it; sequential -> `numgen inc` through a constant
    counter->port map over the first SEQUENTIAL_WINDOW ports of `port_range`; random ->
    the kernel's `fully-random` choice in `port_range` (it skips tuples in use).
    `numgen` is never written into a port directly: nft 1.0.6 passes its host-byte-order
    result to NAT unconverted (measured: `numgen random mod 40000 offset 20000` gave
    ports 18794 and 65402, byte-swapped values of in-range numbers).
  - The maps are filled and refreshed by `update` from every outbound packet in a
    postrouting filter chain after SNAT, where `udp sport` is the port really used;
    `update` adds a missing element and refreshes a present one (`add` never refreshes a
    timeout).  Refresh is outbound only (REQ-6); conntrack refreshes live sessions itself.
- `@rev` maps external port -> internal ip.port, learned in that same postrouting chain
  (after SNAT, `udp sport` is the external port and `ct <dir> ...` the internal endpoint).
  It drives inbound admission and hairpinning.
- Filtering (section 5): EIF -> any inbound packet to a live external port is DNATed via
  `@rev`; ADF -> only when `@adf` holds (external port . remote ip) that the mapping has sent
  to (plain `ct state established` would be APDF, never ADF); APDF -> only conntrack replies.
  Everything else that is new from the WAN is dropped at prerouting priority dstnat+10,
  before conntrack confirms it, so it never leaves an entry that would later force another
  external port.
- Hairpinning (REQ-9): a LAN packet to WAN_IP:port with a live `@rev` entry is DNATed to the
  internal endpoint and SNATed through the normal mapping, so the target sees the sender's
  external address.  Hairpinned packets are admitted whatever the filtering (RFC 4787 does
  not define filtering for them).  Off: such packets are dropped.
- UDP mapping timeout (REQ-5): the dynamic maps/sets use `timeout <udp_timeout>s`, conntrack's
  UDP timeouts are set to the same value by `router_sysctls()`.

Known limits: a port chosen for a new mapping is checked against conntrack's tuples only,
so (rarely, random/sequential) it can equal a port another internal endpoint holds in an
idle mapping; `@rev` then keeps the newer owner.  A sequential port whose tuple is still in
use for the same remote makes that flow's packets drop (the range is a single port).
"""

from __future__ import annotations

import ipaddress
import re

from lab.nat.behavior import Filtering, Mapping, NatBehavior, PortAllocation

DEFAULT_TABLE = "natlab_nat"
DEFAULT_PORT_RANGE = (20000, 59999)
SET_SIZE = 65535
SEQUENTIAL_WINDOW = 1024  # ports a sequential NAT cycles through (a constant map per port)
CONNTRACK_FLUSH = ("conntrack", "-F")

_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # IFNAMSIZ - 1
_TABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


def check_ifname(what: str, name: str) -> str:
    if not _IFNAME_RE.fullmatch(name):
        raise ValueError(f"{what} {name!r} is not a valid interface name (1-15 of [A-Za-z0-9_.-])")
    return name


def check_table(name: str) -> str:
    if not _TABLE_RE.fullmatch(name):
        raise ValueError(f"nftables table name {name!r} must match {_TABLE_RE.pattern}")
    return name


def _check_ipv4(what: str, value: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an IPv4 address") from None


def _check_cidr(value: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError as e:
        raise ValueError(f"lan_cidr {value!r} is not an IPv4 network: {e}") from None


def _check_port_range(port_range: tuple[int, int]) -> tuple[int, int]:
    lo, hi = port_range
    if not (1024 <= lo <= hi <= 65535):
        raise ValueError(f"port_range {port_range!r} must satisfy 1024 <= low <= high <= 65535")
    return lo, hi


def preamble(table: str, family: str = "ip") -> str:
    # `table {}` then `delete table` makes the script idempotent: it works whether or not the
    # table already exists, and the new definition replaces every map and chain.
    return f"table {family} {table} {{}}\ndelete table {family} {table}\n"


def _dyn(kind: str, name: str, typ: str, timeout: int) -> str:
    return (
        f"\t{kind} {name} {{\n\t\ttype {typ}\n\t\tsize {SET_SIZE}\n"
        f"\t\tflags dynamic,timeout\n\t\ttimeout {timeout}s\n\t}}\n"
    )


def render_nat(
    behavior: NatBehavior,
    *,
    wan_if: str,
    lan_if: str,
    wan_ip: str,
    lan_cidr: str,
    table: str = DEFAULT_TABLE,
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
) -> str:
    """Return a complete, idempotent `nft -f` script implementing `behavior`."""
    if not isinstance(behavior, NatBehavior):
        raise TypeError(f"behavior must be a NatBehavior, got {behavior!r}")
    wan = check_ifname("wan_if", wan_if)
    lan = check_ifname("lan_if", lan_if)
    if wan == lan:
        raise ValueError("wan_if and lan_if must differ")
    wip = _check_ipv4("wan_ip", wan_ip)
    net = _check_cidr(lan_cidr)
    if wip in net:
        raise ValueError(f"wan_ip {wan_ip} lies inside lan_cidr {lan_cidr}")
    check_table(table)
    lo, hi = _check_port_range(port_range)
    n = hi - lo + 1
    t = behavior.udp_timeout
    m, f, alloc = behavior.mapping, behavior.filtering, behavior.port_allocation

    lan_q, wan_q = f'"{lan}"', f'"{wan}"'
    udp = "meta l4proto udp "  # nft types a NAT port only after a protocol match

    sets = []
    if m is Mapping.EIM:
        sets.append(_dyn("map", "eim", "ipv4_addr . inet_service : inet_service", t))
    elif m is Mapping.ADM:
        sets.append(_dyn("map", "adm", "ipv4_addr . inet_service . ipv4_addr : inet_service", t))
    sets.append(_dyn("map", "rev", "inet_service : ipv4_addr . inet_service", t))
    if f is Filtering.ADF:
        sets.append(_dyn("set", "adf", "inet_service . ipv4_addr", t))
    window = min(n, SEQUENTIAL_WINDOW)
    if alloc is PortAllocation.SEQUENTIAL:
        elements = ", ".join(f"{k} : {lo + k}" for k in range(window))
        sets.append(
            f"\tmap seq {{\n\t\ttypeof numgen inc mod {window} : udp sport\n"
            f"\t\telements = {{ {elements} }}\n\t}}\n"
        )

    # --- srcnat: the external port of a new flow (RFC 4787 section 4.1) ---
    udp_nat: list[str] = []
    if m is Mapping.EIM:
        key = "ip saddr . udp sport"
        udp_nat.append("# REQ-1: every session of an internal ip.port reuses its one mapping")
        udp_nat.append(f"{udp}{key} @eim snat ip to {wip} : {key} map @eim")
    elif m is Mapping.ADM:
        # The remote address as the client saw it (for hairpin, WAN_IP, not the DNAT target).
        key = "ip saddr . udp sport . ct original ip daddr"
        udp_nat.append("# section 4.1: one mapping per internal ip.port and remote address")
        udp_nat.append(f"{udp}{key} @adm snat ip to {wip} : {key} map @adm")
    else:
        udp_nat.append("# APDM: every session is a new mapping")
    kernel_random = f"{udp}snat ip to {wip}:{lo}-{hi} fully-random"
    if alloc is PortAllocation.PRESERVE:
        udp_nat.append("# REQ-3 preserve, unless another internal endpoint owns that port")
        udp_nat.append(f"{udp}udp sport != @rev snat ip to {wip} : udp sport")
        udp_nat.append(kernel_random)
    elif alloc is PortAllocation.SEQUENTIAL:
        # Counter -> port through a constant map: nft 1.0.6 hands `numgen` to NAT in host
        # byte order, so `snat to ip : numgen ...` would give byte-swapped ports.
        udp_nat.append(f"# sequential: next port of the first {window} in range, cycling")
        udp_nat.append(f"{udp}snat ip to {wip} : numgen inc mod {window} map @seq")
    else:
        udp_nat.append("# random: the kernel picks a free port")
        udp_nat.append(kernel_random)

    # --- learn: refresh mappings, learn @rev and @adf from outbound packets after SNAT ---
    def learn(d: str) -> list[str]:
        # `meta l4proto udp` in each rule: nft types `proto-src` only after a protocol match.
        internal = f"ct {d} ip saddr . ct {d} proto-src"
        remote = f"ct {d} ip daddr"
        out = []
        if m is Mapping.EIM:
            out.append(f"meta l4proto udp update @eim {{ {internal} : udp sport }}")
        elif m is Mapping.ADM:
            out.append(f"meta l4proto udp update @adm {{ {internal} . {remote} : udp sport }}")
        out.append(f"meta l4proto udp update @rev {{ udp sport : {internal} }}")
        if f is Filtering.ADF:
            out.append(f"meta l4proto udp update @adf {{ udp sport . {remote} }}")
        return out

    # --- inbound admission (section 5) ---
    if f is Filtering.EIF:
        inbound = ["# EIF: any remote may use a live mapping", "dnat ip to udp dport map @rev"]
    elif f is Filtering.ADF:
        inbound = [
            "# ADF: only remote addresses this mapping has sent to (any port)",
            "udp dport . ip saddr @adf dnat ip to udp dport map @rev",
        ]
    else:
        inbound = ["# APDF: nothing here; only conntrack replies come in"]

    ind = "\t\t"
    no_hairpin = "hairpin without mapping" if behavior.hairpin else "no hairpin"
    learn_hook = "type filter hook postrouting priority srcnat + 100; policy accept;"
    lines = [preamble(table), f"table ip {table} {{\n"]
    lines += sets
    lines.append(
        f"\tchain dstnat {{\n{ind}type nat hook prerouting priority dstnat; policy accept;\n"
        f"{ind}iifname {wan_q} ip daddr {wip} meta l4proto udp jump inbound_udp\n"
    )
    if behavior.hairpin:
        lines.append(
            f"{ind}# REQ-9 hairpinning: LAN -> own external address, via the mapping\n"
            f"{ind}iifname {lan_q} ip saddr {net} ip daddr {wip} udp dport @rev "
            "dnat ip to udp dport map @rev\n"
        )
    lines.append("\t}\n")
    lines.append("\tchain inbound_udp {\n" + "".join(f"{ind}{x}\n" for x in inbound) + "\t}\n")
    lines.append(
        f"\tchain admit {{\n{ind}type filter hook prerouting priority dstnat + 10; policy accept;\n"
        f"{ind}# Unsolicited inbound is dropped before conntrack confirms it: a confirmed entry\n"
        f"{ind}# would hold WAN_IP:port and force a later outbound flow onto another port.\n"
        f"{ind}iifname {wan_q} ct state new ct status dnat accept\n"
        f"{ind}iifname {wan_q} ip daddr {wip} icmp type echo-request accept\n"
        f'{ind}iifname {wan_q} ct state new counter drop comment "unsolicited inbound"\n'
        f"{ind}iifname {lan_q} ip daddr {wip} meta l4proto {{ tcp, udp }} ct state new "
        "ct status dnat accept\n"
        f"{ind}iifname {lan_q} ip daddr {wip} meta l4proto {{ tcp, udp }} ct state new "
        f'counter drop comment "{no_hairpin}"\n'
        "\t}\n"
    )
    lines.append(
        f"\tchain srcnat {{\n{ind}type nat hook postrouting priority srcnat; policy accept;\n"
        f"{ind}iifname {lan_q} ip saddr {net} oifname {wan_q} jump natout\n"
    )
    if behavior.hairpin:
        lines.append(
            f"{ind}iifname {lan_q} ip saddr {net} oifname {lan_q} ct status dnat jump natout\n"
        )
    lines.append("\t}\n")
    lines.append(
        "\tchain natout {\n"
        f"{ind}meta l4proto udp jump natout_udp\n"
        f"{ind}# TCP, ICMP, others: conntrack SNAT (the lab's TCP is always outbound)\n"
        f"{ind}snat ip to {wip}\n\t}}\n"
    )
    lines.append("\tchain natout_udp {\n" + "".join(f"{ind}{x}\n" for x in udp_nat) + "\t}\n")
    lines.append(
        f"\tchain learn {{\n{ind}{learn_hook}\n"
        f"{ind}# after SNAT: udp sport is the external port, ct <dir> ... the internal endpoint\n"
        f"{ind}iifname {lan_q} ip saddr {wip} meta l4proto udp ct direction original "
        "jump learn_original\n"
        f"{ind}iifname {lan_q} ip saddr {wip} meta l4proto udp ct direction reply "
        "jump learn_reply\n\t}\n"
    )
    for d in ("original", "reply"):
        lines.append(f"\tchain learn_{d} {{\n" + "".join(f"{ind}{x}\n" for x in learn(d)) + "\t}\n")
    lines.append("}\n")
    return "".join(lines)


def render_open_router(*, wan_if: str, lan_if: str, table: str = DEFAULT_TABLE) -> str:
    """The `open` preset: plain routing, no NAT, no filtering (replaces any NAT table)."""
    wan = check_ifname("wan_if", wan_if)
    lan = check_ifname("lan_if", lan_if)
    check_table(table)
    return (
        preamble(table) + f"table ip {table} {{\n"
        "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n"
        f'\t\tiifname "{lan}" oifname "{wan}" counter comment "open: routed, not translated"\n'
        "\t}\n}\n"
    )


def router_sysctls(behavior: NatBehavior | None) -> dict[str, str]:
    """Sysctls for the router namespace; `None` is the open router (no conntrack needed)."""
    out = {
        "net.ipv4.ip_forward": "1",
        # Hairpinned packets leave by the interface they came in on: no ICMP redirects.
        "net.ipv4.conf.all.send_redirects": "0",
    }
    if behavior is not None:
        # REQ-5: conntrack's UDP entries live exactly as long as the nft mappings.
        out["net.netfilter.nf_conntrack_udp_timeout"] = str(behavior.udp_timeout)
        out["net.netfilter.nf_conntrack_udp_timeout_stream"] = str(behavior.udp_timeout)
    return out


def sysctl_commands(sysctls: dict[str, str]) -> list[list[str]]:
    return [["sysctl", "-qw", f"{k}={v}"] for k, v in sysctls.items()]
