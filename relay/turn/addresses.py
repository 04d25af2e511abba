"""Transport addresses and 5-tuples as the core keys them.

Addresses are plain ``(host, port)`` tuples, the same shape asyncio hands the shell, so the
per-packet path does no parsing; ``host`` is always the canonical text of the address
(``str(ipaddress.ip_address(...))``).
"""

from __future__ import annotations

import ipaddress
from enum import Enum
from typing import NamedTuple

from relay.stun.attributes import IPAddress
from relay.stun.constants import AddressFamily

Address = tuple[str, int]


class Transport(Enum):
    """Client-to-server transport of a 5-tuple (RFC 8656 §2)."""

    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"

    @property
    def is_stream(self) -> bool:
        return self is not Transport.UDP


class FiveTuple(NamedTuple):
    """RFC 8656 §2: client address, server address, transport. Keys an allocation."""

    client: Address
    server: Address
    transport: Transport


def family_of(ip: IPAddress) -> AddressFamily:
    return AddressFamily.IPV4 if ip.version == 4 else AddressFamily.IPV6


def host_family(host: str) -> AddressFamily:
    return AddressFamily.IPV6 if ":" in host else AddressFamily.IPV4


def packed_ip(host: str) -> bytes:
    """The 4 or 16 bytes of a host's address. Dotted-quad IPv4 text is split by hand, as
    ``ipaddress`` takes several times longer; anything else (IPv6, odd spellings) goes there."""
    try:
        a, b, c, d = map(int, host.split("."))
        packed = bytes((a, b, c, d))  # ValueError outside 0..255
    except ValueError:
        return ipaddress.ip_address(host).packed
    if f"{a}.{b}.{c}.{d}" != host:  # "010.0.0.1", "+1.2.3.4", " 1.2.3.4": not canonical
        return ipaddress.ip_address(host).packed
    return packed


def canonical_host(host: str) -> str:
    """Canonical text of an address as sockets return it (drops an IPv6 zone)."""
    return str(ipaddress.ip_address(host.split("%", 1)[0]))
