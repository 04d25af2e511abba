"""The relay's packet loop: which one runs, and the routes the C loop replays.

``relay/server/_datapath.c`` reads bursts with recvmmsg(2) and forwards, with sendmmsg(2),
every datagram that matches a route the core approved earlier; everything else comes back to
the Python path. The core stays the only judge: a route is learned here only after
``TurnCore`` relayed a packet the same way, and it carries a deadline, the earliest of the
allocation's, the permission's and the channel binding's expiry at that moment
(``TurnCore.route_deadline``). Permissions and channel bindings only grow while they live
(a Refresh may shorten an allocation, but its expiry deletes it at the next tick), and a
route re-learned after its deadline takes the peer the core chose then; so a route is never
more permissive than the core. When a relayed address closes, ``forget_relay`` drops every
route through it before its socket (and descriptor number) is released.

Only UDP clients are served by the C loop; TCP and TLS clients, Data indications, refused
or malformed packets always take the Python path, which counts what it drops.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import TYPE_CHECKING

from relay.stun.attributes import encode_address_value
from relay.turn.addresses import Address, packed_ip
from relay.turn.core import SEND_SHAPE

if TYPE_CHECKING:
    from relay.server._datapath import Forwarder  # typed by _datapath.pyi


def _load() -> ModuleType | None:
    try:
        return importlib.import_module("relay.server._datapath")
    except ImportError:  # not compiled (no compiler or headers at install): pure Python path
        return None


C_MODULE = _load()
CHOICES = ("auto", "c", "python")
ENV = "NATLAB_RELAY_DATAPATH"  # overrides the option: "python" to compare the two loops
MAX_ROUTES_PER_RELAY = 4096  # routes learned through one relayed address (then: Python path)
READS_PER_WAKEUP = 256  # bound the work one readable socket can take from the loop
_ANY_TID = bytes(12)

# Routes as the C loop reads them: (socket fd, struct sockaddr bytes, deadline[, channel]).
ToPeer = tuple[int, bytes, float]  # client -> peer, by client address + channel or peer
ToClient = tuple[int, bytes, float, int]  # peer -> client as ChannelData, by peer address
ToPeerTable = dict[bytes, ToPeer]
ToClientTable = dict[bytes, ToClient]


def resolve(choice: str) -> str:
    """The loop to run for the ``datapath`` option: "c" or "python"; ValueError if "c" is
    asked for and not built."""
    choice = os.environ.get(ENV) or choice  # an empty variable counts as unset
    if choice not in CHOICES:
        raise ValueError(f"datapath must be one of {', '.join(CHOICES)}, not {choice!r}")
    if choice == "auto":
        return "c" if C_MODULE is not None else "python"
    if choice == "c" and C_MODULE is None:
        raise ValueError("datapath c: relay/server/_datapath is not built (pip install -e .)")
    return choice


def address_key(host: str, port: int) -> bytes:
    """IP then port, as on the wire: the prefix of every route key (see _datapath.c)."""
    return packed_ip(host) + port.to_bytes(2, "big")


def xor_peer_value(peer: Address) -> bytes:
    """The XOR-PEER-ADDRESS value a client writes for an IPv4 peer (RFC 8489 §14.2). An IPv4
    address is XORed with the magic cookie only, so any transaction id gives these bytes."""
    return encode_address_value(packed_ip(peer[0]), peer[1], _ANY_TID)


class Datapath:
    """One process's C loop, its route tables, and the index that drops them."""

    def __init__(self, max_payload: int, channel_max: int) -> None:
        assert C_MODULE is not None
        shape = SEND_SHAPE
        self.forwarder: Forwarder = C_MODULE.Forwarder(
            max_payload, channel_max, shape.peer_type, shape.data_type, shape.ignored_types
        )
        self._sockaddr = C_MODULE.sockaddr
        # relayed address -> peer key -> route to the client (read by from_peers)
        self.peer_routes: dict[Address, ToClientTable] = {}
        # relayed address -> the client-side (table, key) entries that go through it
        self._client_entries: dict[Address, list[tuple[ToPeerTable, bytes]]] = {}
        self.empty: ToClientTable = {}  # what from_peers reads for a relay with no routes

    def counters(self) -> dict[str, int]:
        return self.forwarder.counters()  # a new dict per call

    def _room(self, relay: Address) -> bool:
        entries = self._client_entries.get(relay)
        peers = self.peer_routes.get(relay)
        used = (len(entries) if entries else 0) + (len(peers) if peers else 0)
        return used < MAX_ROUTES_PER_RELAY

    def learn_to_peer(
        self,
        table: ToPeerTable,
        key: bytes,
        relay: Address,
        relay_fd: int,
        peer: Address,
        deadline: float,
    ) -> None:
        """A client's ChannelData or Send indication the core just relayed to ``peer``."""
        known = table.get(key)
        if known is None or known[0] != relay_fd:  # new through this relay: index it
            if not self._room(relay):
                return
            self._client_entries.setdefault(relay, []).append((table, key))
        # the peer as the core chose it now (RFC 8656 §12: an expired channel number may be
        # bound to another peer) and the new deadline
        table[key] = (relay_fd, self._sockaddr(*peer), deadline)

    def learn_to_client(
        self,
        relay: Address,
        peer: Address,
        listener_fd: int,
        client: Address,
        number: int,
        deadline: float,
    ) -> None:
        """A peer's datagram the core just relayed to a UDP client as ChannelData."""
        if not self._room(relay):
            return
        routes = self.peer_routes.setdefault(relay, {})
        routes[address_key(*peer)] = (listener_fd, self._sockaddr(*client), deadline, number)

    def forget_relay(self, relay: Address) -> None:
        """The relayed address is closing: no route may outlive its socket."""
        self.peer_routes.pop(relay, None)
        for table, key in self._client_entries.pop(relay, ()):
            table.pop(key, None)
