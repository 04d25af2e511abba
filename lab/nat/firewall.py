"""Firewall policies from seed 000 ("Netzwerk-Voraussetzungen"), rendered to nftables.

The seed's hosts become roles: www.patientus.de / security.patientus.de -> `web`,
xmpp-production.patientus.de -> `signaling`, turn.patientus.de -> `turn`, PEER -> any peer.
Direction A = outbound from the client (Ausgehend), E = inbound to the client (Eingehend);
for E rows the seed's ports are the remote host's ports.

Every policy ends in `policy drop`; replies to allowed traffic pass as
`ct state established,related`; DNS is not allowed anywhere (the lab uses IP addresses).
The seed's PEER UDP row is "only open dynamically via hole punching": outbound to any peer
is allowed, inbound only as conntrack replies.  ICMP inbound ("Fehlerrückmeldungen") is
error types only, and only as `related` to a flow (an unrelated ICMP error is conntrack
state `invalid`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum

from lab.nat.nftables import check_ifname, check_table, preamble

DEFAULT_TABLE = "natlab_fw"
ICMP_ERRORS = ("destination-unreachable", "time-exceeded", "parameter-problem")


class Role(Enum):
    WEB = "web"
    SIGNALING = "signaling"
    TURN = "turn"
    PEER = "peer"  # the seed's PEER: any address, it changes per call
    ANY = "any"  # not from the seed: the udp-blocked profile's "anyone"


class Direction(Enum):
    OUT = "A"
    IN = "E"
    BOTH = "EA"


class Proto(Enum):
    TCP = "tcp"
    UDP = "udp"
    ICMP = "icmp"


@dataclass(frozen=True)
class FirewallRow:
    profile: str
    target: str  # the seed's wording ("www.patientus.de", "PEER") or "any"
    role: Role
    direction: Direction
    protocols: tuple[Proto, ...]
    ports: tuple[int, int] | None  # None: ICMP
    application: str
    dynamic: bool = False  # inbound only as replies to outbound (UDP hole punching)
    source: str = "seed000"

    @property
    def proto_label(self) -> str:
        return "/".join(p.name for p in self.protocols)

    @property
    def port_label(self) -> str:
        if self.ports is None:
            return ""
        lo, hi = self.ports
        return str(lo) if lo == hi else f"{lo}-{hi}"

    @property
    def comment(self) -> str:
        parts = [self.role.value, self.proto_label, self.port_label, self.application]
        prefix = f"{self.source} {self.profile}" if self.source else self.profile
        if self.role is Role.WEB:  # two seed hosts share this role: keep them apart
            parts.append(f"({self.target})")
        return f"{prefix}: " + " ".join(p for p in parts if p)

    @property
    def id(self) -> str:
        """Stable, readable test id."""
        ports = self.port_label or "-"
        return f"{self.profile}:{self.target}:{self.direction.value}:{self.proto_label}:{ports}"


def _row(profile: str, target: str, d: str, proto: str, ports: str, app: str) -> FirewallRow:
    role = {
        "www.patientus.de": Role.WEB,
        "security.patientus.de": Role.WEB,
        "xmpp-production.patientus.de": Role.SIGNALING,
        "turn.patientus.de": Role.TURN,
        "PEER": Role.PEER,
        "any": Role.ANY,
    }[target]
    protocols = tuple(Proto[p] for p in proto.split("/"))
    rng: tuple[int, int] | None = None
    if ports:
        lo, _, hi = ports.partition("-")
        rng = (int(lo), int(hi or lo))
    return FirewallRow(
        profile=profile,
        target=target,
        role=role,
        direction=Direction(d),
        protocols=protocols,
        ports=rng,
        application=app,
        dynamic=role is Role.PEER and Proto.UDP in protocols,
        source="" if profile == "udp-blocked" else "seed000",
    )


# Seed 000, "Empfohlene Firewall-Konfiguration" (recommended) and the second table (minimal),
# row for row; then the DESIGN.md udp-blocked profile.
_TABLES = {
    "recommended": """
www.patientus.de	A	TCP	80	HTTP redirects to HTTPS
www.patientus.de	A	TCP	443	HTTPS
security.patientus.de	A	TCP	80	HTTP redirects to HTTPS
security.patientus.de	A	TCP	443	HTTPS
xmpp-production.patientus.de	A	TCP	443	HTTPS
turn.patientus.de	A	TCP/UDP	443	STUNS/TURNS
PEER	EA	UDP	1024-65535	SRTP (only opened dynamically, hole punching)
turn.patientus.de	EA	UDP	32355-65535	SRTP
PEER	EA	ICMP		error reports
xmpp-production.patientus.de	EA	ICMP		error reports
turn.patientus.de	EA	ICMP		error reports
""",
    "minimal": """
www.patientus.de	A	TCP	80	HTTP redirects to HTTPS
www.patientus.de	A	TCP	443	HTTPS
security.patientus.de	A	TCP	80	HTTP redirects to HTTPS
security.patientus.de	A	TCP	443	HTTPS
xmpp-production.patientus.de	A	TCP	443	HTTPS
turn.patientus.de	A	TCP/UDP	443	STUN/STUNS/TURNS
""",
    "udp-blocked": """
any	A	TCP	80	HTTP
any	A	TCP	443	HTTPS and TURN over TLS
""",
}

FIREWALL_ROWS: tuple[FirewallRow, ...] = tuple(
    _row(profile, *line.split("\t"))
    for profile, text in _TABLES.items()
    for line in text.strip().splitlines()
)


@dataclass(frozen=True)
class FirewallHosts:
    web: str
    signaling: str
    turn: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.turn, str) or not self.turn:
            raise ValueError("turn must be a non-empty tuple of addresses")
        for a in (self.web, self.signaling, *self.turn):
            try:
                ipaddress.IPv4Address(a)
            except ValueError:
                raise ValueError(f"firewall host {a!r} is not an IPv4 address") from None

    def addresses(self, role: Role) -> tuple[str, ...] | None:
        """The role's addresses; None means any address."""
        return {
            Role.WEB: (self.web,),
            Role.SIGNALING: (self.signaling,),
            Role.TURN: self.turn,
        }.get(role)


@dataclass(frozen=True)
class FirewallPolicy:
    name: str
    rows: tuple[FirewallRow, ...] = field(default=())
    allow_all: bool = False

    def allows(
        self,
        hosts: FirewallHosts,
        direction: Direction,
        proto: Proto,
        remote_ip: str,
        remote_port: int | None = None,
    ) -> bool:
        """Does a NEW packet pass?  Replies to allowed flows always pass.

        For ICMP inbound this answers for an error related to an allowed flow.
        """
        if direction is Direction.BOTH:
            raise ValueError("ask for one direction: Direction.OUT or Direction.IN")
        if self.allow_all:
            return True
        for row in self.rows:
            if proto not in row.protocols or row.direction not in (direction, Direction.BOTH):
                continue
            if direction is Direction.IN and row.dynamic:
                continue
            addrs = hosts.addresses(row.role)
            if addrs is not None and remote_ip not in addrs:
                continue
            if row.ports is not None and (
                remote_port is None or not row.ports[0] <= remote_port <= row.ports[1]
            ):
                continue
            return True
        return False


POLICIES: dict[str, FirewallPolicy] = {
    "open": FirewallPolicy("open", allow_all=True),
    **{
        name: FirewallPolicy(name, tuple(r for r in FIREWALL_ROWS if r.profile == name))
        for name in _TABLES
    },
}


def policy(name: str) -> FirewallPolicy:
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(
            f"unknown firewall policy {name!r}; valid: {', '.join(sorted(POLICIES))}"
        ) from None


def _addr_match(side: str, addrs: tuple[str, ...] | None) -> str:
    if addrs is None:
        return ""
    if len(addrs) == 1:
        return f"ip {side} {addrs[0]} "
    return f"ip {side} {{ {', '.join(addrs)} }} "


def _row_rules(row: FirewallRow, hosts: FirewallHosts, out_q: str, in_q: str) -> list[str]:
    addrs = hosts.addresses(row.role)
    rules = []
    for d in (Direction.OUT, Direction.IN):
        if row.direction not in (d, Direction.BOTH):
            continue
        if d is Direction.OUT:
            head = f"{out_q}{_addr_match('daddr', addrs)}"
            port_side = "dport"
        else:
            head = f"{in_q}{_addr_match('saddr', addrs)}"
            port_side = "sport"  # the seed lists the remote host's ports
        if row.ports is None:  # ICMP
            if d is Direction.OUT:
                match = "ip protocol icmp"
            else:  # error reports, and only about a flow conntrack knows
                match = f"icmp type {{ {', '.join(ICMP_ERRORS)} }} ct state related"
        else:
            protos = [p.value for p in row.protocols]
            l4 = protos[0] if len(protos) == 1 else f"meta l4proto {{ {', '.join(protos)} }} th"
            match = f"{l4} {port_side} {row.port_label}"
            if d is Direction.IN and row.dynamic:
                match += " ct state established,related"  # hole punching: replies only
        suffix = "" if row.direction is not Direction.BOTH else f" ({d.value})"
        rules.append(f'{head}{match} counter accept comment "{row.comment}{suffix}"')
    return rules


def render_firewall(
    policy: FirewallPolicy,
    *,
    hosts: FirewallHosts,
    client_if: str,
    outside_if: str,
    table: str = DEFAULT_TABLE,
) -> str:
    """Return an idempotent `nft -f` script: a forward chain between client_if and outside_if."""
    if not isinstance(policy, FirewallPolicy):
        raise TypeError(f"policy must be a FirewallPolicy, got {policy!r}")
    cif = check_ifname("client_if", client_if)
    oif = check_ifname("outside_if", outside_if)
    if cif == oif:
        raise ValueError("client_if and outside_if must differ")
    check_table(table)
    out_q = f'iifname "{cif}" oifname "{oif}" '
    in_q = f'iifname "{oif}" oifname "{cif}" '
    ind = "\t\t"
    lines = [
        preamble(table),
        f"table ip {table} {{\n\tchain forward {{\n",
        f"{ind}type filter hook forward priority filter; "
        f"policy {'accept' if policy.allow_all else 'drop'};\n",
    ]
    if policy.allow_all:
        lines.append(f'{ind}counter comment "{policy.name}: everything passes"\n')
    else:
        lines.append(f"{ind}ct state invalid drop\n")
        for row in policy.rows:
            lines += [f"{ind}{r}\n" for r in _row_rules(row, hosts, out_q, in_q)]
        lines.append(
            f'{ind}ct state established,related counter accept comment "{policy.name}: '
            'replies to allowed traffic"\n'
        )
    lines.append("\t}\n}\n")
    return "".join(lines)
