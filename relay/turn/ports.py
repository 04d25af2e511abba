"""Relay port allocation (RFC 8656 §7.2): the policy object the core gets relayed addresses from.

The core only chooses; binding is I/O, so the shell implements ``RelayPorts`` with real sockets.
``PortPool`` is the pure part both share: which port numbers of the configured range are free.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from relay.stun.constants import AddressFamily
from relay.turn.addresses import Address, host_family


@dataclass(frozen=True, slots=True)
class RelayGrant:
    """A relayed transport address, and the next port held back for a RESERVATION-TOKEN."""

    address: Address
    reserved: Address | None = None


class RelayPorts(Protocol):
    def open(
        self,
        family: AddressFamily,
        *,
        even: bool = False,
        reserve_next: bool = False,
        dont_fragment: bool = False,
    ) -> RelayGrant | None:
        """Bind a relayed address of ``family``; None when the range is exhausted (-> 508).

        ``dont_fragment``: datagrams to peers leave with DF set (RFC 8656 §7.2 step 4).
        """
        ...

    def open_reserved(self, address: Address) -> bool:
        """Start relaying on a port held back by an earlier EVEN-PORT R=1 Allocate."""
        ...

    def close(self, address: Address) -> None: ...

    def families(self) -> frozenset[AddressFamily]: ...


class ReservationBook(Protocol):
    """RESERVATION-TOKENs visible to every worker process (RFC 8656 §7.2 step 6): the Allocate
    that claims a token may reach another worker than the one that issued it."""

    def put(self, token: bytes, address: Address, expires: float) -> None: ...

    def take(self, token: bytes, now: float) -> Address | None: ...


class PortPool:
    """Free ports of ``[min_port, max_port]``, handed out from a random start (RFC 8656 §7.2)."""

    def __init__(self, min_port: int, max_port: int, rng: random.Random | None = None) -> None:
        if not 0 < min_port <= max_port <= 65535:
            raise ValueError(f"bad relay port range {min_port}-{max_port}")
        self.min_port = min_port
        self.max_port = max_port
        self._rng = rng or random.Random()
        self._used: set[int] = set()

    def __len__(self) -> int:
        return len(self._used)

    def candidates(self, *, even: bool = False, pair: bool = False) -> Iterator[int]:
        """Free ports starting at a random point; ``pair`` also needs port+1 free."""
        span = self.max_port - self.min_port + 1
        start = self._rng.randrange(span)
        for i in range(span):
            port = self.min_port + (start + i) % span
            if port in self._used or (even and port % 2):
                continue
            if pair and (port + 1 > self.max_port or port + 1 in self._used):
                continue
            yield port

    def take(self, port: int) -> None:
        self._used.add(port)

    def give_back(self, port: int) -> None:
        self._used.discard(port)


class MemoryRelayPorts:
    """``RelayPorts`` without sockets, for unit tests of the core."""

    def __init__(self, relay_hosts: tuple[str, ...], pool: PortPool) -> None:
        self.relay_hosts = relay_hosts
        self.pools = {
            host: pool if i == 0 else PortPool(pool.min_port, pool.max_port)
            for i, host in enumerate(relay_hosts)
        }
        self.open_addresses: set[Address] = set()
        self.reserved: set[Address] = set()
        self.dont_fragment: set[Address] = set()
        self._hosts = {host_family(h): h for h in reversed(relay_hosts)}  # first per family
        self._families = frozenset(self._hosts)

    def families(self) -> frozenset[AddressFamily]:
        return self._families

    def _host(self, family: AddressFamily) -> str | None:
        return self._hosts.get(family)

    def open(
        self,
        family: AddressFamily,
        *,
        even: bool = False,
        reserve_next: bool = False,
        dont_fragment: bool = False,
    ) -> RelayGrant | None:
        host = self._host(family)
        if host is None:
            return None
        pool = self.pools[host]
        for port in pool.candidates(even=even, pair=reserve_next):
            pool.take(port)
            self.open_addresses.add((host, port))
            if dont_fragment:
                self.dont_fragment.add((host, port))
            reserved = None
            if reserve_next:
                pool.take(port + 1)
                reserved = (host, port + 1)
                self.reserved.add(reserved)
            return RelayGrant((host, port), reserved)
        return None

    def open_reserved(self, address: Address) -> bool:
        if address not in self.reserved:
            return False
        self.reserved.discard(address)
        self.open_addresses.add(address)
        return True

    def close(self, address: Address) -> None:
        self.open_addresses.discard(address)
        self.reserved.discard(address)
        pool = self.pools.get(address[0])
        if pool is not None:
            pool.give_back(address[1])
