"""Effects: what the sans-IO core asks the asyncio shell to do."""

from __future__ import annotations

from dataclasses import dataclass

from relay.turn.addresses import Address, FiveTuple


@dataclass(frozen=True, slots=True)
class SendToClient:
    """Send bytes to a client over the 5-tuple it used."""

    five_tuple: FiveTuple
    data: bytes


@dataclass(frozen=True, slots=True)
class SendToPeer:
    """Send a UDP datagram from a relayed transport address to a peer (RFC 8656 §10.2, §12.6)."""

    relay: Address
    peer: Address
    data: bytes


Effect = SendToClient | SendToPeer
