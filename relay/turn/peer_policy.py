"""Which peer addresses the relay may talk to (coturn's denied-peer-ip / allowed-peer-ip).

Every check first folds IPv4-in-IPv6 encodings to the IPv4 address they reach. coturn relayed
to 0.0.0.0 and :: (routed to loopback by Linux, CVE-2020-26262), and re-encoded IPv4 targets
(::ffff:127.0.0.1, 64:ff9b::7f00:1, ...) slipped past IPv4-only checks (CVE-2026-27624).

Matching rules:

- Absolute refusals, in coturn's good_peer_addr order, on the canonical address: multicast
  (unless allowed), loopback (unless allowed), unspecified (always).
- An IPv4 range sees the embedded IPv4 of any IPv4-in-IPv6 form; an IPv6 range sees the
  address as written. So the seed's ``::ffff:0:0-::ffff:ffff:ffff``, ``64:ff9b::/96`` and
  ``2002::/16`` entries still refuse those encodings wholesale.
- allowed-peer-ip wins over denied-peer-ip, but is matched on the canonical address only: a
  re-encoded IPv4 target must be allowed by an IPv4 range, never by an IPv6 one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LOW32 = 0xFFFF_FFFF
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")  # RFC 4291 §2.5.5.2
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # RFC 4291 §2.5.5.1 (deprecated)
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")  # RFC 3056 §2: IPv4 in bits 16..47
_NAT64_WKP = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 §2.1
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215; /96 embedding assumed

_IPV4_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")  # RFC 1122 §3.2.1.3
_IPV4_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")  # RFC 6890: "this network"
# coturn's ioa_addr_is_multicast refuses every first octet above 223: multicast 224/4, and
# also reserved 240/4 and the limited broadcast 255.255.255.255. We do the same.
_IPV4_MULTICAST_AND_ABOVE = ipaddress.IPv4Network("224.0.0.0/3")
_IPV6_MULTICAST = ipaddress.IPv6Network("ff00::/8")  # RFC 4291 §2.7
_IPV6_LOOPBACK = ipaddress.IPv6Address("::1")
_IPV6_UNSPECIFIED = ipaddress.IPv6Address("::")


def canonical_peer(ip: IPAddress) -> IPAddress:
    """The address a packet to ``ip`` really reaches: embedded IPv4 folded out, zone dropped.

    Folds IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible ``::a.b.c.d`` (not ``::`` and ``::1``,
    which are IPv6's own unspecified and loopback), 6to4 ``2002:AABB:CCDD::/16`` and NAT64
    ``64:ff9b::/96`` / ``64:ff9b:1::/48`` (last 32 bits). Teredo (2001::/32) is not folded: its
    client address is obfuscated and it is a tunnel endpoint, not a re-encoding.
    """
    if isinstance(ip, ipaddress.IPv4Address):
        return ip
    value = int(ip)
    if ip in _IPV4_MAPPED or ip in _NAT64_WKP or ip in _NAT64_LOCAL:
        return ipaddress.IPv4Address(value & _LOW32)
    if ip in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((value >> 80) & _LOW32)
    if ip in _IPV4_COMPATIBLE and value > 1:
        return ipaddress.IPv4Address(value & _LOW32)
    if ip.scope_id is not None:
        return ipaddress.IPv6Address(value)
    return ip


@dataclass(frozen=True)
class IPRange:
    """An inclusive address range ``first..last`` of one family."""

    first: IPAddress
    last: IPAddress

    def __post_init__(self) -> None:
        if self.first.version != self.last.version:
            raise ValueError(f"range {self.first}-{self.last} mixes IPv4 and IPv6")
        if int(self.first) > int(self.last):
            raise ValueError(f"range {self.first}-{self.last} ends before it starts")

    def contains(self, ip: IPAddress) -> bool:
        """IPv4 ranges also match the embedded IPv4 of IPv4-in-IPv6 forms (coturn 4.9+)."""
        if ip.version != self.first.version:
            if self.first.version != 4:
                return False
            ip = canonical_peer(ip)
            if ip.version != 4:
                return False
        return int(self.first) <= int(ip) <= int(self.last)

    def __str__(self) -> str:
        if self.first == self.last:
            return str(self.first)
        return f"{self.first}-{self.last}"


def _parse_address(text: str, whole: str) -> IPAddress:
    if "%" in text:
        raise ValueError(f"bad IP range {whole!r}: zone index not allowed in {text!r}")
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f"bad IP range {whole!r}: {text.strip()!r} is not an IP address") from None


def parse_ip_range(text: str) -> IPRange:
    """Parse a denied-peer-ip / allowed-peer-ip value.

    Forms: a single address, coturn's ``first-last`` (same family, first <= last), and CIDR
    ``net/len`` (an extension; coturn itself has no CIDR form). CIDR is strict: host bits set
    (``10.1.2.3/8``) is a ValueError rather than a silent widening to ``10.0.0.0/8``, because
    the same parser feeds allowed-peer-ip, where widening would open more than was written.
    Surrounding spaces are ignored, as coturn's make_ioa_addr does; host names are refused.
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"bad IP range {text!r}: empty")
    if "/" in stripped:
        if "-" in stripped:
            raise ValueError(f"bad IP range {text!r}: use either first-last or CIDR, not both")
        if "%" in stripped:
            raise ValueError(f"bad IP range {text!r}: zone index not allowed")
        try:
            network = ipaddress.ip_network(stripped, strict=True)
        except ValueError as exc:
            raise ValueError(f"bad IP range {text!r}: {exc}") from None
        return IPRange(network.network_address, network.broadcast_address)
    if "-" in stripped:
        first_text, _, last_text = stripped.partition("-")
        first = _parse_address(first_text, text)
        last = _parse_address(last_text, text)
        if first.version != last.version:
            raise ValueError(f"bad IP range {text!r}: mixes IPv4 and IPv6")
        if int(first) > int(last):
            raise ValueError(f"bad IP range {text!r}: {first} is above {last}")
        return IPRange(first, last)
    address = _parse_address(stripped, text)
    return IPRange(address, address)


@dataclass(frozen=True)
class PeerPolicy:
    """Peer filter applied at every entry point (CreatePermission, ChannelBind, Send, Data)."""

    denied: tuple[IPRange, ...] = ()
    allowed: tuple[IPRange, ...] = ()
    allow_loopback: bool = False  # secure default, as coturn >= 4.5.2 (no-loopback-peers)
    allow_multicast: bool = True  # coturn relays multicast unless no-multicast-peers

    def refusal(self, ip: IPAddress) -> str | None:
        """None if ``ip`` may be a peer, else the reason: "multicast", "loopback",
        "unspecified" or "denied-peer-ip"."""
        canonical = canonical_peer(ip)
        if not self.allow_multicast and _is_multicast(canonical):
            return "multicast"
        if not self.allow_loopback and _is_loopback(canonical):
            return "loopback"
        if _is_unspecified(canonical):
            return "unspecified"
        if any(r.contains(canonical) for r in self.allowed):
            return None
        if any(r.contains(ip) for r in self.denied):
            return "denied-peer-ip"
        return None

    @classmethod
    def from_strings(
        cls,
        denied: Iterable[str],
        allowed: Iterable[str],
        allow_loopback: bool = False,
        allow_multicast: bool = True,
    ) -> PeerPolicy:
        """Build from coturn option values; ValueError names the first bad one."""
        return cls(
            denied=tuple(parse_ip_range(text) for text in denied),
            allowed=tuple(parse_ip_range(text) for text in allowed),
            allow_loopback=allow_loopback,
            allow_multicast=allow_multicast,
        )


def _is_multicast(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv4Address):
        return ip in _IPV4_MULTICAST_AND_ABOVE
    return ip in _IPV6_MULTICAST


def _is_loopback(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv4Address):
        return ip in _IPV4_LOOPBACK
    return ip == _IPV6_LOOPBACK


def _is_unspecified(ip: IPAddress) -> bool:
    # Linux routes 0.0.0.0 and :: to the local host (CVE-2020-26262); coturn refuses 0/8.
    if isinstance(ip, ipaddress.IPv4Address):
        return ip in _IPV4_THIS_NETWORK
    return ip == _IPV6_UNSPECIFIED
