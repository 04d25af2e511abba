"""SDP for the browser agents, pure (no I/O): read a browser's own description, and write the
remote description a browser needs for a peer that has none (aioice, pion, libnice).

A non-browser peer sends only ICE (ufrag, pwd, candidates). The browser still needs a whole
SDP: one ``m=application`` data-channel section with the peer's ICE credentials and candidates,
a DTLS fingerprint (a fixed dummy: the peer speaks no DTLS, so DTLS never completes and the call
is judged on ICE alone) and ``a=setup`` (``actpass`` in an offer; ``active`` in an answer, so
the browser that offered waits as the DTLS server and sends no DTLS to a peer that would not
understand it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

MAX_REMOTE_CANDIDATES = 64
SCTP_PORT = 5000
# sha-256 of a fixed string: a well-formed fingerprint no certificate will ever match
DUMMY_FINGERPRINT = ":".join(f"{b:02X}" for b in hashlib.sha256(b"natlab: no DTLS").digest())


class SdpError(ValueError):
    pass


@dataclass(frozen=True)
class Candidate:
    """One ICE candidate, RFC 8839 section 5.1."""

    foundation: str
    component: int
    transport: str  # lower case: udp | tcp
    priority: int
    address: str
    port: int
    type: str  # host | srflx | prflx | relay
    tcptype: str | None = None

    @property
    def endpoint(self) -> tuple[str, int, str]:
        return (self.address, self.port, self.transport)


def candidate_value(text: str) -> str:
    """The attribute value of a candidate line: without ``a=`` and ``candidate:``."""
    text = text.strip()
    text = text.removeprefix("a=")
    return text.removeprefix("candidate:").strip()


def parse_candidate(text: str) -> Candidate:
    """A candidate from ``candidate:...``, ``a=candidate:...`` or the bare value."""
    bits = candidate_value(text).split()
    if len(bits) < 8 or bits[6] != "typ":
        raise SdpError(f"not an ICE candidate: {text!r}")
    try:
        component, priority, port = int(bits[1]), int(bits[3]), int(bits[5])
    except ValueError:
        raise SdpError(f"bad number in candidate {text!r}") from None
    if not 0 < component < 257 or not 0 <= port < 65536 or priority < 0:
        raise SdpError(f"candidate field out of range: {text!r}")
    extras = dict(zip(bits[8::2], bits[9::2], strict=False))
    return Candidate(
        foundation=bits[0],
        component=component,
        transport=bits[2].lower(),
        priority=priority,
        address=bits[4],
        port=port,
        type=bits[7],
        tcptype=extras.get("tcptype"),
    )


@dataclass(frozen=True)
class SdpSummary:
    """What the driver needs of a browser's own SDP (its first media section)."""

    ufrag: str
    pwd: str
    mid: str
    candidates: tuple[str, ...]  # candidate attribute values, in SDP order


def parse_sdp(sdp: str) -> SdpSummary:
    """ICE credentials, mid and candidates of an SDP (session-level credentials count too)."""
    values: dict[str, str] = {}
    candidates: list[str] = []
    media_sections = 0
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            media_sections += 1
            if media_sections > 1:
                break  # max-bundle: the first section carries the transport
            continue
        if not line.startswith("a="):
            continue
        key, _, value = line[2:].partition(":")
        if key == "candidate":
            candidates.append(value.strip())
        elif key in ("ice-ufrag", "ice-pwd", "mid"):
            values[key] = value.strip()
    if "ice-ufrag" not in values or "ice-pwd" not in values:
        raise SdpError("SDP without ICE credentials")
    return SdpSummary(
        values["ice-ufrag"], values["ice-pwd"], values.get("mid", "0"), tuple(candidates)
    )


def usable_remote_candidates(values: list[str]) -> list[str]:
    """The peer's UDP candidates a browser can check (well formed, IPv4 or IPv6), bounded."""
    kept: list[str] = []
    for value in values:
        try:
            candidate = parse_candidate(value)
        except SdpError:
            continue
        if candidate.transport == "udp" and candidate.component == 1:
            kept.append(candidate_value(value))
        if len(kept) >= MAX_REMOTE_CANDIDATES:
            break
    return kept


def synthesize_sdp(
    ufrag: str, pwd: str, candidates: list[str], *, offer: bool, mid: str = "0"
) -> str:
    """A data-channel SDP for a peer that sent only ICE credentials and candidates."""
    if not ufrag or not pwd or any(c.isspace() for c in ufrag + pwd):
        raise SdpError("ICE ufrag and pwd must be non-empty and without spaces")
    lines = [
        "v=0",
        "o=natlab 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        f"a=group:BUNDLE {mid}",
        "a=msid-semantic: WMS",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "c=IN IP4 0.0.0.0",
        f"a=ice-ufrag:{ufrag}",
        f"a=ice-pwd:{pwd}",
        f"a=fingerprint:sha-256 {DUMMY_FINGERPRINT}",
        f"a=setup:{'actpass' if offer else 'active'}",
        f"a=mid:{mid}",
        f"a=sctp-port:{SCTP_PORT}",
        "a=max-message-size:262144",
    ]
    lines += [f"a=candidate:{value}" for value in usable_remote_candidates(candidates)]
    lines.append("a=end-of-candidates")
    return "\r\n".join(lines) + "\r\n"
