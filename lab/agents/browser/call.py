"""The browser agents' steps of the call, shared by Chromium and Firefox: the driver is the agent.

    python -m lab.agents.chromium|firefox <the contract's flags> [--gather-timeout S] [-v]

The driver holds the signaling connection and runs the contract's sequence
(``lab.agents.call.Call``); the browser (``session.BrowserSession``: the loopback bridge, the
browser's process tree, its profile) does ICE on the page, one page command at a time: the
controlling side (a) offers, the controlled side (b) answers once it has the offer.
A peer's description with ``sdp`` (a browser) is used as it is; for any other peer the
browser gets an SDP made from its ICE credentials and candidates (``sdp.synthesize_sdp``), so
ICE runs against aioice, pion or libnice and DTLS never completes: the call is judged on ICE.
Connected is iceConnectionState connected/completed with a selected pair in getStats. With a
browser peer (both speak ``datachannel``) the pings and the throughput test run over the data
channel; with any other peer there is no data plane in common: RTT comes from the selected
pair's currentRoundTripTime where the browser has it, and throughput is null.

The browser is killed at the end whatever happened (by the watchdog too); its log stays in the
work directory, its profile and $HOME do not.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from lab.agents import messages as msg
from lab.agents.agent_result import AgentResult, count_candidates
from lab.agents.browser.bridge import PageError
from lab.agents.browser.candidates import LocalCandidate, endpoint, local_candidates
from lab.agents.browser.candidates import relay_protocol as stats_relay_protocol
from lab.agents.browser.config import DriverConfig
from lab.agents.browser.iceservers import servers_for
from lab.agents.browser.kind import BrowserKind
from lab.agents.browser.sdp import SdpError, parse_sdp, synthesize_sdp
from lab.agents.browser.session import BrowserSession, BrowserStartError
from lab.agents.call import PING_TIMEOUT_S, AgentAbort, BulkReceived, BulkSent, Call
from lab.agents.contract import DataPlane, EventKind, EventLog

log = logging.getLogger("natlab.browser")

BROWSER_START_TIMEOUT_S = 20.0  # bounded by the run's deadline too
PAGE_SLACK_S = 2.0  # a page command's answer may take this long beyond its own bound
CHANNEL_OPEN_TIMEOUT_S = 10.0
WATCH_INTERVAL_S = 0.2
MEMORY_SAMPLE_S = 0.5
DATA_PLANES = (DataPlane.DATACHANNEL.value,)


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


class Driver(Call):
    data_planes = DATA_PLANES
    answers_after_offer = True  # the browser's answer is made from the offer

    def __init__(
        self,
        cfg: DriverConfig,
        kind: BrowserKind,
        result: AgentResult,
        t0: float,
        events: EventLog,
    ) -> None:
        super().__init__(cfg.inputs, result, t0, events)
        self.impl = kind.name
        self.cfg = cfg
        self.kind = kind
        self.local_mid = "0"
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.workdir = self._workdir()
        inp = self.inp
        tls = any(t.transport == "tls" for t in inp.turn)
        self.session = BrowserSession(
            kind,
            self.workdir,
            self._page_event,
            hosts=[t.address.host for t in inp.turn] + ([inp.stun.host] if inp.stun else []),
            cafile=inp.cafile if tls else None,
            keep_profile=cfg.keep_profile,
        )

    def _workdir(self) -> Path:
        if self.inp.workdir:
            path = Path(self.inp.workdir)
            path.mkdir(parents=True, exist_ok=True)
            return path
        self._tmp = tempfile.TemporaryDirectory(prefix=f"natlab-{self.kind.name}-")
        return Path(self._tmp.name)

    def start_detail(self) -> str:
        return f"{self.result.impl_version or self.kind.name}, {self.inp.role}"

    # --- the page -----------------------------------------------------------------------------

    async def _page(self, op: str, args: dict[str, Any] | None = None, bound: float = 5.0) -> Any:
        """One page command, bounded by ``bound`` seconds plus slack and by the deadline."""
        timeout = min(bound + PAGE_SLACK_S, max(0.1, self.remaining()))
        bridge = self.session.bridge
        try:
            return await self.until(bridge.call(op, args, timeout=timeout), f"page {op}")
        except PageError as err:
            log.error("page %s failed: %s", op, err)
            raise AgentAbort("browser-failed" if self.session.gone() else "internal-error") from err

    def _page_event(self, kind: str, detail: Any) -> None:
        if kind == "candidate":
            self.events.emit(EventKind.GATHERED, str(detail))
            log.info("candidate %s", detail)
        elif kind in ("page-error", "candidate-error"):
            log.warning("page %s: %s", kind, detail)
        else:
            log.info("page %s: %s", kind, detail)

    # --- the steps ----------------------------------------------------------------------------

    async def prepare(self) -> None:
        await _both(self.join(), self._start_browser())
        hello = await self._page("hello")
        log.info("page up: %s", hello.get("userAgent") if isinstance(hello, dict) else hello)
        if not self.inp.controlling:
            await self._page("start", self._start_args())  # the peer connection, no offer yet

    async def _start_browser(self) -> None:
        bound = min(BROWSER_START_TIMEOUT_S, max(0.1, self.remaining()))
        try:
            await self.until(self.session.start(bound), "browser start")
        except BrowserStartError as err:
            log.error("%s", err)
            raise AgentAbort("browser-failed") from err
        self.tasks.append(asyncio.get_running_loop().create_task(self._watch_browser()))

    async def _watch_browser(self) -> None:
        browser = self.session.browser
        next_sample = time.monotonic() + MEMORY_SAMPLE_S
        while browser is not None:
            if not browser.alive():
                log.error("%s exited (code %s); its log ends:\n%s", self.kind.name,
                          browser.proc.returncode, browser.log_tail())  # fmt: skip
                self.abort("browser-failed")
                return
            if time.monotonic() >= next_sample:
                browser.measure()
                next_sample = time.monotonic() + MEMORY_SAMPLE_S
            await asyncio.sleep(WATCH_INTERVAL_S)

    def _start_args(self) -> dict[str, Any]:
        servers = servers_for(self.inp, time.time())
        log.info("ICE servers: %s (policy %s)", ", ".join(s.url for s in servers), self.inp.policy)
        return {
            "iceServers": [s.to_js() for s in servers],
            "policy": self.inp.policy,
            "controlling": self.inp.controlling,
            "gatherTimeoutMs": self.cfg.gather_timeout * 1000,
        }

    async def describe(self, offer: dict[str, Any] | None) -> msg.Description:
        if offer is None:  # the controlling side: the offer
            gathered = await self._page("start", self._start_args(), self.cfg.gather_timeout)
        else:
            sdp = self._remote_sdp(offer, offer=True)
            args = {"sdp": sdp, "gatherTimeoutMs": self.cfg.gather_timeout * 1000}
            gathered = await self._page("answer", args, self.cfg.gather_timeout)
        return self._description(gathered)

    async def apply_remote(self, remote: dict[str, Any]) -> None:
        await self._page("remoteAnswer", {"sdp": self._remote_sdp(remote, offer=False)})

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
        return msg.Description(
            type="offer" if self.inp.controlling else "answer",
            peer=self.inp.peer,
            role=self.inp.role,
            ufrag=summary.ufrag,
            pwd=summary.pwd,
            candidates=[msg.Candidate(sdp=c.value, relay_protocol=c.relay_protocol) for c in found],
            throughput=self.throughput_plan(),
            impl=self.kind.name,
            data=list(self.data_planes),
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

    def _remote_sdp(self, remote: dict[str, Any], *, offer: bool) -> str:
        try:
            sdp = remote_sdp(remote, offer=offer, mid=self.local_mid)
        except SdpError as err:
            log.error("bad description from the peer: %s", err)
            raise AgentAbort("signaling-failed") from err
        if not remote.get("sdp"):
            log.info("no SDP from the peer (%s): made one from its ICE description",
                     remote.get("impl"))  # fmt: skip
        return sdp

    async def connect(self) -> None:
        log.info("connecting as %s", self.inp.role)
        bound = max(0.1, self.remaining())
        answer = await self._page("waitConnected", {"timeoutMs": bound * 1000}, bound)
        state = answer.get("state") if isinstance(answer, dict) else None
        path = answer.get("path") if isinstance(answer, dict) else None
        path = path if isinstance(path, dict) else {}
        sent = path.get("requestsSent")
        self.result.checks_sent = sent if isinstance(sent, int) else None
        selected = path.get("selected") if isinstance(path.get("selected"), dict) else None
        if state not in ("connected", "completed") or selected is None:
            log.error("ICE did not connect: state %s, %s pairs", state, path.get("pairs"))
            self.events.emit(EventKind.FAILED, f"ICE {state}")
            await self.fail("timeout" if state == "timeout" else "ice-failed")
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
        log.info("selected %s: %s after %s s, %s checks sent, ICE RTT %s ms", pair,
                 self.result.outcome, self.result.time_to_connect_s, self.result.checks_sent,
                 self.result.rtt_ms)  # fmt: skip

    # --- data ---------------------------------------------------------------------------------

    async def rtt_without_plane(self) -> float | None:
        stats = await self._page("stats")
        path = stats.get("path") if isinstance(stats, dict) else None
        selected = path.get("selected") if isinstance(path, dict) else None
        return _rtt_ms(selected) if isinstance(selected, dict) else None

    async def ping(self, count: int) -> list[float]:
        bound = min(CHANNEL_OPEN_TIMEOUT_S, max(0.1, self.remaining()))
        opened = await self._page("waitChannel", {"timeoutMs": bound * 1000}, bound)
        if not isinstance(opened, dict) or opened.get("state") != "open":
            log.error("the data channel did not open: %s", opened)
            await self.fail("exchange-failed")
        args = {"count": count, "timeoutMs": PING_TIMEOUT_S * 1000}
        answer = await self._page("ping", args, count * PING_TIMEOUT_S)
        return [r / 1000 for r in (answer or {}).get("rttsMs", []) if isinstance(r, int | float)]

    async def send_bulk(self, mbps: float, seconds: float) -> BulkSent:
        sent = await self._page("bulkSend", {"mbps": mbps, "seconds": seconds}, seconds + 1.0)
        if not isinstance(sent, dict):
            await self.fail("throughput-failed")
        return BulkSent(
            packets=int(sent.get("packets") or 0),
            bytes=int(sent.get("bytes") or 0),
            duration_s=float(sent.get("duration_s") or 0.0),
        )

    async def bulk_received(self) -> BulkReceived:
        stats = await self._page("bulkStats") or {}
        quiet = stats.get("quietMs")
        return BulkReceived(
            packets=int(stats.get("packets") or 0),
            bytes=int(stats.get("bytes") or 0),
            quiet_s=quiet / 1000 if isinstance(quiet, int | float) else None,
        )

    # --- the end ------------------------------------------------------------------------------

    async def close_transport(self) -> None:
        """Close the peer connection (TURN deallocations leave), kill the browser; the
        profile and $HOME go, the browser's log stays (in --workdir)."""
        try:
            await self.session.close()
        finally:
            self.session.stop()
            browser = self.session.browser
            if self.result.error and browser is not None:
                log.info("browser log %s ends:\n%s", browser.log_path, browser.log_tail())
            if self._tmp is not None:
                self._tmp.cleanup()

    def summary(self) -> list[str]:
        pss = self.session.peak_pss_kib
        return [
            f"browser_startup_s={self.session.startup_s}",
            f"browser_peak_pss_mib={'NA' if pss is None else round(pss / 1024, 1)}",
        ]

    def on_watchdog(self) -> None:
        if self.session.browser is not None:
            self.session.browser.kill_now()


async def _both(first: Any, second: Any) -> None:
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


def _rtt_ms(selected: dict[str, Any]) -> float | None:
    rtt = selected.get("rtt")
    return round(float(rtt) * 1000, 3) if isinstance(rtt, int | float) else None


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{kind}={n}" for kind, n in counts.items() if n) or "none"
