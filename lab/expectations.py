"""What a cell must show, from DESIGN.md: the hole-punching matrix and the fallback ladder.

``expected_outcome`` is a pure function of the cell's description. It is the prediction that
the observed outcome is compared with, so it is written from the documents, never from what
the lab happened to do.
"""

from __future__ import annotations

from dataclasses import dataclass

from reports.vocabulary import LADDER, RELAY_PROTOCOLS, RELAY_REMOTE, Outcome, relay_outcome

# DESIGN.md "Expected hole-punching outcomes": direct unless both sides are "hard" in a way
# that defeats simultaneous checks. Classes: full-cone, restricted, port-restricted, symmetric.
_RELAY_PAIRS = {
    ("port-restricted", "symmetric"),
    ("symmetric", "port-restricted"),
    ("symmetric", "symmetric"),
}

# Which TURN transports a client behind each firewall policy can reach (seed 000 tables):
# the lab offers TURN over UDP on 443, TCP on 3478 and TLS on 443.
TURN_ENDPOINTS = {"udp": ("udp", 443), "tcp": ("tcp", 3478), "tls": ("tcp", 443)}
_REACHABLE = {
    "open": {"udp", "tcp", "tls"},
    "recommended": {"udp", "tls"},  # TCP/UDP 443 to turn; nothing on 3478
    "minimal": {"udp", "tls"},  # TCP/UDP 443 to turn
    "udp-blocked": {"tls"},  # only TCP 80/443 out
}
_PEER_UDP = {"open": True, "recommended": True, "minimal": False, "udp-blocked": False}


@dataclass(frozen=True)
class CellIntent:
    topology: str = "two-nats"
    nat_a: str = "port-restricted-cone"
    nat_b: str = "port-restricted-cone"
    firewall_a: str = "open"
    firewall_b: str = "open"
    ice_policy: str = "all"  # all | relay
    turn_transports: tuple[str, ...] = ("udp", "tcp", "tls")  # () = STUN only
    relay_refuses_lab_peers: bool = False  # the seed's denied-peer-ip list, verbatim


def nat_class(nat: str, firewall: str) -> str:
    """The side's class in the matrix. A stateful firewall in front adds port-restricted
    filtering (replies only, seed 000: "nur dynamisch öffnen via UDP hole punching")."""
    base = {
        "open": "full-cone",
        "full-cone": "full-cone",
        "restricted-cone": "restricted",
        "port-restricted-cone": "port-restricted",
        "symmetric": "symmetric",
        "cgnat": "port-restricted",  # EIM/APDF home router behind an EIM/APDF CGN
    }[nat]
    if firewall != "open" and base in ("full-cone", "restricted"):
        return "port-restricted"
    return base


def direct_possible(intent: CellIntent) -> bool:
    if intent.ice_policy == "relay":
        return False
    if not (_PEER_UDP[intent.firewall_a] and _PEER_UDP[intent.firewall_b]):
        return False
    if intent.topology == "same-lan":
        return True  # host candidates on one LAN
    pair = (nat_class(intent.nat_a, intent.firewall_a), nat_class(intent.nat_b, intent.firewall_b))
    return pair not in _RELAY_PAIRS


def best_relay_rung(firewall: str, offered: tuple[str, ...]) -> Outcome:
    """The highest ladder rung a side can relay on: UDP > TCP > TLS, among offered transports."""
    usable = [t for t in RELAY_PROTOCOLS if t in offered and t in _REACHABLE[firewall]]
    return relay_outcome(usable[0]) if usable else Outcome.FAIL


def expected_outcome(intent: CellIntent) -> Outcome:
    if direct_possible(intent):
        return Outcome.DIRECT
    if not intent.turn_transports or intent.relay_refuses_lab_peers:
        return Outcome.FAIL
    rungs = [
        best_relay_rung(intent.firewall_a, intent.turn_transports),
        best_relay_rung(intent.firewall_b, intent.turn_transports),
    ]
    return min(rungs, key=LADDER.__getitem__)  # the weaker side decides


def combine_sides(a: str | None, b: str | None) -> Outcome:
    """One cell outcome from the two agents' views: both must connect; the lower rung wins;
    "relay-remote" (only the other side relays) defers to the other side's protocol."""
    views = [v or Outcome.FAIL for v in (a, b)]
    if Outcome.FAIL in views:
        return Outcome.FAIL
    concrete = [Outcome(v) for v in views if v != RELAY_REMOTE]
    if not concrete:
        return Outcome.FAIL
    return min(concrete, key=LADDER.__getitem__)
