"""The agent contract: what every ICE implementation in the lab takes, says and prints.

An agent is one process started on a lab host, one side of a call. Whatever its language or
library (aioice, a browser driven by Python, a Go program, libnice), it

1. takes the same inputs, as the command line ``AgentInputs.to_argv`` writes (below);
2. joins its room on the lab's signaling server (TLS on TCP 443, ``lab.agents.messages``),
   sends its ICE description (``offer`` from the controlling side ``a``, ``answer`` from the
   controlled side ``b``) with its ufrag, pwd and every gathered candidate (no trickle), and
   connects with the peer's description;
3. reports ``connected``, waits for the peer's, exchanges ``--exchange`` pings over the data
   plane both sides speak (``DataPlane``) for the RTT, runs the bulk-throughput test when
   ``--throughput-mbps`` is given (the controlling side sends), then sends ``done`` and stays
   until the peer's ``done`` or the timeout;
4. appends timestamped events to ``--events`` (``Event``, one JSON object per line) as it goes;
5. prints exactly one JSON line on stdout, an ``lab.agents.agent_result.AgentResult`` with its
   ``impl`` and ``impl_version``, and exits within ``--timeout`` seconds: 0 when it connected
   without error, 1 otherwise, 2 for a bad command line.

A value an implementation does not expose (checks sent, RTT) is ``null``, never made up.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO

from relay.turn.auth import rest_password

# Bounds every implementation applies to its inputs.
MIN_TIMEOUT_S = 2.0
MAX_EXCHANGE = 1000
MAX_THROUGHPUT_MBPS = 1000.0
MAX_THROUGHPUT_SECONDS = 60.0
DEFAULT_EXCHANGE = 10
TURN_TRANSPORTS = ("udp", "tcp", "tls")
DEFAULT_PORTS = {"signaling": 443, "stun": 3478, "udp": 3478, "tcp": 3478, "tls": 443}
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TURN_CREDENTIAL_TTL_S = 3600


def rest_credentials(secret: str, peer: str, now: float) -> tuple[str, str]:
    """The TURN REST recipe (seed 003) every agent uses with ``--turn-secret``: username
    "<expiry>:<peer>", password base64(HMAC-SHA1(secret, username))."""
    username = f"{int(now) + TURN_CREDENTIAL_TTL_S}:{peer}"
    return username, rest_password(secret, username)


class DataPlane(StrEnum):
    """What an agent can exchange data over once ICE has connected; a description lists the
    sender's, and the two sides use the first of the offerer's that the answerer also has.
    With none in common the call is still judged on ICE; RTT and throughput come from the
    implementation's ICE statistics where it has them, else they are NA."""

    DATAGRAM = "datagram"  # raw datagrams on the ICE pair (aioice, pion/ice): PING/PONG/BULK
    DATACHANNEL = "datachannel"  # a WebRTC data channel (DTLS + SCTP): browsers
    PSEUDOTCP = "pseudotcp"  # libnice's reliable agent (RFC 6544-less pseudo-TCP stream)


# The data-plane messages: the first 3 bytes say what a datagram (or stream record) is.
PING, PONG, BULK = b"NLP", b"NLR", b"NLT"
PING_SIZE, DATAGRAM_SIZE = 64, 1000  # bytes: a ping (padded), a bulk datagram


class EventKind(StrEnum):
    """Timeline events, in roughly the order a call produces them."""

    START = "start"
    JOINED = "joined"  # the signaling room
    GATHERED = "gathered"  # one local candidate; detail: its SDP
    GATHERING_DONE = "gathering-done"
    DESCRIPTION_SENT = "description-sent"
    DESCRIPTION_RECEIVED = "description-received"
    CHECK_SENT = "check-sent"  # an ICE connectivity check; detail: "local -> remote"
    CHECK_ANSWERED = "check-answered"
    NOMINATED = "nominated"  # detail: the selected pair
    CONNECTED = "connected"
    PEER_CONNECTED = "peer-connected"
    EXCHANGED = "exchanged"  # detail: RTT
    FAILED = "failed"  # detail: the error
    DONE = "done"


@dataclass(frozen=True)
class Event:
    t: float  # Unix time, seconds
    peer: str
    impl: str
    event: str  # EventKind
    detail: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {"t": round(self.t, 6), "peer": self.peer, "impl": self.impl, "event": self.event,
             "detail": self.detail}, separators=(",", ":"),
        )  # fmt: skip

    @classmethod
    def from_json(cls, line: str) -> Event:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("event line is not a JSON object")
        return cls(
            t=float(data["t"]),
            peer=str(data["peer"]),
            impl=str(data["impl"]),
            event=str(data["event"]),
            detail=None if data.get("detail") is None else str(data["detail"]),
        )


class EventLog:
    """Appends events to the ``--events`` file (line-buffered, so a killed agent loses at most
    the line it was writing); without a file it records nothing."""

    def __init__(self, path: str | None, peer: str, impl: str) -> None:
        self.peer, self.impl = peer, impl
        self._file: IO[str] | None = open(path, "a", buffering=1) if path else None  # noqa: SIM115

    def emit(self, kind: EventKind, detail: str | None = None) -> None:
        if self._file is not None:
            event = Event(time.time(), self.peer, self.impl, kind.value, detail)
            self._file.write(event.to_json() + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_events(path: Path) -> list[Event]:
    """Every well-formed event of a file, in file order; a torn last line is skipped."""
    events: list[Event] = []
    if not path.exists():
        return events
    for line in path.read_text(errors="replace").splitlines():
        try:
            events.append(Event.from_json(line))
        except (ValueError, KeyError, TypeError):
            continue
    return events


@dataclass(frozen=True)
class HostPort:
    host: str  # an IP address or a name (a TLS server's name, e.g. turn.lab.test)
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_hostport(text: str, default_port: int) -> HostPort:
    """``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT``; ValueError otherwise."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":") if rest else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"{text!r}: no host")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ValueError(f"{text!r}: port is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: port out of range")
    return HostPort(host, port)


@dataclass(frozen=True)
class TurnServer:
    transport: str  # udp | tcp | tls (client-to-TURN)
    address: HostPort  # for tls, host is the name the certificate is checked against


@dataclass(frozen=True)
class AgentInputs:
    """The inputs every implementation takes (the command line below is their wire form)."""

    peer: str  # "a" (controlling, offers) or "b" (controlled, answers)
    room: str
    signaling: HostPort
    timeout: float
    controlling: bool = False
    signaling_name: str | None = None  # TLS name of the signaling server (default: its host)
    cafile: str | None = None  # the lab CA, PEM: signaling TLS and TURN over TLS
    stun: HostPort | None = None
    turn: tuple[TurnServer, ...] = ()
    turn_secret: str | None = None  # TURN REST secret: credentials made as the seed's recipe
    realm: str = "natlab"
    policy: str = "all"  # all | relay (iceTransportPolicy)
    exchange: int = DEFAULT_EXCHANGE
    throughput_mbps: float | None = None
    throughput_seconds: float | None = None
    events: str | None = None  # the timeline file (JSON lines)
    workdir: str | None = None  # the agent's own directory: $HOME, browser profile, logs
    extra: tuple[str, ...] = field(default=(), compare=False)  # implementation-only flags

    def __post_init__(self) -> None:
        if self.peer not in ("a", "b"):
            raise ValueError(f"--peer {self.peer!r}: want a or b")
        if self.controlling != (self.peer == "a"):
            raise ValueError("peer a is the controlling side and peer b the controlled one")
        if self.timeout < MIN_TIMEOUT_S:
            raise ValueError(f"--timeout must be at least {MIN_TIMEOUT_S:g} s")
        if self.policy not in ("all", "relay"):
            raise ValueError(f"--policy {self.policy!r}: want all or relay")
        if not 0 <= self.exchange <= MAX_EXCHANGE:
            raise ValueError(f"--exchange must be within 0..{MAX_EXCHANGE}")
        if (self.throughput_mbps is None) != (self.throughput_seconds is None):
            raise ValueError("--throughput-mbps and --throughput-seconds go together")
        if self.throughput_mbps is not None and self.throughput_seconds is not None:
            if not 0 < self.throughput_mbps <= MAX_THROUGHPUT_MBPS:
                raise ValueError(f"--throughput-mbps must be within (0, {MAX_THROUGHPUT_MBPS:g}]")
            if not 0 < self.throughput_seconds <= MAX_THROUGHPUT_SECONDS:
                raise ValueError(
                    f"--throughput-seconds must be within (0, {MAX_THROUGHPUT_SECONDS:g}]"
                )
        if self.turn and not self.turn_secret:
            raise ValueError("TURN needs --turn-secret")
        if any(t.transport == "tls" for t in self.turn) and not self.cafile:
            raise ValueError("--cafile is needed for --turn-tls")

    @property
    def role(self) -> str:
        return "controlling" if self.controlling else "controlled"

    def turn_for(self, transport: str) -> HostPort | None:
        return next((t.address for t in self.turn if t.transport == transport), None)

    def to_argv(self) -> list[str]:
        """The command-line form, read back by ``parse_inputs`` (and by non-Python agents)."""
        argv = ["--peer", self.peer, "--controlling" if self.controlling else "--controlled"]
        argv += ["--room", self.room, "--signaling", str(self.signaling)]
        argv += ["--timeout", f"{self.timeout:g}", "--policy", self.policy, "--realm", self.realm]
        argv += ["--exchange", str(self.exchange)]
        optional = {
            "--signaling-name": self.signaling_name,
            "--cafile": self.cafile,
            "--stun": None if self.stun is None else str(self.stun),
            "--turn-secret": self.turn_secret,
            "--events": self.events,
            "--workdir": self.workdir,
        }
        for flag, value in optional.items():
            if value is not None:
                argv += [flag, value]
        for server in self.turn:
            argv += [f"--turn-{server.transport}", str(server.address)]
        if self.throughput_mbps is not None and self.throughput_seconds is not None:
            argv += ["--throughput-mbps", f"{self.throughput_mbps:g}"]
            argv += ["--throughput-seconds", f"{self.throughput_seconds:g}"]
        return [*argv, *self.extra]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The contract's flags, for an implementation's own parser (it may add its own)."""
    p.add_argument("--peer", required=True, choices=("a", "b"))
    role = p.add_mutually_exclusive_group(required=True)
    role.add_argument("--controlling", action="store_true")
    role.add_argument("--controlled", action="store_true")
    p.add_argument("--room", required=True)
    p.add_argument("--signaling", required=True, metavar="HOST:PORT", help="default port 443")
    p.add_argument("--signaling-name", help="TLS name to verify (default: the signaling host)")
    p.add_argument("--cafile", help="lab CA (PEM) for signaling TLS and TURN over TLS")
    p.add_argument("--stun", metavar="HOST:PORT")
    for transport in TURN_TRANSPORTS:
        p.add_argument(f"--turn-{transport}", metavar="HOST:PORT")
    p.add_argument("--turn-secret", help="TURN REST shared secret (static-auth-secret)")
    p.add_argument("--realm", default="natlab", help="TURN realm (the server announces it)")
    p.add_argument("--policy", choices=("all", "relay"), default="all")
    p.add_argument("--timeout", type=float, required=True, metavar="SECONDS")
    p.add_argument("--exchange", type=int, default=DEFAULT_EXCHANGE, metavar="N")
    p.add_argument("--throughput-mbps", type=float, metavar="X")
    p.add_argument("--throughput-seconds", type=float, metavar="T")
    p.add_argument("--events", metavar="FILE", help="append timeline events (JSON lines)")
    p.add_argument("--workdir", metavar="DIR", help="the agent's own directory ($HOME, profile)")


def inputs_from_args(args: argparse.Namespace) -> AgentInputs:
    """Validate a parsed command line; ValueError with the reason otherwise."""
    turn = tuple(
        TurnServer(t, parse_hostport(value, DEFAULT_PORTS[t]))
        for t in TURN_TRANSPORTS
        if (value := getattr(args, f"turn_{t}")) is not None
    )
    return AgentInputs(
        peer=args.peer,
        controlling=bool(args.controlling),
        room=args.room,
        signaling=parse_hostport(args.signaling, DEFAULT_PORTS["signaling"]),
        signaling_name=args.signaling_name,
        cafile=args.cafile,
        stun=None if args.stun is None else parse_hostport(args.stun, DEFAULT_PORTS["stun"]),
        turn=turn,
        turn_secret=args.turn_secret,
        realm=args.realm,
        policy=args.policy,
        timeout=args.timeout,
        exchange=args.exchange,
        throughput_mbps=args.throughput_mbps,
        throughput_seconds=args.throughput_seconds,
        events=args.events,
        workdir=args.workdir,
    )


def parse_inputs(argv: Sequence[str], prog: str = "agent") -> AgentInputs:
    parser = argparse.ArgumentParser(prog=prog)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return inputs_from_args(args)
    except ValueError as err:
        parser.error(str(err))
        raise  # parser.error exits; this satisfies the type checker


@dataclass(frozen=True)
class Implementation:
    """How the lab starts, names and checks one implementation (``lab.agents.registry``)."""

    name: str  # reports.vocabulary.AgentImpl
    # argv that starts the agent, up to (not including) the contract's flags
    command: Callable[[], list[str]]
    version: Callable[[], str | None]  # e.g. "Chromium 156.0.8078.114"; None if unknown
    missing: Callable[[], str | None]  # None when it can run here, else what is missing + fix
    data_planes: tuple[DataPlane, ...]  # what it can exchange data over, preferred first

    def argv(self, inputs: AgentInputs) -> list[str]:
        return [*self.command(), *inputs.to_argv()]
