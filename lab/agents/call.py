"""The contract's call sequence (``lab.agents.contract``), once, for every Python-driven agent.

``Call`` holds what does not depend on the ICE implementation: the signaling room (TLS,
newline-delimited JSON, ``lab.agents.messages``), the deadlines, the order of the steps, the
pings and the throughput test's signaling, bye and the bounded end. An implementation
(aioice, a browser, libnice) subclasses it and supplies the steps only it can do: gather and
describe its candidates, take the peer's, connect, and move pings and bulk data over its data
plane. The Go agent (pion) follows the same sequence in Go.

The steps, for both sides: join; describe (the controlled side of an implementation whose
answer depends on the offer, a browser, first waits for the offer); send the description
("offer" from the controlling side a, "answer" from the controlled side b); take the peer's;
connect; send "connected" and wait for the peer's; ping ``--exchange`` times for the median
RTT (over the data plane both speak, ``contract.DataPlane``; without one the implementation
may still say its ICE RTT); the controlling side sends bulk data when ``--throughput-mbps`` is
given and the controlled side reports the goodput; send "done" and stay until the peer's
(DESIGN.md: an agent that closed right after its own connect left its peer unconnected in 2
of 6 runs). A failing side sends "bye" with its reason so the peer ends at once ("peer-R").
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from lab.agents import messages as msg
from lab.agents.agent_result import AgentResult, median_ms, throughput_mbps
from lab.agents.contract import AgentInputs, EventKind, EventLog
from lab.agents.signaling import SignalingClient, SignalingError

log = logging.getLogger("natlab.call")
T = TypeVar("T")

HARD_MARGIN_S = 0.6  # the process watchdog fires this long before --timeout
SIGNALING_RETRY_S = 0.25
PING_TIMEOUT_S = 1.0
DRAIN_QUIET_S = 0.3  # the receiver's bulk count is final after this long without data
DRAIN_MAX_S = 1.5
MAX_CHECK_EVENTS = 200  # check-sent + check-answered per run: the timeline file stays bounded


def soft_margin(timeout: float) -> float:
    """Time kept after the soft deadline to say bye and close (TURN allocations, a browser)."""
    return min(3.0, max(1.0, 0.15 * timeout))


class AgentAbort(Exception):
    """Ends the run with a short error reason (the result's ``error``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class BulkSent:
    packets: int
    bytes: int
    duration_s: float


@dataclass(frozen=True)
class BulkReceived:
    packets: int
    bytes: int
    quiet_s: float | None  # seconds since the last bulk data arrived (None: none arrived)


def shared_plane(offerer: Sequence[str], answerer: Sequence[str]) -> str | None:
    """The data plane of a call: the first of the offerer's that the answerer also has."""
    return next((plane for plane in offerer if plane in answerer), None)


def peer_planes(description: dict[str, Any], default: Sequence[str]) -> list[str]:
    """The data planes a peer's description lists (``default`` for a description without the
    field, from before it existed)."""
    data = description.get("data")
    if not isinstance(data, list):
        return list(default)
    return [str(plane) for plane in data]


class Call(abc.ABC):
    """One side of a call; subclasses implement the abstract steps."""

    impl: str  # reports.vocabulary.AgentImpl value
    data_planes: tuple[str, ...]  # contract.DataPlane values this implementation speaks
    answers_after_offer = False  # the controlled side must see the offer before describing

    def __init__(
        self,
        inputs: AgentInputs,
        result: AgentResult,
        t0: float,
        events: EventLog,
        *,
        signaling_tls: bool = True,
    ) -> None:
        self.inp = inputs
        self.result = result
        self.events = events
        self.t0 = t0
        self.signaling_tls = signaling_tls
        self.deadline = t0 + inputs.timeout - soft_margin(inputs.timeout)
        self.hard_deadline = t0 + inputs.timeout - HARD_MARGIN_S
        self.sig: SignalingClient | None = None
        self.plane: str | None = None  # the call's data plane, once both descriptions are known
        self.remote: dict[str, Any] = {}  # the peer's description, once received
        self.check_events = 0
        self.tasks: list[asyncio.Task[None]] = []
        loop = asyncio.get_running_loop()
        self._abort: asyncio.Future[str] = loop.create_future()
        self._remote: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._bulk_end: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._bulk_result: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._peer_connected = asyncio.Event()
        self._peer_done = asyncio.Event()
        self._bye_sent = False

    # --- the implementation's steps ---------------------------------------------------------

    async def prepare(self) -> None:
        """Before the first description: join the room (a browser also starts itself)."""
        await self.join()

    @abc.abstractmethod
    async def describe(self, offer: dict[str, Any] | None) -> msg.Description:
        """Gather and describe the local candidates; ``offer`` is the peer's offer when
        ``answers_after_offer`` and this is the controlled side, else None."""

    @abc.abstractmethod
    async def apply_remote(self, remote: dict[str, Any]) -> None:
        """Take the peer's description (not called for an answer made from the offer)."""

    @abc.abstractmethod
    async def connect(self) -> None:
        """Run ICE to a selected pair and fill the result's pair, time and checks; raise
        AgentAbort (after ``bye``) when it fails."""

    async def ping(self, count: int) -> list[float]:
        """Ping the peer ``count`` times over the data plane; the RTTs (seconds) answered."""
        raise AgentAbort("internal-error")

    async def rtt_without_plane(self) -> float | None:
        """The RTT (ms) when no data plane is shared: the implementation's ICE measurement."""
        return None

    async def send_bulk(self, mbps: float, seconds: float) -> BulkSent:
        raise AgentAbort("internal-error")

    async def bulk_received(self) -> BulkReceived:
        raise AgentAbort("internal-error")

    async def close_transport(self) -> None:  # noqa: B027 (an optional step)
        """Close the ICE session (TURN allocations leave) within the hard deadline."""

    def start_detail(self) -> str:
        return f"{self.inp.role}, policy {self.inp.policy}"

    def summary(self) -> list[str]:
        """Facts for the timeline's last event, as ``key=value`` (a browser's start-up)."""
        return []

    def on_watchdog(self) -> None:  # noqa: B027 (an optional step)
        """Called from the watchdog thread just before the process ends (kill a browser)."""

    # --- helpers ------------------------------------------------------------------------------

    def abort(self, reason: str) -> None:
        if not self._abort.done():
            self._abort.set_result(reason)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    async def until(self, awaitable: Awaitable[T], what: str) -> T:
        """Await, unless the run is aborted (peer left, signaling lost...) or the deadline hits."""
        fut: asyncio.Future[T] = asyncio.ensure_future(awaitable)
        remaining = self.remaining()
        if remaining > 0:
            waiting: set[asyncio.Future[Any]] = {fut, self._abort}
            await asyncio.wait(waiting, timeout=remaining, return_when="FIRST_COMPLETED")
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

    async def send(self, message: msg.Message) -> None:
        assert self.sig is not None
        try:
            await self.until(self.sig.send(message), f"sending {message['type']}")
        except SignalingError as err:
            log.warning("signaling send failed: %s", err)
            raise AgentAbort("signaling-failed") from err

    def on_check(self, what: str, detail: str) -> None:
        """Connectivity checks on the timeline, the first MAX_CHECK_EVENTS of them."""
        if self.check_events >= MAX_CHECK_EVENTS:
            return
        self.check_events += 1
        kind = EventKind.CHECK_SENT if what == "sent" else EventKind.CHECK_ANSWERED
        if self.check_events == MAX_CHECK_EVENTS:
            detail += f" (the last check event logged: at most {MAX_CHECK_EVENTS})"
        self.events.emit(kind, detail)

    def throughput_plan(self) -> msg.ThroughputPlan | None:
        inp = self.inp
        if inp.controlling and inp.throughput_mbps and inp.throughput_seconds:
            return msg.ThroughputPlan(mbps=inp.throughput_mbps, seconds=inp.throughput_seconds)
        return None

    async def bye(self, reason: str) -> None:
        if self.sig is None or self._bye_sent:
            return
        self._bye_sent = True
        left = self.hard_deadline - time.monotonic() - 0.1
        with contextlib.suppress(Exception):
            bye = msg.Bye(type="bye", reason=reason)
            await asyncio.wait_for(self.sig.send(bye), max(0.05, min(0.5, left)))

    async def fail(self, reason: str) -> NoReturn:
        """Tell the peer why, then end the run."""
        await self.bye(reason)
        raise AgentAbort(reason)

    # --- the run ------------------------------------------------------------------------------

    async def run(self) -> None:
        inp = self.inp
        self.events.emit(EventKind.START, self.start_detail())
        await self.prepare()
        if inp.controlling or not self.answers_after_offer:
            description = await self.describe(None)
            await self._send_description(description)
            self.remote = await self.until(self._remote, "waiting for the peer's description")
            self._received()
            await self.apply_remote(self.remote)
        else:
            self.remote = await self.until(self._remote, "waiting for the peer's offer")
            self._received()
            await self._send_description(await self.describe(self.remote))
        theirs = peer_planes(self.remote, self.data_planes)
        if inp.controlling:
            self.plane = shared_plane(self.data_planes, theirs)
        else:
            self.plane = shared_plane(theirs, self.data_planes)
        await self.connect()
        await self.send(
            msg.Connected(
                type="connected",
                peer=inp.peer,
                outcome=self.result.outcome,
                local=self.result.local_candidate,
                remote=self.result.remote_candidate,
            )
        )
        await self.until(self._peer_connected.wait(), "waiting for the peer to connect")
        if self.plane is not None:
            await self._exchange()
            if inp.controlling and inp.throughput_mbps:
                await self._throughput_send()
            elif not inp.controlling and self.remote.get("throughput"):
                await self._throughput_receive()
        else:
            rtt = await self.rtt_without_plane()
            if rtt is not None:
                self.result.rtt_ms = rtt
            log.info("no data plane in common (peer speaks %s): RTT %s ms from ICE, no "
                     "throughput", theirs, self.result.rtt_ms)  # fmt: skip
            self.events.emit(
                EventKind.EXCHANGED,
                f"skipped: no common data plane ({theirs}); ICE RTT {self.result.rtt_ms} ms",
            )
        await self.send(
            msg.Done(
                type="done",
                peer=inp.peer,
                rtt_ms=self.result.rtt_ms,
                throughput_mbps=self.result.throughput_mbps,
            )
        )
        log.info("done; waiting for the peer's done")
        await self.until(self._peer_done.wait(), "waiting for the peer's done")
        log.info("peer done")

    async def _send_description(self, description: msg.Description) -> None:
        await self.send(description)
        count = len(description["candidates"])
        self.events.emit(EventKind.DESCRIPTION_SENT, f"{count} candidates")

    def _received(self) -> None:
        impl = self.remote.get("impl") or "?"
        count = len(self.remote.get("candidates") or [])
        log.info("peer's description: %s, %d candidates, data %s", impl, count,
                 self.remote.get("data"))  # fmt: skip
        self.events.emit(EventKind.DESCRIPTION_RECEIVED, f"impl {impl}: {count} candidates")

    # signaling

    async def join(self) -> None:
        inp = self.inp
        addr = (inp.signaling.host, inp.signaling.port)
        ctx = ssl.create_default_context(cafile=inp.cafile) if self.signaling_tls else None
        budget = min(self.remaining(), max(2.0, 0.3 * inp.timeout))
        give_up = time.monotonic() + budget
        last_error: Exception | None = None
        for attempt in range(1, int(budget / SIGNALING_RETRY_S) + 2):
            left = give_up - time.monotonic()
            if left <= 0:
                break
            try:
                self.sig = await SignalingClient.connect(
                    addr, ctx, server_hostname=inp.signaling_name, timeout=min(5.0, left)
                )
                break
            except ssl.SSLError as err:  # a certificate problem does not go away by retrying
                last_error = err
                break
            except (OSError, TimeoutError) as err:
                last_error = err
                if attempt == 1:
                    log.info("signaling %s: %s; retrying", inp.signaling, err)
                await asyncio.sleep(min(SIGNALING_RETRY_S, max(0.0, left)))
        if self.sig is None:
            log.error("cannot reach signaling %s: %r", inp.signaling, last_error)
            raise AgentAbort("signaling-failed")
        try:
            await self.sig.send(msg.Join(type="join", room=inp.room, peer=inp.peer))
        except SignalingError as err:
            raise AgentAbort("signaling-failed") from err
        reply = await self.until(self.sig.messages.get(), "joining the room")
        if reply.get("type") != msg.Kind.JOINED:
            log.error("join refused: %s", reply)
            raise AgentAbort("signaling-failed")
        log.info("joined room %r as %r; present: %s", inp.room, inp.peer, reply.get("peers"))
        self.events.emit(EventKind.JOINED, f"room {inp.room}, present {reply.get('peers')}")
        self.tasks.append(asyncio.get_running_loop().create_task(self._dispatch()))

    async def _dispatch(self) -> None:
        assert self.sig is not None
        kind_ = msg.Kind
        while True:
            message = await self.sig.messages.get()
            kind = message.get("type")
            if kind in (kind_.OFFER, kind_.ANSWER):
                if not self._remote.done():
                    self._remote.set_result(message)
            elif kind == kind_.CONNECTED:
                log.info("peer connected: %s -> %s", message.get("local"), message.get("remote"))
                if not self._peer_connected.is_set():
                    self.events.emit(EventKind.PEER_CONNECTED, str(message.get("outcome")))
                self._peer_connected.set()
            elif kind == kind_.DONE:
                self._peer_done.set()
            elif kind == kind_.THROUGHPUT_START:
                log.info("peer starts sending at %s Mbit/s", message.get("mbps"))
            elif kind == kind_.THROUGHPUT_END:
                if not self._bulk_end.done():
                    self._bulk_end.set_result(message)
            elif kind == kind_.THROUGHPUT_RESULT:
                if not self._bulk_result.done():
                    self._bulk_result.set_result(message)
            elif kind == kind_.PEER_JOINED:
                log.info("peer %r joined", message.get("peer"))
            elif kind == kind_.BYE:
                reason = str(message.get("reason") or "left")
                log.warning("peer says bye: %s", reason)
                self.abort(f"peer-{reason}")
            elif kind == kind_.PEER_LEFT:
                if not self._peer_done.is_set():
                    log.warning("peer left the room")
                    self.abort("peer-left")
            elif kind == kind_.ERROR:
                log.error("signaling error: %s", message)
                self.abort("signaling-failed")
            elif kind == kind_.CLOSED:
                if not self._peer_done.is_set():
                    log.error("signaling connection lost")
                    self.abort("signaling-failed")
                return
            else:
                log.debug("ignoring signaling message %r", kind)

    # data

    async def _exchange(self) -> None:
        count = self.inp.exchange
        if count <= 0:
            self.events.emit(EventKind.EXCHANGED, "skipped: --exchange 0")
            return
        rtts = await self.ping(count)
        self.result.rtt_ms = median_ms(rtts)
        log.info("exchange: %d/%d answered, median RTT %s ms", len(rtts), count, self.result.rtt_ms)
        if not rtts:
            await self.fail("exchange-failed")
        self.events.emit(
            EventKind.EXCHANGED, f"{len(rtts)}/{count} answered, RTT {self.result.rtt_ms} ms"
        )

    async def _throughput_send(self) -> None:
        mbps, seconds = self.inp.throughput_mbps, self.inp.throughput_seconds
        assert mbps is not None and seconds is not None  # AgentInputs pairs them
        await self.send(msg.ThroughputStart(type="throughput-start", mbps=mbps, seconds=seconds))
        sent = await self.send_bulk(mbps, seconds)
        log.info("sent %d packets (%d bytes) in %.3f s", sent.packets, sent.bytes,
                 sent.duration_s)  # fmt: skip
        await self.send(
            msg.ThroughputEnd(
                type="throughput-end",
                packets=sent.packets,
                bytes=sent.bytes,
                duration_s=sent.duration_s,
            )
        )
        answer = await self.until(self._bulk_result, "waiting for the throughput result")
        value = answer.get("mbps")
        self.result.throughput_mbps = float(value) if isinstance(value, int | float) else None
        log.info("peer received %s Mbit/s", self.result.throughput_mbps)

    async def _throughput_receive(self) -> None:
        end = await self.until(self._bulk_end, "waiting for the peer's bulk data")
        # data may still be in flight after the signaling message: wait for a quiet moment
        received = await self.bulk_received()
        drain_until = time.monotonic() + DRAIN_MAX_S
        while received.quiet_s is not None and received.quiet_s <= DRAIN_QUIET_S:
            if time.monotonic() >= drain_until:
                break
            await asyncio.sleep(0.05)
            received = await self.bulk_received()
        duration = end.get("duration_s")
        mbps = None
        if isinstance(duration, int | float):
            mbps = throughput_mbps(received.bytes, float(duration))
        self.result.throughput_mbps = mbps
        log.info("received %d packets (%d bytes) of %s: %s Mbit/s", received.packets,
                 received.bytes, end.get("packets"), mbps)  # fmt: skip
        await self.send(
            msg.ThroughputResult(
                type="throughput-result",
                mbps=mbps,
                bytes=received.bytes,
                packets=received.packets,
            )
        )

    # the end

    async def shutdown(self) -> None:
        """Bounded clean-up: tell the peer, close the ICE session, leave the room."""
        error = self.result.error
        if error and not error.startswith("peer-") and error != "signaling-failed":
            await self.bye(error)
        try:
            await self.close_transport()
        except Exception as err:  # clean-up goes on: the room is left whatever happened
            log.warning("closing the ICE session: %r", err)
        for task in self.tasks:
            task.cancel()
        if self.sig is not None:
            await self.sig.close(timeout=0.3)
