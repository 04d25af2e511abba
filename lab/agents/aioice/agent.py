"""One side of a call on aioice: the contract's sequence (``lab.agents.call.Call``) with aioice's
steps: gather through ``internals.LabConnection``, describe ufrag/pwd/candidates, take the
peer's, connect (regular nomination, ``nomination``), and pings and bulk datagrams over the
datagram plane (``dataplane``). When the peer speaks no datagram plane (its description's
``data``), pings and throughput are skipped: RTT and throughput stay null.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aioice

from lab.agents import messages as msg
from lab.agents.agent_result import AgentResult, candidate_kind, count_candidates
from lab.agents.aioice.config import AgentConfig
from lab.agents.aioice.dataplane import DataPlane, send_bulk
from lab.agents.aioice.gathering import candidate_line, parse_candidate_line
from lab.agents.aioice.internals import LabConnection
from lab.agents.call import PING_TIMEOUT_S, AgentAbort, BulkReceived, BulkSent, Call
from lab.agents.contract import DATAGRAM_SIZE, EventKind, EventLog
from lab.agents.contract import DataPlane as Plane
from reports.vocabulary import AgentImpl

log = logging.getLogger("natlab.aioice")

IMPL = AgentImpl.AIOICE.value
DATA_PLANES = (Plane.DATAGRAM.value,)  # what this agent speaks, preferred first
MAX_REMOTE_CANDIDATES = 64

__all__ = ["DATA_PLANES", "IMPL", "Agent", "AgentAbort"]


class Agent(Call):
    impl = IMPL

    def __init__(
        self, config: AgentConfig, result: AgentResult, t0: float, events: EventLog
    ) -> None:
        super().__init__(config.inputs, result, t0, events, signaling_tls=config.signaling_tls)
        self.cfg = config
        self.data_planes = DATA_PLANES  # read at run time: a test swaps the module's value
        self.conn: LabConnection | None = None
        self.data: DataPlane | None = None

    async def describe(self, offer: dict[str, Any] | None) -> msg.Description:
        await self._gather()
        assert self.conn is not None
        inp = self.inp
        return msg.Description(
            type="offer" if inp.controlling else "answer",
            peer=inp.peer,
            role=inp.role,
            ufrag=self.conn.local_username,
            pwd=self.conn.local_password,
            candidates=[
                msg.Candidate(sdp=candidate_line(c), relay_protocol=self.conn.relay_protocol_of(c))
                for c in self.conn.local_candidates
            ],
            throughput=self.throughput_plan(),
            impl=IMPL,
            data=list(self.data_planes),
        )

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
            on_check=self.on_check,
        )
        started = time.monotonic()
        log.info(
            "gathering (policy %s, stun %s, %s)",
            inp.policy,
            inp.stun,
            ", ".join(map(str, servers)) or "no TURN",
        )
        await self.until(self.conn.gather_candidates(), "gathering candidates")
        kinds = []
        for candidate in self.conn.local_candidates:
            relay_protocol = self.conn.relay_protocol_of(candidate)
            kind = candidate_kind(candidate.type, relay_protocol)
            kinds.append(kind)
            log.info("gathered %-9s %s", kind, candidate_line(candidate))
            self.events.emit(EventKind.GATHERED, candidate_line(candidate))
        self.result.candidates_gathered = count_candidates(kinds)
        log.info(
            "gathered %s in %.3f s", self.result.candidates_gathered, time.monotonic() - started
        )
        counts = ", ".join(f"{k} {n}" for k, n in self.result.candidates_gathered.items() if n)
        self.events.emit(EventKind.GATHERING_DONE, counts or "no candidates")
        if not kinds:
            log.error("no candidates: %s", "; ".join(self.conn.gather_failures) or "none offered")
            await self.fail("gather-failed")

    async def apply_remote(self, remote: dict[str, Any]) -> None:
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

    async def connect(self) -> None:
        assert self.conn is not None
        started = time.monotonic()
        log.info("connecting as %s", self.inp.role)
        try:
            await self.until(self.conn.connect(), "connecting")
        except ConnectionError as err:
            self.result.checks_sent = self.conn.checks_sent
            log.error("ICE failed after %.3f s: %s", time.monotonic() - started, err)
            await self.fail("ice-failed")
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
        if self.plane == Plane.DATAGRAM:
            self.data = DataPlane(self.conn)

    async def ping(self, count: int) -> list[float]:
        assert self.data is not None
        rtts: list[float] = []
        for seq in range(count):
            timeout = min(PING_TIMEOUT_S, self.remaining())
            if timeout <= 0:
                raise AgentAbort("timeout")
            rtt = await self.until(self.data.ping(seq, timeout), "exchanging messages")
            if rtt is not None:
                rtts.append(rtt)
        return rtts

    async def send_bulk(self, mbps: float, seconds: float) -> BulkSent:
        assert self.conn is not None
        try:
            sent, duration = await self.until(
                send_bulk(self.conn, mbps, seconds), "sending bulk data"
            )
        except ConnectionError as err:
            log.error("bulk send failed: %s", err)
            await self.fail("throughput-failed")
        return BulkSent(packets=sent, bytes=sent * DATAGRAM_SIZE, duration_s=duration)

    async def bulk_received(self) -> BulkReceived:
        assert self.data is not None
        last = self.data.last_bulk
        quiet = None if not self.data.bulk_packets else time.monotonic() - last
        return BulkReceived(self.data.bulk_packets, self.data.bulk_bytes, quiet)

    async def close_transport(self) -> None:
        if self.data is not None:
            await self.data.close()
        if self.conn is not None:
            left = self.hard_deadline - time.monotonic() - 0.3
            await asyncio.wait_for(self.conn.close(), max(0.05, min(2.0, left)))
