"""The ICE agent's result line: pure helpers (no sockets, no clock reads, no aioice).

One JSON object per agent run, keys in the vocabulary of DESIGN.md's result schema. Values that
are not known are ``None`` (JSON ``null``), never made up. ``outcome`` is this side's view:

- ``direct``: the nominated local and remote candidates are host, srflx or prflx;
- ``relay-udp`` / ``relay-tcp`` / ``relay-tls``: the nominated local candidate is a relay
  candidate, allocated over that client-to-TURN transport;
- ``relay-remote``: only the remote candidate is a relay candidate (the caller combines both
  sides' results into the row's ``relay-<proto>``);
- ``fail``: this side did not connect.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from reports.vocabulary import RELAY_PROTOCOLS, RELAY_REMOTE, Outcome, relay_outcome

DIRECT_TYPES = frozenset({"host", "srflx", "prflx"})
CANDIDATE_KINDS = ("host", "srflx", "relay-udp", "relay-tcp", "relay-tls")

# Short error reasons (the ``error`` field); "peer-<reason>" relays the peer's own reason.
ERRORS = (
    "usage",
    "gather-failed",
    "signaling-failed",
    "ice-failed",
    "exchange-failed",
    "throughput-failed",
    "timeout",
    "peer-left",
    "terminated",
    "internal-error",
    "browser-failed",  # a browser agent's browser would not start, crashed or hung
    "not-installed",  # the implementation cannot run here (its log says what is missing)
)

# libwebrtc's type preferences for relay candidates (p2p/base/port.h, ICE_TYPE_PREFERENCE_RELAY_*):
# relay over UDP > relay over TCP > relay over TLS, all below srflx (100) and host (126).
RELAY_TYPE_PREFERENCE = {"udp": 2, "tcp": 1, "tls": 0}


def relay_candidate_priority(component: int, relay_protocol: str, local_pref: int = 65535) -> int:
    """RFC 8445 §5.1.2.1 priority of a relay candidate, ordered by client-to-TURN transport."""
    type_pref = RELAY_TYPE_PREFERENCE[relay_protocol]
    return (1 << 24) * type_pref + (1 << 8) * local_pref + (256 - component)


def classify_outcome(
    local_type: str | None, remote_type: str | None, relay_protocol: str | None
) -> str:
    """This side's outcome from the nominated pair's candidate types (None: not connected)."""
    if local_type is None or remote_type is None:
        return Outcome.FAIL
    if local_type == "relay":
        if relay_protocol not in RELAY_PROTOCOLS:
            raise ValueError(f"relay candidate with unknown TURN transport {relay_protocol!r}")
        return relay_outcome(relay_protocol)
    if local_type not in DIRECT_TYPES:
        raise ValueError(f"unknown local candidate type {local_type!r}")
    if remote_type == "relay":
        return RELAY_REMOTE
    if remote_type not in DIRECT_TYPES:
        raise ValueError(f"unknown remote candidate type {remote_type!r}")
    return Outcome.DIRECT


def candidate_kind(candidate_type: str, relay_protocol: str | None) -> str:
    """Key of candidates_gathered: host, srflx, relay-udp, relay-tcp or relay-tls."""
    if candidate_type == "relay":
        if relay_protocol not in RELAY_PROTOCOLS:
            raise ValueError(f"relay candidate with unknown TURN transport {relay_protocol!r}")
        return f"relay-{relay_protocol}"
    if candidate_type in ("host", "srflx"):
        return candidate_type
    raise ValueError(f"unexpected local candidate type {candidate_type!r}")


def count_candidates(kinds: Iterable[str]) -> dict[str, int]:
    counts = dict.fromkeys(CANDIDATE_KINDS, 0)
    for kind in kinds:
        if kind not in counts:
            raise ValueError(f"unknown candidate kind {kind!r}")
        counts[kind] += 1
    return counts


def format_candidate(host: str | None, port: int | None, candidate_type: str | None) -> str | None:
    """ "ip:port typ" ("[v6]:port typ" for IPv6), or None if anything is unknown."""
    if host is None or port is None or candidate_type is None:
        return None
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port} {candidate_type}"


def median_ms(samples_s: Sequence[float]) -> float | None:
    """Median of round-trip times given in seconds, in milliseconds (3 decimals), or None."""
    if not samples_s:
        return None
    return round(statistics.median(samples_s) * 1000.0, 3)


def throughput_mbps(received_bytes: int, seconds: float) -> float | None:
    """Goodput in Mbit/s over the sender's sending window, or None when it is not measurable."""
    if seconds <= 0 or received_bytes < 0:
        return None
    return round(received_bytes * 8 / seconds / 1e6, 3)


@dataclass
class AgentResult:
    """Everything one agent reports; filled in as the run goes, so a watchdog can print it."""

    peer: str
    role: str
    started_at: str
    impl: str | None = None  # reports.vocabulary.AGENT_IMPLS
    impl_version: str | None = None  # e.g. "aioice 0.10.1", "Chromium 156.0.8078.114"
    outcome: str = Outcome.FAIL
    local_type: str | None = None
    remote_type: str | None = None
    relay_protocol: str | None = None
    local_candidate: str | None = None
    remote_candidate: str | None = None
    time_to_connect_s: float | None = None
    checks_sent: int | None = None
    rtt_ms: float | None = None
    throughput_mbps: float | None = None
    candidates_gathered: dict[str, int] = field(default_factory=lambda: count_candidates(()))
    error: str | None = None
    duration_s: float | None = None

    def set_pair(
        self,
        local: tuple[str, int, str],
        remote: tuple[str, int, str],
        relay_protocol: str | None,
    ) -> None:
        """Record the nominated pair ((host, port, type) each) and derive the outcome."""
        self.local_type, self.remote_type = local[2], remote[2]
        self.relay_protocol = relay_protocol if local[2] == "relay" else None
        self.local_candidate = format_candidate(*local)
        self.remote_candidate = format_candidate(*remote)
        self.outcome = classify_outcome(self.local_type, self.remote_type, self.relay_protocol)

    def fail(self, reason: str) -> None:
        """Record the first error only: later ones are consequences of it."""
        if self.error is None:
            self.error = reason

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentResult:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown result keys {sorted(unknown)}")
        return cls(**dict(data))

    @classmethod
    def from_json(cls, line: str) -> AgentResult:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("result line is not a JSON object")
        return cls.from_dict(data)
