"""The lab's signaling messages, each kind defined once (one JSON object per line).

The signaling server (``lab.agents.signaling``) understands ``join`` and answers ``joined``,
``peer-joined``, ``peer-left`` and ``error``; every other kind is forwarded verbatim between
the two peers of a room, so every agent implementation speaks the kinds below. An agent in
another language (a browser page, a Go program) writes the same objects.

An agent's run, in messages: ``join`` -> ``joined``; the controlling side sends ``offer``, the
controlled side ``answer`` (ICE ufrag/pwd and candidates as RFC 8839 ``candidate:`` lines);
each sends ``connected`` once its pair is nominated and waits for the peer's; the data
exchange runs over the connection; the controlling side may run a bulk-throughput test
(``throughput-start``, ``throughput-end``, ``throughput-result``); each sends ``done`` and
stays until the peer's ``done`` (DESIGN.md: a side that leaves at once can strand its peer).
An agent that gives up sends ``bye`` so its peer ends at once with error ``peer-<reason>``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, NotRequired, TypedDict


class Kind(StrEnum):
    """The ``type`` of a signaling message."""

    JOIN = "join"
    JOINED = "joined"
    PEER_JOINED = "peer-joined"
    PEER_LEFT = "peer-left"
    ERROR = "error"
    OFFER = "offer"
    ANSWER = "answer"
    CONNECTED = "connected"
    DONE = "done"
    THROUGHPUT_START = "throughput-start"
    THROUGHPUT_END = "throughput-end"
    THROUGHPUT_RESULT = "throughput-result"
    BYE = "bye"
    CLOSED = "_closed"  # never on the wire: the client's queue says the connection ended


# ---------------------------------------------------------------- the server's own kinds


class Join(TypedDict):
    type: Literal["join"]
    room: str
    peer: str


class Joined(TypedDict):
    type: Literal["joined"]
    room: str
    peer: str
    peers: list[str]  # who is in the room now, the joiner included


class PeerJoined(TypedDict):
    type: Literal["peer-joined"]
    peer: str


class PeerLeft(TypedDict):
    type: Literal["peer-left"]
    peer: str


class Error(TypedDict):
    type: Literal["error"]
    error: str  # e.g. room-full, peer-exists, already-joined, not-joined, message-too-large
    detail: NotRequired[Any]


# ---------------------------------------------------------------- between the two agents


class Candidate(TypedDict):
    sdp: str  # RFC 8839 section 5.1 "candidate:" attribute value
    relay_protocol: str | None  # client-to-TURN transport of a relay candidate: udp|tcp|tls


class ThroughputPlan(TypedDict):
    mbps: float
    seconds: float


class Description(TypedDict):
    """``offer`` from the controlling side, ``answer`` from the controlled side."""

    type: Literal["offer", "answer"]
    peer: str
    role: str  # controlling | controlled
    ufrag: str
    pwd: str
    candidates: list[Candidate]
    throughput: ThroughputPlan | None  # the controlling side's bulk test, if any
    impl: NotRequired[str]  # reports.vocabulary.AgentImpl of the sender
    data: NotRequired[list[str]]  # lab.agents.contract.DataPlane values, preferred first
    sdp: NotRequired[str]  # the sender's full SDP, for a peer that can use it (browsers)


class Connected(TypedDict):
    type: Literal["connected"]
    peer: str
    outcome: str  # the sender's view (reports.vocabulary.AGENT_VIEWS)
    local: str | None
    remote: str | None


class Done(TypedDict):
    type: Literal["done"]
    peer: str
    rtt_ms: float | None
    throughput_mbps: float | None


class ThroughputStart(TypedDict):
    type: Literal["throughput-start"]
    mbps: float
    seconds: float


class ThroughputEnd(TypedDict):
    type: Literal["throughput-end"]
    packets: int
    bytes: int
    duration_s: float


class ThroughputResult(TypedDict):
    type: Literal["throughput-result"]
    mbps: float | None
    bytes: int
    packets: int


class Bye(TypedDict):
    type: Literal["bye"]
    reason: str


Message = (
    Join
    | Joined
    | PeerJoined
    | PeerLeft
    | Error
    | Description
    | Connected
    | Done
    | ThroughputStart
    | ThroughputEnd
    | ThroughputResult
    | Bye
)
