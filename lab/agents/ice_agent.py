"""natlab's ICE agent: one side of a call, built on aioice, run as a process on a lab host.

    python -m lab.agents.ice_agent --peer a --controlling --room R --signaling IP:PORT \\
        --cafile CA.pem [--stun IP:PORT] [--turn-udp IP:PORT] [--turn-tcp IP:PORT] \\
        [--turn-tls IP:PORT] --turn-secret S --realm natlab --policy all|relay --timeout 30 \\
        [--exchange 10] [--throughput-mbps X --throughput-seconds T]

Prints exactly one JSON line (``lab.agents.agent_result.AgentResult``) on stdout and exits
within ``--timeout`` seconds: a soft deadline ends the run and closes everything in time, and a
watchdog thread prints the result and ends the process if that ever hangs. Logs go to stderr.

Sequence (both peers): join the room on the signaling server (TLS, newline-delimited JSON);
gather candidates; send ufrag/pwd/candidates ("offer" from the controlling side, "answer" from
the controlled side); wait for the peer's; connect (aioice); send "connected"; once the peer is
connected too, ping the peer ``--exchange`` times (and echo its pings) for the median RTT; the
controlling side then optionally sends 1000-byte datagrams at ``--throughput-mbps`` for
``--throughput-seconds``, and the controlled side reports the goodput back through signaling;
send "done" and stay up until the peer's "done" arrives (DESIGN.md: an aioice agent that closed
right after its own connect left its peer unconnected in 2 of 6 runs). A failing side sends
``{"type":"bye","reason":R}`` so its peer ends at once with error "peer-R".

Several TURN transports with aioice: aioice's Connection allocates from one TURN server over one
transport. ``LabConnection`` subclasses it and overrides candidate gathering (host and srflx as
aioice does, reusing its ``server_reflexive_candidate`` and ``relayed_candidate`` helpers) to
allocate once per offered TURN transport in parallel. Each relay candidate gets libwebrtc's
type preference for its client-to-TURN transport (UDP 2 > TCP 1 > TLS 0) and its own foundation,
so checks run in that order. Nomination is regular, not aioice's aggressive one: the controlling
side nominates the best succeeded pair once no better pair is pending (or ``--nomination-wait``
after the first success), so a quick relay check cannot beat a direct pair that needs a
retransmission to punch its hole, and both sides select the same pair. TURN over TLS
passes an ``ssl.SSLContext`` trusting ``--cafile`` as ``turn_ssl``, which aioice hands to
``loop.create_connection(ssl=...)`` (the relay's certificate needs an IP SAN for its address).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import logging
import os
import signal
import ssl
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import aioice
import aioice.ice
from aioice import stun
from aioice.candidate import Candidate, candidate_foundation

from lab.agents import messages as msg
from lab.agents.agent_result import (
    AgentResult,
    candidate_kind,
    count_candidates,
    median_ms,
    relay_candidate_priority,
    throughput_mbps,
)
from lab.agents.messages import (
    Bye,
    Connected,
    Description,
    Done,
    Join,
    Kind,
    ThroughputEnd,
    ThroughputPlan,
    ThroughputResult,
    ThroughputStart,
)
from lab.agents.signaling import SignalingClient, SignalingError, parse_hostport
from relay.turn.auth import rest_password

log = logging.getLogger("natlab.ice_agent")

T = TypeVar("T")

TURN_CREDENTIAL_TTL_S = 3600
GATHER_TIMEOUT_S = 5.0
NOMINATION_WAIT_S = 2.0  # longest wait for a better pair once one pair has succeeded
SIGNALING_CONNECT_RETRY_S = 0.25
HARD_MARGIN_S = 0.6  # the watchdog fires this long before --timeout (interpreter start-up)
PING_TIMEOUT_S = 1.0
PING_SIZE = 64
DATAGRAM_SIZE = 1000
MAX_THROUGHPUT_MBPS = 1000.0
MAX_THROUGHPUT_SECONDS = 60.0
MAX_EXCHANGE = 1000
MAX_REMOTE_CANDIDATES = 64
DRAIN_QUIET_S = 0.3
DRAIN_MAX_S = 1.5
MIN_TIMEOUT_S = 3.0

PING, PONG, BULK = b"NLP", b"NLR", b"NLT"


class AgentAbort(Exception):
    """Ends the run with a short error reason (the result's ``error``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- TURN servers and credentials ------------------------------------------------------------


@dataclass(frozen=True)
class TurnServer:
    protocol: str  # client-to-TURN transport: udp | tcp | tls
    addr: tuple[str, int]
    username: str
    password: str
    ssl_context: ssl.SSLContext | None = None

    @property
    def aioice_transport(self) -> str:
        return "udp" if self.protocol == "udp" else "tcp"

    def __str__(self) -> str:
        return f"turn-{self.protocol} {self.addr[0]}:{self.addr[1]}"


def turn_rest_credentials(secret: str, peer: str, now: float) -> tuple[str, str]:
    """The TURN REST recipe (seed 003): username "<expiry>:<peer>", HMAC-SHA1 password."""
    username = f"{int(now) + TURN_CREDENTIAL_TTL_S}:{peer}"
    return username, rest_password(secret, username)


# --- aioice extension --------------------------------------------------------------------------


class _CountingStunProtocol(aioice.ice.StunProtocol):
    """aioice's StunProtocol, counting the connectivity checks (Binding requests with USERNAME,
    retransmissions included) it sends."""

    def send_stun(self, message: stun.Message, addr: tuple[str, int]) -> None:
        if (
            message.message_class == stun.Class.REQUEST
            and message.message_method == stun.Method.BINDING
            and "USERNAME" in message.attributes
        ):
            receiver = cast("LabConnection", self.receiver)
            receiver.checks_sent += 1
        super().send_stun(message, addr)


class LabConnection(aioice.Connection):
    """An aioice Connection that gathers a relay candidate from every offered TURN transport.

    ``host_addresses`` restricts host candidates to the given addresses (default: aioice's
    choice, every non-loopback address of the host, which in a lab namespace is its lab
    addresses).
    """

    def __init__(
        self,
        *,
        ice_controlling: bool,
        stun_server: tuple[str, int] | None = None,
        turn_servers: Sequence[TurnServer] = (),
        transport_policy: aioice.TransportPolicy = aioice.TransportPolicy.ALL,
        host_addresses: Sequence[str] | None = None,
        use_ipv6: bool = False,
        gather_timeout: float = GATHER_TIMEOUT_S,
        nomination_wait: float = NOMINATION_WAIT_S,
    ) -> None:
        super().__init__(
            ice_controlling=ice_controlling,
            stun_server=stun_server,
            use_ipv4=True,
            use_ipv6=use_ipv6,
            transport_policy=transport_policy,
        )
        self.turn_servers = tuple(turn_servers)
        self.host_addresses = None if host_addresses is None else tuple(host_addresses)
        self.gather_timeout = gather_timeout
        self.checks_sent = 0
        self.relay_protocols: dict[int, str] = {}  # StunProtocol.id -> udp | tcp | tls
        self.gather_failures: list[str] = []
        self.nomination_wait = nomination_wait
        self._first_success: float | None = None
        self._nominator: asyncio.Task[None] | None = None

    # gathering

    async def gather_candidates(self) -> None:
        if self._local_candidates_start:
            return
        self._local_candidates_start = True
        addresses: list[str] = []
        if self._transport_policy == aioice.TransportPolicy.ALL:
            if self.host_addresses is not None:
                addresses = list(self.host_addresses)
            else:
                addresses = aioice.ice.get_host_addresses(
                    use_ipv4=self._use_ipv4, use_ipv6=self._use_ipv6
                )
        coros = [
            self.get_component_candidates(
                component=component, addresses=addresses, timeout=self.gather_timeout
            )
            for component in sorted(self._components)
        ]
        for candidates in await asyncio.gather(*coros):
            self._local_candidates += candidates
        self._local_candidates_end = True

    async def get_component_candidates(  # type: ignore[override]
        self, component: int, addresses: list[str], timeout: float = GATHER_TIMEOUT_S
    ) -> list[Candidate]:
        loop = asyncio.get_running_loop()
        candidates: list[Candidate] = []

        # Host candidates, as aioice gathers them, on counting protocols.
        host_protocols: list[aioice.ice.StunProtocol] = []
        for address in addresses:
            try:
                _, protocol = await loop.create_datagram_endpoint(
                    lambda: _CountingStunProtocol(self), local_addr=(address, 0)
                )
            except OSError as exc:
                self.gather_failures.append(f"host {address}: {exc}")
                log.warning("cannot bind a host candidate on %s: %s", address, exc)
                continue
            host, port = protocol.transport.get_extra_info("sockname")[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=aioice.ice.candidate_priority(component, "host"),
                host=host,
                port=port,
                type="host",
            )
            host_protocols.append(protocol)
            candidates.append(protocol.local_candidate)
        self._protocols += host_protocols

        # Server-reflexive (IPv4 only, as aioice) and relay candidates, in parallel.
        labels: dict[asyncio.Task[Any], str] = {}
        if self.stun_server is not None:
            for protocol in host_protocols:
                if ":" not in protocol.local_candidate.host:
                    task = asyncio.create_task(
                        aioice.ice.server_reflexive_candidate(protocol, self.stun_server)
                    )
                    labels[task] = f"srflx {protocol.local_candidate.host} via STUN"
        for server in self.turn_servers:
            task = asyncio.create_task(self._relay_candidate(component, server))
            labels[task] = str(server)

        if labels:
            done, pending = await asyncio.wait(labels, timeout=timeout)
            for task in pending:
                task.cancel()
                self.gather_failures.append(f"{labels[task]}: no answer in {timeout:g} s")
                log.warning("gathering %s: no answer in %g s", labels[task], timeout)
            if pending:
                await asyncio.wait(pending, timeout=1.0)
            for task in labels:  # in submission order: srflx first, then TURN as offered
                if task not in done:
                    continue
                exc = task.exception()
                if exc is not None:
                    self.gather_failures.append(f"{labels[task]}: {exc!r}")
                    log.warning("gathering %s failed: %r", labels[task], exc)
                    continue
                candidate, relay_protocol = task.result()
                if candidate.type == "srflx" and _redundant(candidate, candidates):
                    log.info("srflx %s equals its base, not offered", _addr(candidate))
                    continue
                candidates.append(candidate)
                if relay_protocol is not None:
                    self._protocols.append(relay_protocol)
        return candidates

    async def _relay_candidate(
        self, component: int, server: TurnServer
    ) -> tuple[Candidate, aioice.ice.StunProtocol]:
        candidate, protocol = await aioice.ice.relayed_candidate(
            component=component,
            hide_related_address=self._transport_policy == aioice.TransportPolicy.RELAY,
            protocol_factory=lambda: _CountingStunProtocol(self),
            turn_server=server.addr,
            turn_username=server.username,
            turn_password=server.password,
            # aioice passes this on to loop.create_connection(ssl=...): a context verifying
            # the lab CA for TLS, False for plain TCP/UDP.
            turn_ssl=cast(bool, server.ssl_context or False),
            turn_transport=server.aioice_transport,
        )
        # One foundation per TURN server and transport (RFC 8445 §5.1.1.3), libwebrtc's order.
        candidate.foundation = candidate_foundation(
            "relay", f"udp-turn-{server.protocol}", f"{candidate.host}-{server.addr[0]}"
        )
        candidate.priority = relay_candidate_priority(component, server.protocol)
        self.relay_protocols[protocol.id] = server.protocol
        return candidate, protocol

    # nomination: regular, by the controlling agent (RFC 8445 §8.1.1)
    #
    # aioice nominates aggressively: every check of the controlling side carries USE-CANDIDATE
    # and the first pair to succeed wins. A relay pair then beats a higher-priority direct pair
    # whose hole punching needs a retransmission, and the two sides may select different pairs
    # (seen on loopback: relay-udp on one side, relay-tcp on the other). Here checks carry no
    # USE-CANDIDATE; once the best succeeded pair has no pending pair of higher priority left,
    # or nomination_wait seconds after the first success, the controlling side nominates it.

    async def connect(self) -> None:
        self._nominator = asyncio.get_running_loop().create_task(self._nominate_loop())
        try:
            await super().connect()
        finally:
            self._nominator.cancel()

    async def check_start(self, pair: aioice.ice.CandidatePair) -> None:
        """aioice 0.13's check_start, without aggressive nomination."""
        assert self.remote_password is not None
        self.check_state(pair, aioice.ice.CandidatePair.State.IN_PROGRESS)
        request = self.build_request(pair, nominate=False)
        try:
            _, addr = await pair.protocol.request(
                request, pair.remote_addr, integrity_key=self.remote_password.encode("utf8")
            )
        except stun.TransactionError as exc:
            if exc.response and exc.response.error_code == 487:  # role conflict (§7.2.5.1)
                if "ICE-CONTROLLING" in request.attributes:
                    self.switch_role(ice_controlling=False)
                elif "ICE-CONTROLLED" in request.attributes:
                    self.switch_role(ice_controlling=True)
                return await self.check_start(pair)
            self.check_state(pair, aioice.ice.CandidatePair.State.FAILED)
            self.check_complete(pair)
            return
        if addr != pair.remote_addr:  # §7.2.5.2.1
            self.check_state(pair, aioice.ice.CandidatePair.State.FAILED)
            self.check_complete(pair)
            return
        if pair.remote_nominated:  # the controlling peer nominated it already (§7.3.1.5)
            pair.nominated = True
        if self._first_success is None:
            self._first_success = time.monotonic()
        self.check_state(pair, aioice.ice.CandidatePair.State.SUCCEEDED)
        self.check_complete(pair)

    def _check_list_maybe_fail(self) -> None:
        # A succeeded pair is still to be nominated by _nominate_loop: not a failure yet.
        if self.ice_controlling and not self._check_list_done and self._best_succeeded():
            return
        super()._check_list_maybe_fail()

    def _best_succeeded(self) -> aioice.ice.CandidatePair | None:
        for pair in self._check_list:  # sorted by pair priority, highest first
            if pair.state == aioice.ice.CandidatePair.State.SUCCEEDED:
                return pair
        return None

    def _nomination_due(self, best: aioice.ice.CandidatePair) -> bool:
        if self._first_success is not None and (
            time.monotonic() - self._first_success >= self.nomination_wait
        ):
            return True
        failed = aioice.ice.CandidatePair.State.FAILED
        for pair in self._check_list:
            if pair is best:
                return True
            if pair.component == best.component and pair.state != failed:
                return False  # a better pair may still succeed
        return True

    async def _nominate_loop(self) -> None:
        """Runs during connect(); bounded by the number of pairs and by connect() itself."""
        while not self._check_list_done:
            await asyncio.sleep(0.02)
            if not self.ice_controlling or self._nominating:
                continue
            best = self._best_succeeded()
            if best is None or not self._nomination_due(best):
                continue
            await self._nominate(best)

    async def _nominate(self, pair: aioice.ice.CandidatePair) -> None:
        assert self.remote_password is not None
        log.info("nominating %s -> %s", _addr(pair.local_candidate), _addr(pair.remote_candidate))
        self._nominating.add(pair.component)
        request = self.build_request(pair, nominate=True)
        try:
            await pair.protocol.request(
                request, pair.remote_addr, integrity_key=self.remote_password.encode("utf8")
            )
        except stun.TransactionError:
            log.info("nomination of %s failed", pair)
            self._nominating.discard(pair.component)
            self.check_state(pair, aioice.ice.CandidatePair.State.FAILED)
            self.check_complete(pair)
            return
        pair.nominated = True
        self.check_complete(pair)

    # inspection (aioice 0.13 has no public accessors for these)

    def relay_protocol_of(self, candidate: Candidate) -> str | None:
        for protocol in self._protocols:
            if protocol.local_candidate is candidate:
                return self.relay_protocols.get(protocol.id)
        return None

    def selected_pair(self, component: int = 1) -> aioice.ice.CandidatePair | None:
        return self._nominated.get(component)


def _addr(candidate: Candidate) -> str:
    return f"{candidate.host}:{candidate.port}"


def _redundant(candidate: Candidate, others: Sequence[Candidate]) -> bool:
    """A srflx candidate equal to its base or to a candidate already kept (RFC 8445 §5.1.3)."""
    if (candidate.host, candidate.port) == (candidate.related_address, candidate.related_port):
        return True
    return any((c.host, c.port) == (candidate.host, candidate.port) for c in others)


# --- the data plane over the ICE connection ----------------------------------------------------


class DataPlane:
    """Receives everything from the ICE connection: echoes pings, matches pongs, counts bulk."""

    def __init__(self, conn: aioice.Connection) -> None:
        self.conn = conn
        self.pending: dict[int, asyncio.Future[float]] = {}
        self.bulk_bytes = 0
        self.bulk_packets = 0
        self.last_bulk = 0.0
        self.lost = False
        self._task = asyncio.get_running_loop().create_task(self._receive())

    async def _receive(self) -> None:
        while True:
            try:
                data = await self.conn.recv()
            except ConnectionError:
                self.lost = True
                return
            kind = data[:3]
            if kind == PING:
                with contextlib.suppress(ConnectionError):
                    await self.conn.send(PONG + data[3:])
            elif kind == PONG and len(data) >= 7:
                (seq,) = struct.unpack("!I", data[3:7])
                waiter = self.pending.pop(seq, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(time.monotonic())
            elif kind == BULK:
                self.bulk_bytes += len(data)
                self.bulk_packets += 1
                self.last_bulk = time.monotonic()

    async def ping(self, seq: int, timeout: float) -> float | None:
        """One round trip in seconds, or None if no answer within timeout."""
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.pending[seq] = waiter
        payload = PING + struct.pack("!I", seq)
        sent_at = time.monotonic()
        try:
            await self.conn.send(payload + bytes(PING_SIZE - len(payload)))
            return await asyncio.wait_for(waiter, timeout) - sent_at
        except (TimeoutError, ConnectionError):
            return None
        finally:
            self.pending.pop(seq, None)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self._task, 0.5)


# --- the agent ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentConfig:
    peer: str
    controlling: bool
    room: str
    signaling: tuple[str, int]
    signaling_tls: bool
    signaling_name: str | None
    cafile: str | None
    stun: tuple[str, int] | None
    turn_udp: tuple[str, int] | None
    turn_tcp: tuple[str, int] | None
    turn_tls: tuple[str, int] | None
    turn_secret: str | None
    realm: str
    policy: str
    timeout: float
    exchange: int
    throughput_mbps: float | None
    throughput_seconds: float | None
    host_ips: tuple[str, ...] | None
    gather_timeout: float
    ipv6: bool
    nomination_wait: float = NOMINATION_WAIT_S

    @property
    def role(self) -> str:
        return "controlling" if self.controlling else "controlled"

    @property
    def soft_margin(self) -> float:
        """Time kept after the soft deadline to say bye and close TURN allocations."""
        return min(3.0, max(1.0, 0.15 * self.timeout))


class Agent:
    def __init__(self, config: AgentConfig, result: AgentResult, t0: float) -> None:
        self.cfg = config
        self.result = result
        self.t0 = t0
        self.deadline = t0 + config.timeout - config.soft_margin
        self.hard_deadline = t0 + config.timeout - HARD_MARGIN_S
        self.sig: SignalingClient | None = None
        self.conn: LabConnection | None = None
        self.data: DataPlane | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        self._abort: asyncio.Future[str] = loop.create_future()
        self._remote_description: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._bulk_end: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._bulk_result: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._peer_connected = asyncio.Event()
        self._peer_done = asyncio.Event()
        self._bye_sent = False

    # helpers

    def abort(self, reason: str) -> None:
        if not self._abort.done():
            self._abort.set_result(reason)

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    async def _until(self, awaitable: Awaitable[T], what: str) -> T:
        """Await, unless the run is aborted (peer left, signaling lost...) or the deadline hits."""
        fut = asyncio.ensure_future(awaitable)
        remaining = self._remaining()
        if remaining > 0:
            await asyncio.wait({fut, self._abort}, timeout=remaining, return_when="FIRST_COMPLETED")
        if fut.done():
            return fut.result()
        fut.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(fut, 1.0)
        if self._abort.done():
            log.warning("%s: aborted (%s)", what, self._abort.result())
            raise AgentAbort(self._abort.result())
        log.warning("%s: deadline reached", what)
        raise AgentAbort("timeout")

    async def _send(self, message: msg.Message) -> None:
        assert self.sig is not None
        try:
            await self._until(self.sig.send(message), f"sending {message['type']}")
        except SignalingError as err:
            log.warning("signaling send failed: %s", err)
            raise AgentAbort("signaling-failed") from err

    # the run

    async def run(self) -> None:
        cfg = self.cfg
        await self._join()
        await self._gather()
        assert self.conn is not None
        await self._send(self._description())
        remote = await self._until(self._remote_description, "waiting for the peer's candidates")
        await self._apply_remote(remote)
        await self._connect()
        self.data = DataPlane(self.conn)
        await self._send(
            Connected(
                type="connected",
                peer=cfg.peer,
                outcome=self.result.outcome,
                local=self.result.local_candidate,
                remote=self.result.remote_candidate,
            )
        )
        await self._until(self._peer_connected.wait(), "waiting for the peer to connect")
        await self._exchange()
        if cfg.controlling and cfg.throughput_mbps:
            await self._throughput_send()
        elif not cfg.controlling and remote.get("throughput"):
            await self._throughput_receive()
        await self._send(
            Done(
                type="done",
                peer=cfg.peer,
                rtt_ms=self.result.rtt_ms,
                throughput_mbps=self.result.throughput_mbps,
            )
        )
        log.info("done; waiting for the peer's done")
        await self._until(self._peer_done.wait(), "waiting for the peer's done")
        log.info("peer done")

    async def _join(self) -> None:
        cfg = self.cfg
        ctx: ssl.SSLContext | None = None
        if cfg.signaling_tls:
            ctx = ssl.create_default_context(cafile=cfg.cafile)
        budget = min(self._remaining(), max(2.0, 0.3 * cfg.timeout))
        give_up = time.monotonic() + budget
        attempts = int(budget / SIGNALING_CONNECT_RETRY_S) + 1
        last_error: Exception | None = None
        for attempt in range(1, attempts + 1):
            left = give_up - time.monotonic()
            if left <= 0:
                break
            try:
                self.sig = await SignalingClient.connect(
                    cfg.signaling, ctx, server_hostname=cfg.signaling_name, timeout=min(5.0, left)
                )
                break
            except ssl.SSLError as err:  # a certificate problem does not go away by retrying
                last_error = err
                break
            except (OSError, TimeoutError) as err:
                last_error = err
                if attempt == 1:
                    log.info("signaling %s:%d: %s; retrying", *cfg.signaling, err)
                await asyncio.sleep(min(SIGNALING_CONNECT_RETRY_S, max(0.0, left)))
        if self.sig is None:
            log.error("cannot reach signaling %s:%d: %r", *cfg.signaling, last_error)
            raise AgentAbort("signaling-failed")
        try:
            await self.sig.send(Join(type="join", room=cfg.room, peer=cfg.peer))
        except SignalingError as err:
            raise AgentAbort("signaling-failed") from err
        reply = await self._until(self.sig.messages.get(), "joining the room")
        if reply.get("type") != Kind.JOINED:
            log.error("join refused: %s", reply)
            raise AgentAbort("signaling-failed")
        log.info("joined room %r as %r; present: %s", cfg.room, cfg.peer, reply.get("peers"))
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    async def _dispatch(self) -> None:
        assert self.sig is not None
        while True:
            message = await self.sig.messages.get()
            kind = message.get("type")
            if kind in (Kind.OFFER, Kind.ANSWER):
                if not self._remote_description.done():
                    self._remote_description.set_result(message)
            elif kind == Kind.CONNECTED:
                log.info("peer connected: %s -> %s", message.get("local"), message.get("remote"))
                self._peer_connected.set()
            elif kind == Kind.DONE:
                self._peer_done.set()
            elif kind == Kind.THROUGHPUT_START:
                log.info("peer starts sending at %s Mbit/s", message.get("mbps"))
            elif kind == Kind.THROUGHPUT_END:
                if not self._bulk_end.done():
                    self._bulk_end.set_result(message)
            elif kind == Kind.THROUGHPUT_RESULT:
                if not self._bulk_result.done():
                    self._bulk_result.set_result(message)
            elif kind == Kind.PEER_JOINED:
                log.info("peer %r joined", message.get("peer"))
            elif kind == Kind.BYE:
                reason = str(message.get("reason") or "left")
                log.warning("peer says bye: %s", reason)
                self.abort(f"peer-{reason}")
            elif kind == Kind.PEER_LEFT:
                if not self._peer_done.is_set():
                    log.warning("peer left the room")
                    self.abort("peer-left")
            elif kind == Kind.ERROR:
                log.error("signaling error: %s", message)
                self.abort("signaling-failed")
            elif kind == Kind.CLOSED:
                if not self._peer_done.is_set():
                    log.error("signaling connection lost")
                    self.abort("signaling-failed")
                return
            else:
                log.debug("ignoring signaling message %r", kind)

    def _turn_servers(self) -> list[TurnServer]:
        cfg = self.cfg
        if not (cfg.turn_udp or cfg.turn_tcp or cfg.turn_tls):
            return []
        assert cfg.turn_secret is not None
        username, password = turn_rest_credentials(cfg.turn_secret, cfg.peer, time.time())
        servers = []
        for protocol, addr in (("udp", cfg.turn_udp), ("tcp", cfg.turn_tcp), ("tls", cfg.turn_tls)):
            if addr is not None:
                ctx = ssl.create_default_context(cafile=cfg.cafile) if protocol == "tls" else None
                servers.append(TurnServer(protocol, addr, username, password, ctx))
        return servers

    async def _gather(self) -> None:
        cfg = self.cfg
        policy = aioice.TransportPolicy.ALL
        if cfg.policy == "relay":
            policy = aioice.TransportPolicy.RELAY
        servers = self._turn_servers()
        self.conn = LabConnection(
            ice_controlling=cfg.controlling,
            stun_server=cfg.stun,
            turn_servers=servers,
            transport_policy=policy,
            host_addresses=cfg.host_ips,
            use_ipv6=cfg.ipv6,
            gather_timeout=cfg.gather_timeout,
            nomination_wait=cfg.nomination_wait,
        )
        started = time.monotonic()
        log.info(
            "gathering (policy %s, stun %s, %s)",
            cfg.policy,
            cfg.stun,
            ", ".join(map(str, servers)) or "no TURN",
        )
        await self._until(self.conn.gather_candidates(), "gathering candidates")
        kinds = []
        for candidate in self.conn.local_candidates:
            relay_protocol = self.conn.relay_protocol_of(candidate)
            kind = candidate_kind(candidate.type, relay_protocol)
            kinds.append(kind)
            log.info("gathered %-9s %s", kind, candidate.to_sdp())
        self.result.candidates_gathered = count_candidates(kinds)
        log.info(
            "gathered %s in %.3f s",
            self.result.candidates_gathered,
            time.monotonic() - started,
        )
        if not kinds:
            log.error("no candidates: %s", "; ".join(self.conn.gather_failures) or "none offered")
            await self._bye("gather-failed")
            raise AgentAbort("gather-failed")

    def _description(self) -> Description:
        cfg = self.cfg
        assert self.conn is not None
        plan = None
        if cfg.controlling and cfg.throughput_mbps:
            plan = ThroughputPlan(mbps=cfg.throughput_mbps, seconds=cfg.throughput_seconds)
        return Description(
            type="offer" if cfg.controlling else "answer",
            peer=cfg.peer,
            role=cfg.role,
            ufrag=self.conn.local_username,
            pwd=self.conn.local_password,
            candidates=[
                msg.Candidate(sdp=c.to_sdp(), relay_protocol=self.conn.relay_protocol_of(c))
                for c in self.conn.local_candidates
            ],
            throughput=plan,
        )

    async def _apply_remote(self, remote: dict[str, Any]) -> None:
        assert self.conn is not None
        ufrag, pwd, candidates = remote.get("ufrag"), remote.get("pwd"), remote.get("candidates")
        if not (isinstance(ufrag, str) and isinstance(pwd, str) and isinstance(candidates, list)):
            log.error("bad description from the peer: %s", remote)
            raise AgentAbort("signaling-failed")
        self.conn.remote_username, self.conn.remote_password = ufrag, pwd
        for item in candidates[:MAX_REMOTE_CANDIDATES]:
            sdp = item.get("sdp") if isinstance(item, dict) else None
            try:
                candidate = Candidate.from_sdp(str(sdp))
            except (ValueError, TypeError) as err:
                log.warning("ignoring remote candidate %r: %s", sdp, err)
                continue
            log.info("remote    %s (%s)", candidate.to_sdp(), item.get("relay_protocol") or "-")
            await self.conn.add_remote_candidate(candidate)
        await self.conn.add_remote_candidate(None)

    async def _connect(self) -> None:
        assert self.conn is not None
        started = time.monotonic()
        log.info("connecting as %s", self.cfg.role)
        try:
            await self._until(self.conn.connect(), "connecting")
        except ConnectionError as err:
            self.result.checks_sent = self.conn.checks_sent
            log.error("ICE failed after %.3f s: %s", time.monotonic() - started, err)
            await self._bye("ice-failed")
            raise AgentAbort("ice-failed") from err
        except AgentAbort:
            self.result.checks_sent = self.conn.checks_sent
            raise
        self.result.time_to_connect_s = round(time.monotonic() - started, 3)
        self.result.checks_sent = self.conn.checks_sent
        self.result.role = "controlling" if self.conn.ice_controlling else "controlled"
        pair = self.conn.selected_pair()
        if pair is None:  # connect() returned, so aioice nominated a pair
            raise AgentAbort("ice-failed")
        local, remote = pair.local_candidate, pair.remote_candidate
        self.result.set_pair(
            (local.host, local.port, local.type),
            (remote.host, remote.port, remote.type),
            self.conn.relay_protocols.get(pair.protocol.id),
        )
        log.info(
            "nominated %s -> %s: %s after %.3f s, %d checks sent",
            self.result.local_candidate,
            self.result.remote_candidate,
            self.result.outcome,
            self.result.time_to_connect_s,
            self.result.checks_sent,
        )

    async def _exchange(self) -> None:
        assert self.data is not None
        count = self.cfg.exchange
        if count <= 0:
            return
        rtts: list[float] = []
        for seq in range(count):
            timeout = min(PING_TIMEOUT_S, self._remaining())
            if timeout <= 0:
                raise AgentAbort("timeout")
            rtt = await self._until(self.data.ping(seq, timeout), "exchanging messages")
            if rtt is not None:
                rtts.append(rtt)
        self.result.rtt_ms = median_ms(rtts)
        log.info("exchange: %d/%d answered, median RTT %s ms", len(rtts), count, self.result.rtt_ms)
        if not rtts:
            await self._bye("exchange-failed")
            raise AgentAbort("exchange-failed")

    async def _throughput_send(self) -> None:
        assert self.conn is not None and self.cfg.throughput_mbps is not None
        mbps = self.cfg.throughput_mbps
        seconds = self.cfg.throughput_seconds or 0.0
        await self._send(ThroughputStart(type="throughput-start", mbps=mbps, seconds=seconds))
        per_second = mbps * 1e6 / 8 / DATAGRAM_SIZE
        total = max(1, int(per_second * seconds))
        packet = bytearray(DATAGRAM_SIZE)
        packet[:3] = BULK

        async def blast() -> tuple[int, float]:
            assert self.conn is not None
            sent, started = 0, time.monotonic()
            stop_at = started + seconds + 1.0
            while sent < total and time.monotonic() < stop_at:
                due = min(total, int((time.monotonic() - started) * per_second) + 1)
                while sent < due:
                    struct.pack_into("!I", packet, 3, sent)
                    await self.conn.send(bytes(packet))
                    sent += 1
                await asyncio.sleep(0.001)
            return sent, time.monotonic() - started

        try:
            sent, duration = await self._until(blast(), "sending bulk data")
        except ConnectionError as err:
            log.error("bulk send failed: %s", err)
            await self._bye("throughput-failed")
            raise AgentAbort("throughput-failed") from err
        log.info("sent %d datagrams of %d bytes in %.3f s", sent, DATAGRAM_SIZE, duration)
        await self._send(
            ThroughputEnd(
                type="throughput-end",
                packets=sent,
                bytes=sent * DATAGRAM_SIZE,
                duration_s=duration,
            )
        )
        answer = await self._until(self._bulk_result, "waiting for the throughput result")
        value = answer.get("mbps")
        self.result.throughput_mbps = float(value) if isinstance(value, int | float) else None
        log.info("peer received %s Mbit/s", self.result.throughput_mbps)

    async def _throughput_receive(self) -> None:
        assert self.data is not None
        end = await self._until(self._bulk_end, "waiting for the peer's bulk data")
        # drain: datagrams may still be in flight after the signaling message
        drain_until = time.monotonic() + DRAIN_MAX_S
        while time.monotonic() < drain_until:
            if time.monotonic() - self.data.last_bulk > DRAIN_QUIET_S:
                break
            await asyncio.sleep(0.05)
        duration = end.get("duration_s")
        mbps = None
        if isinstance(duration, int | float):
            mbps = throughput_mbps(self.data.bulk_bytes, float(duration))
        self.result.throughput_mbps = mbps
        log.info(
            "received %d datagrams (%d bytes) of %s: %s Mbit/s",
            self.data.bulk_packets,
            self.data.bulk_bytes,
            end.get("packets"),
            mbps,
        )
        await self._send(
            ThroughputResult(
                type="throughput-result",
                mbps=mbps,
                bytes=self.data.bulk_bytes,
                packets=self.data.bulk_packets,
            )
        )

    async def _bye(self, reason: str) -> None:
        if self.sig is None or self._bye_sent:
            return
        self._bye_sent = True
        left = self.hard_deadline - time.monotonic() - 0.1
        with contextlib.suppress(Exception):
            bye = Bye(type="bye", reason=reason)
            await asyncio.wait_for(self.sig.send(bye), max(0.05, min(0.5, left)))

    async def shutdown(self) -> None:
        """Bounded clean-up: tell the peer, close the ICE connection (TURN allocations), leave."""
        error = self.result.error
        if error and not error.startswith("peer-") and error != "signaling-failed":
            await self._bye(error)
        if self.data is not None:
            await self.data.close()
        if self.conn is not None:
            left = self.hard_deadline - time.monotonic() - 0.3
            try:
                await asyncio.wait_for(self.conn.close(), max(0.05, min(2.0, left)))
            except Exception as err:
                log.warning("closing the ICE connection: %r", err)
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        if self.sig is not None:
            await self.sig.close(timeout=0.3)


# --- result printing and the watchdog ----------------------------------------------------------


class ResultPrinter:
    """Prints the result line exactly once, from the main thread or from the watchdog."""

    def __init__(self, result: AgentResult, t0: float) -> None:
        self.result = result
        self.t0 = t0
        self._lock = threading.Lock()
        self._printed = False

    def emit(self) -> None:
        with self._lock:
            if self._printed:
                return
            self.result.duration_s = round(time.monotonic() - self.t0, 3)
            for _ in range(10):  # the event loop thread may be updating it
                try:
                    line = self.result.to_json()
                    break
                except RuntimeError:
                    time.sleep(0.001)
            else:
                line = self.result.to_json()
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            self._printed = True

    def watchdog(self) -> None:
        self.result.fail("timeout")
        log.error("watchdog: --timeout reached, ending the process")
        self.emit()
        logging.shutdown()
        os._exit(1)


async def _amain(cfg: AgentConfig, result: AgentResult, t0: float) -> None:
    agent = Agent(cfg, result, t0)
    loop = asyncio.get_running_loop()
    run = loop.create_task(agent.run())

    def terminate(signame: str) -> None:
        log.warning("%s received", signame)
        result.fail("terminated")
        agent.abort("terminated")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, terminate, sig.name)
    try:
        # the safety net behind every _until(): the soft deadline
        await asyncio.wait_for(run, max(0.0, agent.deadline - time.monotonic()) + 0.5)
    except AgentAbort as err:
        result.fail(err.reason)
    except TimeoutError:
        result.fail("timeout")
    except Exception:
        log.exception("internal error")
        result.fail("internal-error")
    finally:
        await agent.shutdown()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lab.agents.ice_agent",
        description="natlab ICE agent (aioice): prints one JSON result line on stdout",
    )
    p.add_argument("--peer", required=True, choices=("a", "b"))
    role = p.add_mutually_exclusive_group(required=True)
    role.add_argument("--controlling", action="store_true")
    role.add_argument("--controlled", action="store_true")
    p.add_argument("--room", required=True)
    p.add_argument("--signaling", required=True, metavar="IP:PORT", help="default port 443")
    p.add_argument("--signaling-plain", action="store_true", help="plain TCP signaling, no TLS")
    p.add_argument("--signaling-name", help="TLS name to verify (default: the signaling IP)")
    p.add_argument("--cafile", help="lab CA (PEM) for signaling TLS and TURN over TLS")
    p.add_argument("--stun", metavar="IP:PORT")
    p.add_argument("--turn-udp", metavar="IP:PORT")
    p.add_argument("--turn-tcp", metavar="IP:PORT")
    p.add_argument("--turn-tls", metavar="IP:PORT")
    p.add_argument("--turn-secret", help="TURN REST shared secret (static-auth-secret)")
    p.add_argument("--realm", default="natlab", help="TURN realm (the server announces it)")
    p.add_argument("--policy", choices=("all", "relay"), default="all")
    p.add_argument("--timeout", type=float, required=True, metavar="SECONDS")
    p.add_argument("--exchange", type=int, default=10, metavar="N")
    p.add_argument("--throughput-mbps", type=float, metavar="X")
    p.add_argument("--throughput-seconds", type=float, metavar="T")
    p.add_argument(
        "--host-ip",
        action="append",
        metavar="IP",
        help="host candidate address; repeatable (default: every non-loopback address)",
    )
    p.add_argument("--gather-timeout", type=float, default=GATHER_TIMEOUT_S, metavar="S")
    p.add_argument(
        "--nomination-wait",
        type=float,
        default=NOMINATION_WAIT_S,
        metavar="S",
        help="after the first successful check, wait at most S for a better pair",
    )
    p.add_argument("--ipv6", action="store_true", help="IPv6 host candidates too")
    p.add_argument("-v", "--verbose", action="store_true", help="aioice's own logs too")
    return p


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """Validate the command line; ValueError with the reason otherwise."""

    def addr(value: str | None, default_port: int) -> tuple[str, int] | None:
        return None if value is None else parse_hostport(value, default_port)

    if args.timeout < MIN_TIMEOUT_S:
        raise ValueError(f"--timeout must be at least {MIN_TIMEOUT_S:g} s")
    if not 0 <= args.exchange <= MAX_EXCHANGE:
        raise ValueError(f"--exchange must be within 0..{MAX_EXCHANGE}")
    if (args.throughput_mbps is None) != (args.throughput_seconds is None):
        raise ValueError("--throughput-mbps and --throughput-seconds go together")
    if args.throughput_mbps is not None:
        if not 0 < args.throughput_mbps <= MAX_THROUGHPUT_MBPS:
            raise ValueError(f"--throughput-mbps must be within (0, {MAX_THROUGHPUT_MBPS:g}]")
        if not 0 < args.throughput_seconds <= MAX_THROUGHPUT_SECONDS:
            raise ValueError(f"--throughput-seconds must be within (0, {MAX_THROUGHPUT_SECONDS:g}]")
    turn = (args.turn_udp, args.turn_tcp, args.turn_tls)
    if any(turn) and not args.turn_secret:
        raise ValueError("TURN needs --turn-secret")
    if (args.turn_tls or not args.signaling_plain) and not args.cafile:
        raise ValueError("--cafile is needed for TLS (signaling or --turn-tls)")
    return AgentConfig(
        peer=args.peer,
        controlling=bool(args.controlling),
        room=args.room,
        signaling=parse_hostport(args.signaling, 443),
        signaling_tls=not args.signaling_plain,
        signaling_name=args.signaling_name,
        cafile=args.cafile,
        stun=addr(args.stun, 3478),
        turn_udp=addr(args.turn_udp, 3478),
        turn_tcp=addr(args.turn_tcp, 3478),
        turn_tls=addr(args.turn_tls, 443),
        turn_secret=args.turn_secret,
        realm=args.realm,
        policy=args.policy,
        timeout=args.timeout,
        exchange=args.exchange,
        throughput_mbps=args.throughput_mbps,
        throughput_seconds=args.throughput_seconds,
        host_ips=tuple(args.host_ip) if args.host_ip else None,
        gather_timeout=args.gather_timeout,
        ipv6=args.ipv6,
        nomination_wait=args.nomination_wait,
    )


def _setup_logging(peer: str, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(
        f"%(asctime)s.%(msecs)03dZ {peer} %(name)s %(levelname)s %(message)s", "%H:%M:%S"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("aioice").setLevel(logging.INFO if verbose else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    t0 = time.monotonic()
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    args = build_parser().parse_args(argv)
    _setup_logging(args.peer, args.verbose)
    role = "controlling" if args.controlling else "controlled"
    result = AgentResult(peer=args.peer, role=role, started_at=started_at)
    printer = ResultPrinter(result, t0)
    try:
        cfg = config_from_args(args)
    except ValueError as err:
        log.error("usage: %s", err)
        result.fail("usage")
        printer.emit()
        return 2
    watchdog = threading.Timer(max(0.1, cfg.timeout - HARD_MARGIN_S), printer.watchdog)
    watchdog.daemon = True
    watchdog.start()
    try:
        asyncio.run(_amain(cfg, result, t0))
    except Exception:
        log.exception("internal error")
        result.fail("internal-error")
    finally:
        watchdog.cancel()
        printer.emit()
    log.info("result: %s%s", result.outcome, f" (error {result.error})" if result.error else "")
    return 0 if result.error is None else 1


if __name__ == "__main__":
    sys.exit(main())
