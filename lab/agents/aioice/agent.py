"""One side of a call on aioice: the agent contract's sequence (``lab.agents.contract``).

Join the room on the signaling server (TLS, newline-delimited JSON); gather candidates; send
ufrag/pwd/candidates ("offer" from the controlling side, "answer" from the controlled side);
wait for the peer's; connect; send "connected"; once the peer is connected too, ping the peer
``--exchange`` times (and echo its pings) for the median RTT; the controlling side then
optionally sends bulk datagrams at ``--throughput-mbps`` for ``--throughput-seconds``, and the
controlled side reports the goodput back through signaling; send "done" and stay up until the
peer's "done" arrives (DESIGN.md: an aioice agent that closed right after its own connect left
its peer unconnected in 2 of 6 runs). A failing side sends ``{"type":"bye","reason":R}`` so
its peer ends at once with error "peer-R". When the peer speaks no datagram plane (its
description's ``data``), pings and throughput are skipped: RTT and throughput stay null.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import aioice

from lab.agents import messages as msg
from lab.agents.agent_result import (
    AgentResult,
    candidate_kind,
    count_candidates,
    median_ms,
    throughput_mbps,
)
from lab.agents.aioice.config import HARD_MARGIN_S, AgentConfig
from lab.agents.aioice.dataplane import DataPlane, send_bulk
from lab.agents.aioice.gathering import candidate_line, parse_candidate_line
from lab.agents.aioice.internals import LabConnection
from lab.agents.contract import DATAGRAM_SIZE, EventKind, EventLog
from lab.agents.contract import DataPlane as Plane
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
from lab.agents.signaling import SignalingClient, SignalingError
from reports.vocabulary import AgentImpl

log = logging.getLogger("natlab.aioice")

T = TypeVar("T")

IMPL = AgentImpl.AIOICE.value
DATA_PLANES = (Plane.DATAGRAM.value,)  # what this agent speaks, preferred first
SIGNALING_CONNECT_RETRY_S = 0.25
PING_TIMEOUT_S = 1.0
MAX_REMOTE_CANDIDATES = 64
MAX_CHECK_EVENTS = 200  # check-sent + check-answered per run: the timeline file stays bounded
DRAIN_QUIET_S = 0.3
DRAIN_MAX_S = 1.5


class AgentAbort(Exception):
    """Ends the run with a short error reason (the result's ``error``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def shared_plane(offer: Sequence[str], answer: Sequence[str]) -> str | None:
    """The data plane of a call: the first of the offerer's that the answerer also has."""
    return next((plane for plane in offer if plane in answer), None)


def peer_planes(description: dict[str, Any]) -> list[str]:
    """The data planes a peer's description lists; without the field, the datagram plane
    (a description from before the field existed)."""
    data = description.get("data")
    if not isinstance(data, list):
        return list(DATA_PLANES)
    return [str(plane) for plane in data]


class Agent:
    def __init__(
        self, config: AgentConfig, result: AgentResult, t0: float, events: EventLog
    ) -> None:
        self.cfg = config
        self.inp = config.inputs
        self.result = result
        self.events = events
        self.t0 = t0
        self.deadline = t0 + self.inp.timeout - config.soft_margin
        self.hard_deadline = t0 + self.inp.timeout - HARD_MARGIN_S
        self.sig: SignalingClient | None = None
        self.conn: LabConnection | None = None
        self.data: DataPlane | None = None
        self.plane: str | None = None  # the call's data plane, once both descriptions are known
        self.check_events = 0
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
            waiters: set[asyncio.Future[Any]] = {fut, self._abort}
            await asyncio.wait(waiters, timeout=remaining, return_when="FIRST_COMPLETED")
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

    def _on_check(self, what: str, detail: str) -> None:
        """Connectivity checks on the timeline, the first MAX_CHECK_EVENTS of them."""
        if self.check_events >= MAX_CHECK_EVENTS:
            return
        self.check_events += 1
        kind = EventKind.CHECK_SENT if what == "sent" else EventKind.CHECK_ANSWERED
        if self.check_events == MAX_CHECK_EVENTS:
            detail += f" (the last check event logged: at most {MAX_CHECK_EVENTS})"
        self.events.emit(kind, detail)

    # the run

    async def run(self) -> None:
        inp = self.inp
        self.events.emit(EventKind.START, f"{inp.role}, policy {inp.policy}")
        await self._join()
        await self._gather()
        assert self.conn is not None
        await self._send(self._description())
        self.events.emit(EventKind.DESCRIPTION_SENT)
        remote = await self._until(self._remote_description, "waiting for the peer's candidates")
        self.events.emit(EventKind.DESCRIPTION_RECEIVED, f"impl {remote.get('impl') or '?'}")
        theirs = peer_planes(remote)
        if inp.controlling:
            self.plane = shared_plane(DATA_PLANES, theirs)
        else:
            self.plane = shared_plane(theirs, DATA_PLANES)
        await self._apply_remote(remote)
        await self._connect()
        if self.plane == Plane.DATAGRAM:
            self.data = DataPlane(self.conn)
        await self._send(
            Connected(
                type="connected",
                peer=inp.peer,
                outcome=self.result.outcome,
                local=self.result.local_candidate,
                remote=self.result.remote_candidate,
            )
        )
        await self._until(self._peer_connected.wait(), "waiting for the peer to connect")
        if self.plane == Plane.DATAGRAM:
            await self._exchange()
            if inp.controlling and inp.throughput_mbps:
                await self._throughput_send()
            elif not inp.controlling and remote.get("throughput"):
                await self._throughput_receive()
        else:
            log.info("no data plane in common (peer speaks %s): no pings, no throughput", theirs)
            self.events.emit(EventKind.EXCHANGED, f"skipped: no common data plane ({theirs})")
        await self._send(
            Done(
                type="done",
                peer=inp.peer,
                rtt_ms=self.result.rtt_ms,
                throughput_mbps=self.result.throughput_mbps,
            )
        )
        log.info("done; waiting for the peer's done")
        await self._until(self._peer_done.wait(), "waiting for the peer's done")
        log.info("peer done")

    async def _join(self) -> None:
        inp = self.inp
        signaling = (inp.signaling.host, inp.signaling.port)
        ctx: ssl.SSLContext | None = None
        if self.cfg.signaling_tls:
            ctx = ssl.create_default_context(cafile=inp.cafile)
        budget = min(self._remaining(), max(2.0, 0.3 * inp.timeout))
        give_up = time.monotonic() + budget
        attempts = int(budget / SIGNALING_CONNECT_RETRY_S) + 1
        last_error: Exception | None = None
        for attempt in range(1, attempts + 1):
            left = give_up - time.monotonic()
            if left <= 0:
                break
            try:
                self.sig = await SignalingClient.connect(
                    signaling, ctx, server_hostname=inp.signaling_name, timeout=min(5.0, left)
                )
                break
            except ssl.SSLError as err:  # a certificate problem does not go away by retrying
                last_error = err
                break
            except (OSError, TimeoutError) as err:
                last_error = err
                if attempt == 1:
                    log.info("signaling %s: %s; retrying", inp.signaling, err)
                await asyncio.sleep(min(SIGNALING_CONNECT_RETRY_S, max(0.0, left)))
        if self.sig is None:
            log.error("cannot reach signaling %s: %r", inp.signaling, last_error)
            raise AgentAbort("signaling-failed")
        try:
            await self.sig.send(Join(type="join", room=inp.room, peer=inp.peer))
        except SignalingError as err:
            raise AgentAbort("signaling-failed") from err
        reply = await self._until(self.sig.messages.get(), "joining the room")
        if reply.get("type") != Kind.JOINED:
            log.error("join refused: %s", reply)
            raise AgentAbort("signaling-failed")
        log.info("joined room %r as %r; present: %s", inp.room, inp.peer, reply.get("peers"))
        self.events.emit(EventKind.JOINED, f"room {inp.room}, present {reply.get('peers')}")
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
                if not self._peer_connected.is_set():
                    self.events.emit(EventKind.PEER_CONNECTED, str(message.get("outcome")))
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

    async def _gather(self) -> None:
        inp = self.inp
        policy = aioice.TransportPolicy.ALL
        if inp.policy == "relay":
            policy = aioice.TransportPolicy.RELAY
        servers = self.cfg.turn_endpoints(time.time())
        self.conn = LabConnection(
            ice_controlling=inp.controlling,
            stun_server=None if inp.stun is None else (inp.stun.host, inp.stun.port),
            turn_servers=servers,
            transport_policy=policy,
            host_addresses=self.cfg.host_ips,
            use_ipv6=self.cfg.ipv6,
            gather_timeout=self.cfg.gather_timeout,
            nomination_wait=self.cfg.nomination_wait,
            on_check=self._on_check,
        )
        started = time.monotonic()
        log.info(
            "gathering (policy %s, stun %s, %s)",
            inp.policy,
            inp.stun,
            ", ".join(map(str, servers)) or "no TURN",
        )
        await self._until(self.conn.gather_candidates(), "gathering candidates")
        kinds = []
        for candidate in self.conn.local_candidates:
            relay_protocol = self.conn.relay_protocol_of(candidate)
            kind = candidate_kind(candidate.type, relay_protocol)
            kinds.append(kind)
            log.info("gathered %-9s %s", kind, candidate_line(candidate))
            self.events.emit(EventKind.GATHERED, candidate_line(candidate))
        self.result.candidates_gathered = count_candidates(kinds)
        log.info(
            "gathered %s in %.3f s",
            self.result.candidates_gathered,
            time.monotonic() - started,
        )
        counts = ", ".join(f"{k} {n}" for k, n in self.result.candidates_gathered.items() if n)
        self.events.emit(EventKind.GATHERING_DONE, counts or "no candidates")
        if not kinds:
            log.error("no candidates: %s", "; ".join(self.conn.gather_failures) or "none offered")
            await self._bye("gather-failed")
            raise AgentAbort("gather-failed")

    def _description(self) -> Description:
        inp = self.inp
        assert self.conn is not None
        plan = None
        if inp.controlling and inp.throughput_mbps and inp.throughput_seconds:
            plan = ThroughputPlan(mbps=inp.throughput_mbps, seconds=inp.throughput_seconds)
        return Description(
            type="offer" if inp.controlling else "answer",
            peer=inp.peer,
            role=inp.role,
            ufrag=self.conn.local_username,
            pwd=self.conn.local_password,
            candidates=[
                msg.Candidate(sdp=candidate_line(c), relay_protocol=self.conn.relay_protocol_of(c))
                for c in self.conn.local_candidates
            ],
            throughput=plan,
            impl=IMPL,
            data=list(DATA_PLANES),
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
                candidate = parse_candidate_line(str(sdp))
            except (ValueError, TypeError, IndexError) as err:
                log.warning("ignoring remote candidate %r: %s", sdp, err)
                continue
            relay = item.get("relay_protocol") or "-"
            log.info("remote    %s (%s)", candidate_line(candidate), relay)
            await self.conn.add_remote_candidate(candidate)
        await self.conn.add_remote_candidate(None)

    async def _connect(self) -> None:
        assert self.conn is not None
        started = time.monotonic()
        log.info("connecting as %s", self.inp.role)
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
        selected = self.conn.selected()
        if selected is None:  # connect() returned, so aioice nominated a pair
            raise AgentAbort("ice-failed")
        local, remote, relay_protocol = selected
        self.result.set_pair(
            (local.host, local.port, local.type),
            (remote.host, remote.port, remote.type),
            relay_protocol,
        )
        pair = f"{self.result.local_candidate} -> {self.result.remote_candidate}"
        self.events.emit(EventKind.NOMINATED, pair)
        self.events.emit(EventKind.CONNECTED, f"{self.result.outcome} {pair}")
        log.info(
            "nominated %s: %s after %.3f s, %d checks sent",
            pair,
            self.result.outcome,
            self.result.time_to_connect_s,
            self.result.checks_sent,
        )

    async def _exchange(self) -> None:
        assert self.data is not None
        count = self.inp.exchange
        if count <= 0:
            self.events.emit(EventKind.EXCHANGED, "skipped: --exchange 0")
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
        self.events.emit(
            EventKind.EXCHANGED, f"{len(rtts)}/{count} answered, RTT {self.result.rtt_ms} ms"
        )

    async def _throughput_send(self) -> None:
        assert self.conn is not None and self.inp.throughput_mbps is not None
        mbps = self.inp.throughput_mbps
        seconds = self.inp.throughput_seconds or 0.0
        await self._send(ThroughputStart(type="throughput-start", mbps=mbps, seconds=seconds))
        try:
            sent, duration = await self._until(
                send_bulk(self.conn, mbps, seconds), "sending bulk data"
            )
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
