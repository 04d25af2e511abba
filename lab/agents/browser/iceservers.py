"""The RTCPeerConnection ``iceServers`` of a browser agent, from the contract's inputs.

STUN as ``stun:HOST:PORT``; TURN over UDP and TCP as ``turn:HOST:PORT?transport=udp|tcp`` and
over TLS as ``turns:HOST:PORT?transport=tcp`` (HOST a name: Firefox refuses an IP for
``turns:`` and both browsers check the certificate against it), with the TURN REST
credentials of the seed's recipe.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lab.agents.contract import AgentInputs, HostPort, TurnServer, rest_credentials

__all__ = ["IceServer", "ice_servers", "rest_credentials", "servers_for", "turn_url"]


def turn_url(server: TurnServer) -> str:
    if server.transport == "tls":
        return f"turns:{server.address}?transport=tcp"
    return f"turn:{server.address}?transport={server.transport}"


@dataclass(frozen=True)
class IceServer:
    url: str
    host: str  # the name or address in the URL
    username: str | None = None
    credential: str | None = None

    def to_js(self) -> dict[str, Any]:
        """The RTCIceServer dictionary."""
        entry: dict[str, Any] = {"urls": self.url}
        if self.username is not None:
            entry["username"] = self.username
            entry["credential"] = self.credential or ""
        return entry


def ice_servers(
    stun: HostPort | None,
    turn: Sequence[TurnServer],
    credentials: tuple[str, str] | None,
) -> list[IceServer]:
    servers = [] if stun is None else [IceServer(f"stun:{stun}", stun.host)]
    if turn and credentials is None:
        raise ValueError("TURN servers need credentials")
    for server in turn:
        assert credentials is not None
        servers.append(IceServer(turn_url(server), server.address.host, *credentials))
    return servers


def servers_for(inputs: AgentInputs, now: float) -> list[IceServer]:
    credentials = None
    if inputs.turn:
        assert inputs.turn_secret is not None  # AgentInputs checks it
        credentials = rest_credentials(inputs.turn_secret, inputs.peer, now)
    return ice_servers(inputs.stun, inputs.turn, credentials)


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve_names(hosts: Iterable[str]) -> dict[str, str | None]:
    """Each host name (not an IP) to its first IPv4 address by the system resolver (the
    agent's own /etc/hosts in a lab cell), or None when it does not resolve."""
    found: dict[str, str | None] = {}
    for host in hosts:
        if is_ip(host) or host in found:
            continue
        try:
            infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            found[host] = None
            continue
        found[host] = str(infos[0][4][0]) if infos else None
    return found


def host_resolver_rules(names: Mapping[str, str | None], literals: Iterable[str]) -> str:
    """Chromium's ``--host-resolver-rules``: lab names to their addresses, IP literals and
    loopback untouched, every other name unresolvable (so the browser looks nothing up).

    Each name is mapped as written and rooted (``turn.lab.test.``): Chromium looks up the
    host of a STUN URL and of a TURN URL over UDP with the trailing dot (its log: "Failed to
    resolve address for turn.lab.test."), which ``MAP turn.lab.test`` does not match, so
    ``MAP * ~NOTFOUND`` failed it with 701; TCP and TLS use the name as written."""
    rules = []
    for name, address in names.items():
        if address:
            bare = name.rstrip(".")
            rules += [f"MAP {bare} {address}", f"MAP {bare}. {address}"]
    rules.append("MAP * ~NOTFOUND")
    excluded = dict.fromkeys(["127.0.0.1", "localhost", *literals])
    rules += [f"EXCLUDE {host}" for host in excluded]
    return ",".join(rules)
