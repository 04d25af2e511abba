"""The browser agents' call sequence, shared by Chromium and Firefox: the driver is the agent.

    python -m lab.agents.chromium|firefox <the contract's flags> [--gather-timeout S] [-v]

The driver holds the signaling connection, serves the page on 127.0.0.1 (``bridge``), starts
the browser on it (``process``) and runs the contract's sequence (``lab.agents.contract``),
one page command at a time: the controlling side (a) offers, the controlled side (b) answers.
A peer's description with ``sdp`` (a browser) is used as it is; for any other peer the
browser gets an SDP made from its ICE credentials and candidates (``sdp.synthesize_sdp``), so
ICE runs against aioice, pion or libnice and DTLS never completes: the call is judged on ICE.
Connected is iceConnectionState connected/completed with a selected pair in getStats. With a
browser peer (both speak ``datachannel``) the pings and the throughput test run over the data
channel; with any other peer there is no data plane in common: RTT comes from the selected
pair's currentRoundTripTime where the browser has it, and throughput is null.

Exactly one result line is printed on stdout within ``--timeout``: a soft deadline ends the
run, and a watchdog thread prints the result, kills the browser and ends the process if that
ever hangs. The browser is killed at the end whatever happened; its log stays in the work
directory, its profile and $HOME do not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import logging
import os
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lab.agents import messages as msg
from lab.agents.agent_result import AgentResult, count_candidates, median_ms, throughput_mbps
from lab.agents.browser.bridge import PageBridge, PageError
from lab.agents.browser.candidates import LocalCandidate, endpoint, local_candidates
from lab.agents.browser.candidates import relay_protocol as stats_relay_protocol
from lab.agents.browser.iceservers import is_ip, resolve_names, servers_for
from lab.agents.browser.kind import BrowserKind, LaunchPlan
from lab.agents.browser.nss import NssError
from lab.agents.browser.process import BrowserProcess
from lab.agents.browser.sdp import SdpError, parse_sdp, synthesize_sdp
from lab.agents.contract import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    AgentInputs,
    DataPlane,
    EventKind,
    EventLog,
    add_arguments,
    inputs_from_args,
)
from lab.agents.messages import Kind
from lab.agents.signaling import SignalingClient, SignalingError

log = logging.getLogger("natlab.browser")
T = TypeVar("T")

GATHER_TIMEOUT_S = 5.0
MAX_GATHER_TIMEOUT_S = 60.0
BROWSER_START_TIMEOUT_S = 20.0  # bounded by the run's deadline too
HARD_MARGIN_S = 0.6  # the watchdog fires this long before --timeout
SIGNALING_RETRY_S = 0.25
PAGE_SLACK_S = 2.0  # a page command's answer may take this long beyond its own bound
PING_TIMEOUT_S = 1.0
CHANNEL_OPEN_TIMEOUT_S = 10.0
DRAIN_QUIET_S = 0.3
DRAIN_MAX_S = 1.5
WATCH_INTERVAL_S = 0.2
MEMORY_SAMPLE_S = 0.5
CLOSE_WAIT_S = 0.3  # after pc.close(): TURN deallocations leave before the browser is killed
DATA_PLANES = (DataPlane.DATACHANNEL,)


class AgentAbort(Exception):
    """Ends the run with a short error reason (the result's ``error``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DriverConfig:
    inputs: AgentInputs
    gather_timeout: float = GATHER_TIMEOUT_S
    keep_profile: bool = False
    verbose: bool = False

    @property
    def soft_margin(self) -> float:
        """Time kept after the soft deadline to say bye, close and kill the browser."""
        return min(3.0, max(1.0, 0.15 * self.inputs.timeout))


def common_plane(offerer: Sequence[str], answerer: Sequence[str]) -> str | None:
    """The first of the offerer's data planes that the answerer speaks too."""
    return next((plane for plane in offerer if plane in answerer), None)


def remote_sdp(remote: dict[str, Any], *, offer: bool, mid: str) -> str:
    """The peer's own SDP (a browser), or one made from its ICE description."""
    sdp = remote.get("sdp")
    if isinstance(sdp, str) and sdp.strip():
        return sdp
    ufrag, pwd, candidates = remote.get("ufrag"), remote.get("pwd"), remote.get("candidates")
    if not (isinstance(ufrag, str) and isinstance(pwd, str) and isinstance(candidates, list)):
        raise SdpError("the peer's description has no ufrag, pwd and candidates")
    values = [str(c.get("sdp")) for c in candidates if isinstance(c, dict) and c.get("sdp")]
    return synthesize_sdp(ufrag, pwd, values, offer=offer, mid=mid)


class Driver:
    def __init__(
        self, cfg: DriverConfig, kind: BrowserKind, result: AgentResult, t0: float
    ) -> None:
        self.cfg = cfg
        self.inp = cfg.inputs
        self.kind = kind
        self.result = result
        self.t0 = t0
        self.deadline = t0 + self.inp.timeout - cfg.soft_margin
        self.hard_deadline = t0 + self.inp.timeout - HARD_MARGIN_S
        self.events = EventLog(self.inp.events, self.inp.peer, kind.name)
        self.bridge = PageBridge(self._page_event)
        self.browser: BrowserProcess | None = None
        self.startup_s: float | None = None
        self.sig: SignalingClient | None = None
        self.local_mid = "0"
        self.plane: str | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.workdir = self._workdir()
        loop = asyncio.get_running_loop()
        self._abort: asyncio.Future[str] = loop.create_future()
        self._remote: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._bulk_end: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._bulk_result: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._peer_connected = asyncio.Event()
        self._peer_done = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._bye_sent = False

    def _workdir(self) -> Path:
        if self.inp.workdir:
            path = Path(self.inp.workdir)
            path.mkdir(parents=True, exist_ok=True)
            return path
        self._tmp = tempfile.TemporaryDirectory(prefix=f"natlab-{self.kind.name}-")
        return Path(self._tmp.name)

    # --- helpers ------------------------------------------------------------------------------

    def abort(self, reason: str) -> None:
        if not self._abort.done():
            self._abort.set_result(reason)

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    async def _until(self, awaitable: Awaitable[T], what: str) -> T:
        """Await, unless the run is aborted or the deadline hits first."""
        fut: asyncio.Future[T] = asyncio.ensure_future(awaitable)
        remaining = self._remaining()
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

    async def _page(self, op: str, args: dict[str, Any] | None = None, bound: float = 5.0) -> Any:
        """One page command, bounded by ``bound`` seconds plus slack and by the deadline."""
        timeout = min(bound + PAGE_SLACK_S, max(0.1, self._remaining()))
        try:
            return await self._until(self.bridge.call(op, args, timeout=timeout), f"page {op}")
        except PageError as err:
            log.error("page %s failed: %s", op, err)
            raise AgentAbort(
                "browser-failed" if self._browser_gone() else "internal-error"
            ) from err

    def _browser_gone(self) -> bool:
        return self.browser is not None and not self.browser.alive()

    async def _send(self, message: msg.Message) -> None:
        assert self.sig is not None
        try:
            await self._until(self.sig.send(message), f"sending {message['type']}")
        except SignalingError as err:
            log.warning("signaling send failed: %s", err)
            raise AgentAbort("signaling-failed") from err

    def _page_event(self, kind: str, detail: Any) -> None:
        if kind == "candidate":
            self.events.emit(EventKind.GATHERED, str(detail))
            log.info("candidate %s", detail)
        elif kind in ("page-error", "candidate-error"):
            log.warning("page %s: %s", kind, detail)
        else:
            log.info("page %s: %s", kind, detail)

    # --- the run ------------------------------------------------------------------------------

    async def run(self) -> None:
        inp = self.inp
        self.events.emit(EventKind.START, f"{self.result.impl_version or self.kind.name}")
        await self.bridge.start()
        await _both(self._join(), self._start_browser())
        hello = await self._page("hello")
        log.info("page up: %s", hello.get("userAgent") if isinstance(hello, dict) else hello)
        if inp.controlling:
            gathered = await self._page("start", self._start_args(), self.cfg.gather_timeout)
            description = self._description(gathered)
            await self._send(description)
            self.events.emit(EventKind.DESCRIPTION_SENT, f"{len(description['candidates'])} cand.")
            remote = await self._until(self._remote, "waiting for the peer's answer")
            self._received(remote)
            sdp = self._remote_sdp(remote, offer=False)
            await self._page("remoteAnswer", {"sdp": sdp})
        else:
            await self._page("start", self._start_args())
            remote = await self._until(self._remote, "waiting for the peer's offer")
            self._received(remote)
            sdp = self._remote_sdp(remote, offer=True)
            args = {"sdp": sdp, "gatherTimeoutMs": self.cfg.gather_timeout * 1000}
            gathered = await self._page("answer", args, self.cfg.gather_timeout)
            description = self._description(gathered)
            await self._send(description)
            self.events.emit(EventKind.DESCRIPTION_SENT, f"{len(description['candidates'])} cand.")
        offerer = remote.get("data") if not inp.controlling else DATA_PLANES
        answerer = DATA_PLANES if not inp.controlling else remote.get("data")
        self.plane = common_plane(_planes(offerer), _planes(answerer))
        await self._connect()
        await self._send(
            msg.Connected(
                type="connected",
                peer=inp.peer,
                outcome=self.result.outcome,
                local=self.result.local_candidate,
                remote=self.result.remote_candidate,
            )
        )
        await self._until(self._peer_connected.wait(), "waiting for the peer to connect")
        self.events.emit(EventKind.PEER_CONNECTED)
        await self._exchange()
        if self.plane == DataPlane.DATACHANNEL:
            if inp.controlling and inp.throughput_mbps:
                await self._throughput_send()
            elif not inp.controlling and remote.get("throughput"):
                await self._throughput_receive()
        await self._send(
            msg.Done(
                type="done",
                peer=inp.peer,
                rtt_ms=self.result.rtt_ms,
                throughput_mbps=self.result.throughput_mbps,
            )
        )
        log.info("done; waiting for the peer's done")
        await self._until(self._peer_done.wait(), "waiting for the peer's done")

    # signaling

    async def _join(self) -> None:
        inp = self.inp
        ctx = ssl.create_default_context(cafile=inp.cafile)
        addr = (inp.signaling.host, inp.signaling.port)
        give_up = time.monotonic() + min(self._remaining(), max(2.0, 0.3 * inp.timeout))
        last_error: Exception | None = None
        for _ in range(int(inp.timeout / SIGNALING_RETRY_S) + 1):
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
                await asyncio.sleep(min(SIGNALING_RETRY_S, max(0.0, left)))
        if self.sig is None:
            log.error("cannot reach signaling %s: %r", inp.signaling, last_error)
            raise AgentAbort("signaling-failed")
        try:
            await self.sig.send(msg.Join(type="join", room=inp.room, peer=inp.peer))
        except SignalingError as err:
            raise AgentAbort("signaling-failed") from err
        reply = await self._until(self.sig.messages.get(), "joining the room")
        if reply.get("type") != Kind.JOINED:
            log.error("join refused: %s", reply)
            raise AgentAbort("signaling-failed")
        log.info("joined room %r as %r; present: %s", inp.room, inp.peer, reply.get("peers"))
        self.events.emit(EventKind.JOINED, inp.room)
        self._tasks.append(asyncio.get_running_loop().create_task(self._dispatch()))

    async def _dispatch(self) -> None:
        assert self.sig is not None
        while True:
            message = await self.sig.messages.get()
            kind = message.get("type")
            if kind in (Kind.OFFER, Kind.ANSWER):
                if not self._remote.done():
                    self._remote.set_result(message)
            elif kind == Kind.CONNECTED:
                log.info("peer connected: %s -> %s", message.get("local"), message.get("remote"))
                self._peer_connected.set()
            elif kind == Kind.DONE:
                self._peer_done.set()
            elif kind == Kind.THROUGHPUT_END:
                if not self._bulk_end.done():
                    self._bulk_end.set_result(message)
            elif kind == Kind.THROUGHPUT_RESULT:
                if not self._bulk_result.done():
                    self._bulk_result.set_result(message)
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
                log.debug("signaling message %r", kind)

    # the browser

    async def _start_browser(self) -> None:
        inp = self.inp
        hosts = [t.address.host for t in inp.turn] + ([inp.stun.host] if inp.stun else [])
        names = resolve_names(hosts)
        for name, address in names.items():
            log.info("%s resolves to %s", name, address)
        tls = any(t.transport == "tls" for t in inp.turn)
        plan = LaunchPlan(
            url=self.bridge.url,
            root=self.workdir / f"{self.kind.name}-profile",
            cafile=inp.cafile if tls else None,
            names=names,
            literals=tuple(dict.fromkeys(h for h in hosts if is_ip(h))),
        )
        try:
            argv = self.kind.launch(plan)
        except (NssError, OSError, RuntimeError) as err:
            log.error("cannot prepare %s: %s", self.kind.name, err)
            raise AgentAbort("browser-failed") from err
        log.info("starting %s", " ".join(argv))
        # started from this (the event loop's) thread: the browser's death signal follows it
        self.browser = BrowserProcess.start(
            argv, plan.env(), self.workdir / "browser.log", plan.root
        )
        self._tasks.append(asyncio.get_running_loop().create_task(self._watch_browser()))
        bound = min(BROWSER_START_TIMEOUT_S, max(0.1, self._remaining()))
        try:
            await self._until(asyncio.wait_for(self.bridge.ready.wait(), bound), "browser start")
        except TimeoutError:
            log.error("%s did not load the page in %.1f s", self.kind.name, bound)
            raise AgentAbort("browser-failed") from None
        self.startup_s = round(time.monotonic() - self.browser.started, 3)
        log.info("%s start-up: %.3f s (page loaded)", self.kind.name, self.startup_s)

    async def _watch_browser(self) -> None:
        next_sample = time.monotonic() + MEMORY_SAMPLE_S
        while self.browser is not None:
            if not self.browser.alive():
                log.error(
                    "%s exited (code %s); its log ends:\n%s",
                    self.kind.name,
                    self.browser.proc.returncode,
                    self.browser.log_tail(),
                )
                self.abort("browser-failed")
                return
            if time.monotonic() >= next_sample:
                self.browser.measure()
                next_sample = time.monotonic() + MEMORY_SAMPLE_S
            await asyncio.sleep(WATCH_INTERVAL_S)

    # descriptions

    def _start_args(self) -> dict[str, Any]:
        servers = servers_for(self.inp, time.time())
        log.info("ICE servers: %s (policy %s)", ", ".join(s.url for s in servers), self.inp.policy)
        return {
            "iceServers": [s.to_js() for s in servers],
            "policy": self.inp.policy,
            "controlling": self.inp.controlling,
            "gatherTimeoutMs": self.cfg.gather_timeout * 1000,
        }

    def _description(self, gathered: Any) -> msg.Description:
        if not isinstance(gathered, dict) or not isinstance(gathered.get("sdp"), str):
            log.error("page gave no local description: %r", gathered)
            raise AgentAbort("internal-error")
        sdp: str = gathered["sdp"]
        try:
            summary = parse_sdp(sdp)
        except SdpError as err:
            log.error("the browser's SDP: %s", err)
            raise AgentAbort("internal-error") from err
        self.local_mid = summary.mid
        stats = [s for s in gathered.get("candidates") or [] if isinstance(s, dict)]
        found = local_candidates(summary.candidates, stats)
        self._count(found)
        log.info(
            "gathered %s in %.0f ms%s",
            self.result.candidates_gathered,
            float(gathered.get("gatherMs") or 0),
            "" if gathered.get("complete") else " (gathering not complete: bounded)",
        )
        self.events.emit(EventKind.GATHERING_DONE, _counts(self.result.candidates_gathered))
        if not found:
            log.error("no candidates gathered")
            raise AgentAbort("gather-failed")
        plan = None
        if self.inp.controlling and self.inp.throughput_mbps and self.inp.throughput_seconds:
            plan = msg.ThroughputPlan(
                mbps=self.inp.throughput_mbps, seconds=self.inp.throughput_seconds
            )
        return msg.Description(
            type="offer" if self.inp.controlling else "answer",
            peer=self.inp.peer,
            role=self.inp.role,
            ufrag=summary.ufrag,
            pwd=summary.pwd,
            candidates=[msg.Candidate(sdp=c.value, relay_protocol=c.relay_protocol) for c in found],
            throughput=plan,
            impl=self.kind.name,
            data=[plane.value for plane in DATA_PLANES],
            sdp=sdp,
        )

    def _count(self, found: list[LocalCandidate]) -> None:
        kinds = []
        for candidate in found:
            kind = candidate.kind
            log.info("gathered %-9s %s", kind or "relay-?", candidate.value)
            if kind is not None:
                kinds.append(kind)
        self.result.candidates_gathered = count_candidates(kinds)

    def _received(self, remote: dict[str, Any]) -> None:
        impl = remote.get("impl") or "?"
        count = len(remote.get("candidates") or [])
        log.info("peer's description: %s, %d candidates, data %s", impl, count, remote.get("data"))
        self.events.emit(EventKind.DESCRIPTION_RECEIVED, f"{impl}: {count} cand.")

    def _remote_sdp(self, remote: dict[str, Any], *, offer: bool) -> str:
        try:
            sdp = remote_sdp(remote, offer=offer, mid=self.local_mid)
        except SdpError as err:
            log.error("bad description from the peer: %s", err)
            raise AgentAbort("signaling-failed") from err
        if not remote.get("sdp"):
            log.info(
                "no SDP from the peer (%s): made one from its ICE description", remote.get("impl")
            )
        return sdp

    # ICE

    async def _connect(self) -> None:
        log.info("connecting as %s", self.inp.role)
        bound = max(0.1, self._remaining())
        answer = await self._page("waitConnected", {"timeoutMs": bound * 1000}, bound)
        state = answer.get("state") if isinstance(answer, dict) else None
        path = answer.get("path") if isinstance(answer, dict) else None
        path = path if isinstance(path, dict) else {}
        sent = path.get("requestsSent")
        self.result.checks_sent = sent if isinstance(sent, int) else None
        selected = path.get("selected") if isinstance(path.get("selected"), dict) else None
        if state not in ("connected", "completed") or selected is None:
            log.error("ICE did not connect: state %s, %s pairs", state, path.get("pairs"))
            reason = "timeout" if state == "timeout" else "ice-failed"
            self.events.emit(EventKind.FAILED, f"ICE {state}")
            await self._bye(reason)
            raise AgentAbort(reason)
        log.info("selected pair's stats: %s", selected.get("raw"))
        local, remote = endpoint(selected.get("local")), endpoint(selected.get("remote"))
        if local is None or remote is None:
            log.error("selected pair without candidates: %s", selected)
            raise AgentAbort("ice-failed")
        self.result.set_pair(local, remote, stats_relay_protocol(selected.get("local") or {}))
        connect_ms = answer.get("connectMs")
        if isinstance(connect_ms, int | float):
            self.result.time_to_connect_s = round(connect_ms / 1000, 3)
        self.result.rtt_ms = _rtt_ms(selected)
        pair = f"{self.result.local_candidate} -> {self.result.remote_candidate}"
        self.events.emit(EventKind.NOMINATED, pair)
        self.events.emit(EventKind.CONNECTED, self.result.outcome)
        log.info(
            "selected %s: %s after %s s, %s checks sent, ICE RTT %s ms",
            pair,
            self.result.outcome,
            self.result.time_to_connect_s,
            self.result.checks_sent,
            self.result.rtt_ms,
        )

    # data

    async def _exchange(self) -> None:
        count = self.inp.exchange
        if self.plane != DataPlane.DATACHANNEL:
            # no data plane in common: the RTT is the browser's own ICE measurement
            stats = await self._page("stats")
            path = stats.get("path") if isinstance(stats, dict) else None
            selected = path.get("selected") if isinstance(path, dict) else None
            if isinstance(selected, dict) and _rtt_ms(selected) is not None:
                self.result.rtt_ms = _rtt_ms(selected)
            log.info("no data plane in common with the peer: RTT %s ms from ICE statistics",
                     self.result.rtt_ms)  # fmt: skip
            self.events.emit(EventKind.EXCHANGED, f"ICE RTT {self.result.rtt_ms} ms")
            return
        bound = min(CHANNEL_OPEN_TIMEOUT_S, max(0.1, self._remaining()))
        opened = await self._page("waitChannel", {"timeoutMs": bound * 1000}, bound)
        if not isinstance(opened, dict) or opened.get("state") != "open":
            log.error("the data channel did not open: %s", opened)
            await self._bye("exchange-failed")
            raise AgentAbort("exchange-failed")
        if count <= 0:
            return
        bound = count * PING_TIMEOUT_S
        answer = await self._page(
            "ping", {"count": count, "timeoutMs": PING_TIMEOUT_S * 1000}, bound
        )
        rtts = [r / 1000 for r in (answer or {}).get("rttsMs", []) if isinstance(r, int | float)]
        self.result.rtt_ms = median_ms(rtts)
        log.info("exchange: %d/%d answered, median RTT %s ms", len(rtts), count, self.result.rtt_ms)
        self.events.emit(EventKind.EXCHANGED, f"RTT {self.result.rtt_ms} ms")
        if not rtts:
            await self._bye("exchange-failed")
            raise AgentAbort("exchange-failed")

    async def _throughput_send(self) -> None:
        mbps, seconds = self.inp.throughput_mbps, self.inp.throughput_seconds
        assert mbps is not None and seconds is not None
        await self._send(msg.ThroughputStart(type="throughput-start", mbps=mbps, seconds=seconds))
        sent = await self._page("bulkSend", {"mbps": mbps, "seconds": seconds}, seconds + 1.0)
        if not isinstance(sent, dict):
            raise AgentAbort("throughput-failed")
        log.info("sent %s messages in %.3f s", sent.get("packets"), sent.get("duration_s") or 0)
        await self._send(
            msg.ThroughputEnd(
                type="throughput-end",
                packets=int(sent.get("packets") or 0),
                bytes=int(sent.get("bytes") or 0),
                duration_s=float(sent.get("duration_s") or 0.0),
            )
        )
        answer = await self._until(self._bulk_result, "waiting for the throughput result")
        value = answer.get("mbps")
        self.result.throughput_mbps = float(value) if isinstance(value, int | float) else None
        log.info("peer received %s Mbit/s", self.result.throughput_mbps)

    async def _throughput_receive(self) -> None:
        end = await self._until(self._bulk_end, "waiting for the peer's bulk data")
        stats: dict[str, Any] = {}
        drain_until = time.monotonic() + DRAIN_MAX_S
        while time.monotonic() < drain_until:
            stats = await self._page("bulkStats") or {}
            quiet = stats.get("quietMs")
            if quiet is None or quiet > DRAIN_QUIET_S * 1000:
                break
            await asyncio.sleep(0.05)
        received = int(stats.get("bytes") or 0)
        duration = end.get("duration_s")
        mbps = (
            throughput_mbps(received, float(duration))
            if isinstance(duration, int | float)
            else None
        )
        self.result.throughput_mbps = mbps
        log.info("received %d bytes of %s: %s Mbit/s", received, end.get("bytes"), mbps)
        await self._send(
            msg.ThroughputResult(
                type="throughput-result",
                mbps=mbps,
                bytes=received,
                packets=int(stats.get("packets") or 0),
            )
        )

    # the end

    async def _bye(self, reason: str) -> None:
        if self.sig is None or self._bye_sent:
            return
        self._bye_sent = True
        left = self.hard_deadline - time.monotonic() - 0.1
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.sig.send(msg.Bye(type="bye", reason=reason)), max(0.05, min(0.5, left))
            )

    async def shutdown(self) -> None:
        """Bounded clean-up: tell the peer, close the peer connection, kill the browser."""
        error = self.result.error
        if error and not error.startswith("peer-") and error != "signaling-failed":
            await self._bye(error)
        for task in self._tasks:
            task.cancel()
        if self.browser is not None and self.browser.alive() and self.bridge.ready.is_set():
            with contextlib.suppress(PageError, TimeoutError):
                await self.bridge.call("close", timeout=0.5)
                await asyncio.sleep(CLOSE_WAIT_S)  # TURN deallocations on their way
        self.stop_browser()
        await self.bridge.close()
        if self.sig is not None:
            await self.sig.close(timeout=0.3)
        pss = None if self.browser is None else self.browser.peak_pss_kib
        summary = (
            f"browser start-up {self.startup_s} s, peak memory "
            f"{'NA' if pss is None else f'{pss / 1024:.0f} MiB'} (PSS of its processes)"
        )
        log.info("%s: %s", self.kind.name, summary)
        self.events.emit(EventKind.DONE, f"{self.result.error or 'ok'}; {summary}")
        self.events.close()
        self._tidy()

    def stop_browser(self) -> None:
        if self.browser is not None:
            self.browser.measure()
            self.browser.stop()
            if self.result.error:
                log.info("browser log: %s", self.browser.log_path)

    def _tidy(self) -> None:
        """The profile and $HOME go; the browser's log stays (in --workdir)."""
        if not self.cfg.keep_profile:
            shutil.rmtree(self.workdir / f"{self.kind.name}-profile", ignore_errors=True)
        if self._tmp is not None:
            if self.result.error and self.browser is not None:
                log.info("browser log ends:\n%s", self.browser.log_tail())
            self._tmp.cleanup()


async def _both(first: Awaitable[None], second: Awaitable[None]) -> None:
    """Run both; the first failure cancels the other and is raised."""
    tasks = [asyncio.ensure_future(first), asyncio.ensure_future(second)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


def _planes(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list | tuple) else []


def _rtt_ms(selected: dict[str, Any]) -> float | None:
    rtt = selected.get("rtt")
    return round(float(rtt) * 1000, 3) if isinstance(rtt, int | float) else None


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{kind}={n}" for kind, n in counts.items() if n) or "none"


# --- result printing, watchdog and the command line -------------------------------------------


class ResultPrinter:
    """Prints the result line exactly once, from the main thread or from the watchdog."""

    def __init__(self, result: AgentResult, t0: float) -> None:
        self.result = result
        self.t0 = t0
        self.driver: Driver | None = None
        self._lock = threading.Lock()
        self._printed = False

    def emit(self) -> None:
        with self._lock:
            if self._printed:
                return
            self.result.duration_s = round(time.monotonic() - self.t0, 3)
            line = self.result.to_json()
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            self._printed = True

    def watchdog(self) -> None:
        self.result.fail("timeout")
        log.error("watchdog: --timeout reached, killing the browser and ending the process")
        if self.driver is not None and self.driver.browser is not None:
            self.driver.browser.kill_now()
        self.emit()
        logging.shutdown()
        os._exit(EXIT_FAILED)


async def _amain(cfg: DriverConfig, kind: BrowserKind, printer: ResultPrinter, t0: float) -> None:
    driver = Driver(cfg, kind, printer.result, t0)
    printer.driver = driver
    loop = asyncio.get_running_loop()
    run = loop.create_task(driver.run())

    def terminate(signame: str) -> None:
        log.warning("%s received", signame)
        printer.result.fail("terminated")
        driver.abort("terminated")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, terminate, sig.name)
    try:
        await asyncio.wait_for(run, max(0.0, driver.deadline - time.monotonic()) + 0.5)
    except AgentAbort as err:
        printer.result.fail(err.reason)
    except TimeoutError:
        printer.result.fail("timeout")
    except Exception:
        log.exception("internal error")
        printer.result.fail("internal-error")
    finally:
        try:
            await driver.shutdown()
        finally:
            driver.stop_browser()


def build_parser(kind: BrowserKind) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m lab.agents.{kind.name}",
        description=f"natlab ICE agent ({kind.name}): prints one JSON result line on stdout",
    )
    add_arguments(p)
    extra = p.add_argument_group(f"{kind.name} only")
    extra.add_argument(
        "--gather-timeout",
        type=float,
        default=GATHER_TIMEOUT_S,
        metavar="S",
        help="longest wait for ICE gathering to complete",
    )
    extra.add_argument("--keep-profile", action="store_true", help="keep the browser's profile")
    extra.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> DriverConfig:
    inputs = inputs_from_args(args)
    if not inputs.cafile:
        raise ValueError("--cafile is needed for TLS signaling")
    if not 0 < args.gather_timeout <= MAX_GATHER_TIMEOUT_S:
        raise ValueError(f"--gather-timeout must be within (0, {MAX_GATHER_TIMEOUT_S:g}]")
    return DriverConfig(
        inputs=inputs,
        gather_timeout=args.gather_timeout,
        keep_profile=args.keep_profile,
        verbose=args.verbose,
    )


def _setup_logging(peer: str, name: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(
        f"%(asctime)s.%(msecs)03dZ {peer} {name} %(levelname)s %(message)s", "%H:%M:%S"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def main(argv: Sequence[str] | None, kind: BrowserKind) -> int:
    t0 = time.monotonic()
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    parser = build_parser(kind)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        if exit_.code in (0, None):
            raise
        result = AgentResult(peer="?", role="?", started_at=started_at, impl=kind.name)
        result.fail("usage")
        ResultPrinter(result, t0).emit()
        return EXIT_USAGE
    _setup_logging(args.peer, kind.name)
    role = "controlling" if args.controlling else "controlled"
    result = AgentResult(
        peer=args.peer, role=role, started_at=started_at, impl=kind.name, impl_version=None
    )
    printer = ResultPrinter(result, t0)
    try:
        cfg = config_from_args(args)
    except ValueError as err:
        log.error("usage: %s", err)
        result.fail("usage")
        printer.emit()
        return EXIT_USAGE
    why = kind.missing()
    if why:
        log.error("%s cannot run here: %s", kind.name, why)
        result.fail("browser-failed")
        printer.emit()
        return EXIT_FAILED
    result.impl_version = kind.version()
    watchdog = threading.Timer(max(0.1, cfg.inputs.timeout - HARD_MARGIN_S), printer.watchdog)
    watchdog.daemon = True
    watchdog.start()
    try:
        asyncio.run(_amain(cfg, kind, printer, t0))
    except Exception:
        log.exception("internal error")
        result.fail("internal-error")
    finally:
        watchdog.cancel()
        printer.emit()
    log.info("result: %s%s", result.outcome, f" (error {result.error})" if result.error else "")
    return EXIT_OK if result.error is None else EXIT_FAILED
