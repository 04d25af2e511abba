"""Effects: what the sans-IO core asks the asyncio shell to do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

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


# The per-packet fast paths answer with tuples (no dataclass per packet), each carrying the
# hop and its deadline: until when the shell may replay the same decision without asking
# (the earliest expiry of allocation, permission and channel binding; 0.0: ask every time).


class PeerHop(NamedTuple):
    """A client's packet allowed to a peer: send ``payload`` from ``relay`` to ``peer``."""

    relay: Address
    peer: Address
    payload: bytes
    deadline: float


class ClientHop(NamedTuple):
    """A peer's datagram allowed to the client: ``frame`` (ChannelData or a Data
    indication) over ``five_tuple``; a deadline only for a bound channel."""

    five_tuple: FiveTuple
    frame: bytes
    deadline: float
