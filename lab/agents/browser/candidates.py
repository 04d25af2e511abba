"""Candidate classification for the browser agents, pure: which TURN transport a browser's relay
candidate came over, and what the lab counts and offers of a browser's gathered candidates.

The candidate lines come from the browser's SDP; ``getStats()`` local-candidate entries (the
page's ``candidateStats``: address, port, candidateType, protocol, relayProtocol, url) say the
client-to-TURN transport of each relay candidate. The two are matched by address, port and
transport. The lab's data plane is UDP: a browser's ICE-TCP host candidates (RFC 6544) stay in
its own SDP for a browser peer, but are neither offered to other implementations nor counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lab.agents.agent_result import candidate_kind
from lab.agents.browser.sdp import Candidate, SdpError, candidate_value, parse_candidate
from reports.vocabulary import RELAY_PROTOCOLS

Stats = Mapping[str, Any]


def relay_protocol(stats: Stats) -> str | None:
    """The client-to-TURN transport of a relay candidate's stats: its ``relayProtocol``, else
    the scheme and transport of the ICE server ``url`` it came from; None if neither says."""
    protocol = stats.get("relayProtocol")
    if isinstance(protocol, str) and protocol.lower() in RELAY_PROTOCOLS:
        return protocol.lower()
    url = stats.get("url")
    if isinstance(url, str):
        url = url.lower()
        if url.startswith("turns:"):
            return "tls"
        if url.startswith("turn:"):
            return "tcp" if "transport=tcp" in url else "udp"
    return None


def endpoint(stats: Stats | None) -> tuple[str, int, str] | None:
    """(address, port, candidate type) of a candidate's stats, or None if any is missing."""
    if not stats:
        return None
    address, port, kind = stats.get("address"), stats.get("port"), stats.get("candidateType")
    if isinstance(address, str) and isinstance(port, int) and isinstance(kind, str):
        return address, port, kind
    return None


@dataclass(frozen=True)
class LocalCandidate:
    value: str  # the candidate attribute value, as the browser wrote it
    candidate: Candidate
    relay_protocol: str | None  # for a relay candidate: udp | tcp | tls

    @property
    def kind(self) -> str | None:
        """host, srflx, relay-udp, relay-tcp or relay-tls (None: a relay of unknown transport)."""
        if self.candidate.type == "relay" and self.relay_protocol is None:
            return None
        return candidate_kind(self.candidate.type, self.relay_protocol)


def local_candidates(sdp_values: Iterable[str], stats: Iterable[Stats]) -> list[LocalCandidate]:
    """The browser's UDP candidates of component 1, each with its relay transport."""
    protocols: dict[tuple[str, int, str], str | None] = {}
    for entry in stats:
        address, port = entry.get("address"), entry.get("port")
        transport = str(entry.get("protocol") or "").lower()
        if isinstance(address, str) and isinstance(port, int):
            protocols[(address, port, transport)] = relay_protocol(entry)
    found: list[LocalCandidate] = []
    seen: set[tuple[str, int, str]] = set()
    for value in sdp_values:
        try:
            candidate = parse_candidate(value)
        except SdpError:
            continue
        if candidate.transport != "udp" or candidate.component != 1:
            continue
        if candidate.endpoint in seen:
            continue
        seen.add(candidate.endpoint)
        protocol = protocols.get(candidate.endpoint) if candidate.type == "relay" else None
        found.append(LocalCandidate(candidate_value(value), candidate, protocol))
    return found
