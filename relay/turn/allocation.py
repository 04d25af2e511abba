"""Allocation state (RFC 8656 §5): allocations, permissions and channel bindings, with expiry.

These objects are the core's mutable state; lifetimes move on Refresh, so they are plain
slotted dataclasses, owned by one ``AllocationTable``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relay.turn.addresses import Address, FiveTuple

CHANNEL_REBIND_HOLD = 300.0  # RFC 8656 §12: an expired binding is not reusable for 5 minutes


@dataclass(slots=True)
class ChannelBinding:
    number: int
    peer: Address
    expires: float
    relay: Address  # the allocation's relayed address of the peer's family

    def usable(self, now: float) -> bool:
        return now < self.expires

    def held(self, now: float) -> bool:
        return now < self.expires + CHANNEL_REBIND_HOLD


@dataclass(slots=True)
class Allocation:
    five_tuple: FiveTuple
    relays: tuple[Address, ...]
    username: str
    realm: str
    key: bytes | None
    quota_identity: str
    expires: float
    transaction_id: bytes
    response: bytes = b""  # the Allocate success response, replayed on a retransmission
    permissions: dict[str, float] = field(default_factory=dict)  # peer host -> expiry (§9)
    channels: dict[int, ChannelBinding] = field(default_factory=dict)
    peer_channels: dict[Address, ChannelBinding] = field(default_factory=dict)

    def relay_for_host(self, host: str) -> Address | None:
        """The relayed address of the same family as ``host`` (RFC 8656 §9.1: 443 if none)."""
        v6 = ":" in host
        return next((r for r in self.relays if (":" in r[0]) == v6), None)

    def permitted(self, host: str, now: float) -> bool:
        expiry = self.permissions.get(host)
        return expiry is not None and now < expiry

    def expire(self, now: float) -> None:
        """Drop expired permissions and channel bindings past their rebind hold."""
        for host in [h for h, t in self.permissions.items() if t <= now]:
            del self.permissions[host]
        for number in [n for n, b in self.channels.items() if not b.held(now)]:
            binding = self.channels.pop(number)
            self.peer_channels.pop(binding.peer, None)


class AllocationTable:
    """Allocations by 5-tuple and by relayed address (quotas are counted by relay.turn.quota)."""

    def __init__(self) -> None:
        self.by_five_tuple: dict[FiveTuple, Allocation] = {}
        self.by_relay: dict[Address, Allocation] = {}

    def __len__(self) -> int:
        return len(self.by_five_tuple)

    def add(self, allocation: Allocation) -> None:
        self.by_five_tuple[allocation.five_tuple] = allocation
        for relay in allocation.relays:
            self.by_relay[relay] = allocation

    def remove(self, allocation: Allocation) -> None:
        self.by_five_tuple.pop(allocation.five_tuple, None)
        for relay in allocation.relays:
            self.by_relay.pop(relay, None)

    def expired(self, now: float) -> list[Allocation]:
        return [a for a in self.by_five_tuple.values() if a.expires <= now]
