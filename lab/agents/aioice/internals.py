"""The one module that touches aioice's internals: private attributes, undocumented helpers of
``aioice.ice`` / ``aioice.candidate`` / ``aioice.stun``, candidate pairs and protocol objects.

``USED_INTERNALS`` lists every one of them, and tests/unit/test_aioice_internals.py checks
each against the installed aioice (and that this file uses nothing unlisted), so an aioice
upgrade fails there, loudly, instead of in a lab cell. In this file an attribute whose name
starts with an underscore is always aioice's: natlab's own attributes have none.

``LabConnection`` extends aioice 0.13's Connection in three ways:

- gathering: host and srflx candidates as aioice gathers them, plus one relay candidate per
  offered TURN transport, allocated in parallel (aioice allocates from one TURN server over one
  transport). Each relay candidate gets libwebrtc's type preference for its client-to-TURN
  transport (UDP 2 > TCP 1 > TLS 0) and its own foundation, so checks run in that order;
- nomination: regular instead of aggressive (``lab.agents.aioice.nomination``);
- observation: connectivity checks sent (retransmissions included) and answered are counted
  and reported through a callback, for the result's ``checks_sent`` and the timeline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NamedTuple, cast

import aioice
import aioice.candidate
import aioice.ice
from aioice import Candidate, stun

from lab.agents.agent_result import relay_candidate_priority
from lab.agents.aioice.config import GATHER_TIMEOUT_S, NOMINATION_WAIT_S, TurnEndpoint
from lab.agents.aioice.gathering import address, redundant, run_parallel
from lab.agents.aioice.nomination import (
    PairState,
    PairView,
    awaiting_nomination,
    nomination_choice,
)

log = logging.getLogger("natlab.aioice")


class Internal(NamedTuple):
    path: str  # inside the aioice package: "module.Class.attribute" or "module.function"
    params: tuple[str, ...] = ()  # parameter names this file relies on (callables)


USED_INTERNALS: tuple[Internal, ...] = (
    # Connection state read or written here
    Internal("ice.Connection._check_list"),
    Internal("ice.Connection._check_list_done"),
    Internal("ice.Connection._components"),
    Internal("ice.Connection._local_candidates"),
    Internal("ice.Connection._local_candidates_end"),
    Internal("ice.Connection._local_candidates_start"),
    Internal("ice.Connection._nominated"),
    Internal("ice.Connection._nominating"),
    Internal("ice.Connection._protocols"),
    Internal("ice.Connection._transport_policy"),
    Internal("ice.Connection._use_ipv4"),
    Internal("ice.Connection._use_ipv6"),
    # Connection methods called or overridden here
    Internal("ice.Connection._check_list_maybe_fail"),
    Internal("ice.Connection.build_request", ("pair", "nominate")),
    Internal("ice.Connection.check_complete", ("pair",)),
    Internal("ice.Connection.check_start", ("pair",)),
    Internal("ice.Connection.check_state", ("pair", "state")),
    Internal("ice.Connection.switch_role", ("ice_controlling",)),
    # candidate pairs
    Internal("ice.CandidatePair.State"),
    Internal("ice.CandidatePair.component"),
    Internal("ice.CandidatePair.local_candidate"),
    Internal("ice.CandidatePair.nominated"),
    Internal("ice.CandidatePair.protocol"),
    Internal("ice.CandidatePair.remote_addr"),
    Internal("ice.CandidatePair.remote_candidate"),
    Internal("ice.CandidatePair.remote_nominated"),
    Internal("ice.CandidatePair.state"),
    # STUN protocol objects (one per local candidate)
    Internal("ice.StunProtocol", ("receiver",)),
    Internal("ice.StunProtocol.id"),
    Internal("ice.StunProtocol.local_candidate"),
    Internal("ice.StunProtocol.receiver"),
    Internal("ice.StunProtocol.request", ("request", "addr", "integrity_key")),
    Internal("ice.StunProtocol.send_stun", ("message", "addr")),
    Internal("ice.StunProtocol.transport"),
    # gathering helpers
    Internal("ice.get_host_addresses", ("use_ipv4", "use_ipv6")),
    Internal("ice.server_reflexive_candidate", ("protocol", "stun_server")),
    Internal(
        "ice.relayed_candidate",
        (
            "component",
            "hide_related_address",
            "protocol_factory",
            "turn_server",
            "turn_username",
            "turn_password",
            "turn_ssl",
            "turn_transport",
        ),
    ),
    Internal("candidate.candidate_foundation", ("candidate_type", "candidate_transport")),
    Internal("candidate.candidate_priority", ("candidate_component", "candidate_type")),
    # STUN messages
    Internal("stun.Class.REQUEST"),
    Internal("stun.Method.BINDING"),
    Internal("stun.Message.attributes"),
    Internal("stun.Message.error_code"),
    Internal("stun.Message.message_class"),
    Internal("stun.Message.message_method"),
    Internal("stun.TransactionError.response"),
)

# Connection methods overridden here, each with the aioice method that must still call it
# (else the override would silently stop working).
OVERRIDES: tuple[tuple[str, str], ...] = (
    ("check_start", "check_start_task"),
    ("_check_list_maybe_fail", "check_complete"),
)

# aioice methods that LabConnection replaces with an edited copy, and the SHA-256 of the
# source it was copied from (inspect.getsource): when aioice changes one, compare and re-copy.
COPIED_FROM: tuple[tuple[str, str], ...] = (
    (
        "ice.Connection.check_start",
        "7de056d252f46a155c8b9c2061077360d2aa6b0dc0ca7f4f5a4fa2fec2417bca",
    ),
    (
        "ice.Connection.gather_candidates",
        "d33db28d4d1e49ffe863eb34098e4a4a73a7cc5725e0da821e1fb94d7ade8cbb",
    ),
)

_STATES = {
    aioice.ice.CandidatePair.State.FROZEN: PairState.FROZEN,
    aioice.ice.CandidatePair.State.WAITING: PairState.WAITING,
    aioice.ice.CandidatePair.State.IN_PROGRESS: PairState.IN_PROGRESS,
    aioice.ice.CandidatePair.State.SUCCEEDED: PairState.SUCCEEDED,
    aioice.ice.CandidatePair.State.FAILED: PairState.FAILED,
}

CheckHook = Callable[[str, str], None]  # ("sent" | "answered", "local -> remote")
Gathered = tuple[Candidate, "aioice.ice.StunProtocol | None"]  # a candidate, its own protocol


class CountingStunProtocol(aioice.ice.StunProtocol):
    """aioice's StunProtocol, reporting the connectivity checks (Binding requests with
    USERNAME, retransmissions included) it sends."""

    def send_stun(self, message: stun.Message, addr: tuple[str, int]) -> None:
        if (
            message.message_class == stun.Class.REQUEST
            and message.message_method == stun.Method.BINDING
            and "USERNAME" in message.attributes
        ):
            cast("LabConnection", self.receiver).check_sent(self.local_candidate, addr)
        super().send_stun(message, addr)


class LabConnection(aioice.Connection):
    """An aioice Connection that gathers a relay candidate from every offered TURN transport
    and nominates regularly.

    ``host_addresses`` restricts host candidates to the given addresses (default: aioice's
    choice, every non-loopback address of the host, which in a lab namespace is its lab
    addresses).
    """

    def __init__(
        self,
        *,
        ice_controlling: bool,
        stun_server: tuple[str, int] | None = None,
        turn_servers: Sequence[TurnEndpoint] = (),
        transport_policy: aioice.TransportPolicy = aioice.TransportPolicy.ALL,
        host_addresses: Sequence[str] | None = None,
        use_ipv6: bool = False,
        gather_timeout: float = GATHER_TIMEOUT_S,
        nomination_wait: float = NOMINATION_WAIT_S,
        on_check: CheckHook | None = None,
    ) -> None:
        super().__init__(
            ice_controlling=ice_controlling,
            stun_server=stun_server,
            use_ipv4=True,
            use_ipv6=use_ipv6,
            transport_policy=transport_policy,
        )
        self.stun_address = stun_server
        self.turn_servers = tuple(turn_servers)
        self.host_addresses = None if host_addresses is None else tuple(host_addresses)
        self.gather_timeout = gather_timeout
        self.nomination_wait = nomination_wait
        self.on_check = on_check
        self.checks_sent = 0
        self.relay_protocols: dict[int, str] = {}  # StunProtocol.id -> udp | tcp | tls
        self.gather_failures: list[str] = []
        self.first_success_at: float | None = None
        self.nominator: asyncio.Task[None] | None = None

    # observation

    def check_sent(self, local: Candidate, addr: tuple[str, int]) -> None:
        self.checks_sent += 1
        if self.on_check is not None:
            self.on_check("sent", f"{address(local)} -> {addr[0]}:{addr[1]}")

    def check_answered(self, pair: aioice.ice.CandidatePair) -> None:
        if self.on_check is not None:
            host, port = pair.remote_addr
            self.on_check("answered", f"{address(pair.local_candidate)} -> {host}:{port}")

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
        coros = [self.gather_component(c, addresses) for c in sorted(self._components)]
        for candidates in await asyncio.gather(*coros):
            self._local_candidates += candidates
        self._local_candidates_end = True

    async def gather_component(self, component: int, addresses: list[str]) -> list[Candidate]:
        loop = asyncio.get_running_loop()
        candidates: list[Candidate] = []

        # Host candidates, as aioice gathers them, on counting protocols.
        host_protocols: list[aioice.ice.StunProtocol] = []
        for host_ip in addresses:
            try:
                _, protocol = await loop.create_datagram_endpoint(
                    lambda: CountingStunProtocol(self), local_addr=(host_ip, 0)
                )
            except OSError as exc:
                self.gather_failures.append(f"host {host_ip}: {exc}")
                log.warning("cannot bind a host candidate on %s: %s", host_ip, exc)
                continue
            host, port = protocol.transport.get_extra_info("sockname")[:2]
            protocol.local_candidate = Candidate(
                foundation=aioice.candidate.candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=aioice.candidate.candidate_priority(component, "host"),
                host=host,
                port=port,
                type="host",
            )
            host_protocols.append(protocol)
            candidates.append(protocol.local_candidate)
        self._protocols += host_protocols

        # Server-reflexive (IPv4 only, as aioice) and relay candidates, in parallel; the
        # results in submission order: srflx first, then TURN as offered.
        jobs: list[tuple[str, Coroutine[Any, Any, Gathered]]] = []
        if self.stun_address is not None:
            for base in host_protocols:
                if ":" not in base.local_candidate.host:
                    label = f"srflx {base.local_candidate.host} via STUN"
                    query = aioice.ice.server_reflexive_candidate(base, self.stun_address)
                    jobs.append((label, query))
        for server in self.turn_servers:
            jobs.append((str(server), self.relay_candidate(component, server)))
        results, failures = await run_parallel(jobs, self.gather_timeout)
        self.gather_failures += failures
        for candidate, relay in results:
            if candidate.type == "srflx" and redundant(candidate, candidates):
                log.info("srflx %s equals its base, not offered", address(candidate))
                continue
            candidates.append(candidate)
            if relay is not None:
                self._protocols.append(relay)
        return candidates

    async def relay_candidate(self, component: int, server: TurnEndpoint) -> Gathered:
        candidate, protocol = await aioice.ice.relayed_candidate(
            component=component,
            hide_related_address=self._transport_policy == aioice.TransportPolicy.RELAY,
            protocol_factory=lambda: CountingStunProtocol(self),
            turn_server=server.addr,
            turn_username=server.username,
            turn_password=server.password,
            # aioice passes this on to loop.create_connection(ssl=...): a context verifying
            # the lab CA for TLS (config.tls_context), False for plain TCP/UDP.
            turn_ssl=cast(bool, server.ssl_context or False),
            turn_transport=server.aioice_transport,
        )
        # One foundation per TURN server and transport (RFC 8445 §5.1.1.3), libwebrtc's order.
        candidate.foundation = aioice.candidate.candidate_foundation(
            "relay", f"udp-turn-{server.protocol}", f"{candidate.host}-{server.addr[0]}"
        )
        candidate.priority = relay_candidate_priority(component, server.protocol)
        self.relay_protocols[protocol.id] = server.protocol
        return candidate, protocol

    # nomination: regular, by the controlling agent (lab.agents.aioice.nomination)

    async def connect(self) -> None:
        self.nominator = asyncio.get_running_loop().create_task(self.nominate_loop())
        try:
            await super().connect()
        finally:
            self.nominator.cancel()

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
        self.check_answered(pair)
        if addr != pair.remote_addr:  # §7.2.5.2.1
            self.check_state(pair, aioice.ice.CandidatePair.State.FAILED)
            self.check_complete(pair)
            return
        if pair.remote_nominated:  # the controlling peer nominated it already (§7.3.1.5)
            pair.nominated = True
        if self.first_success_at is None:
            self.first_success_at = time.monotonic()
        self.check_state(pair, aioice.ice.CandidatePair.State.SUCCEEDED)
        self.check_complete(pair)

    def pair_views(self) -> list[PairView]:
        return [PairView(p.component, _STATES[p.state]) for p in self._check_list]

    def _check_list_maybe_fail(self) -> None:
        # A succeeded pair is still to be nominated by nominate_loop: not a failure yet.
        views = self.pair_views()
        if awaiting_nomination(views, controlling=self.ice_controlling, done=self._check_list_done):
            return
        super()._check_list_maybe_fail()

    async def nominate_loop(self) -> None:
        """Runs during connect(); bounded by the number of pairs and by connect() itself."""
        while not self._check_list_done:
            await asyncio.sleep(0.02)
            since = None
            if self.first_success_at is not None:
                since = time.monotonic() - self.first_success_at
            choice = nomination_choice(
                self.pair_views(),
                controlling=self.ice_controlling,
                nominating=bool(self._nominating),
                since_first_success=since,
                wait=self.nomination_wait,
            )
            if choice is not None:
                await self.nominate(self._check_list[choice])

    async def nominate(self, pair: aioice.ice.CandidatePair) -> None:
        assert self.remote_password is not None
        local, remote = address(pair.local_candidate), address(pair.remote_candidate)
        log.info("nominating %s -> %s", local, remote)
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
        self.check_answered(pair)
        pair.nominated = True
        self.check_complete(pair)

    # inspection (aioice 0.13 has no public accessors for these)

    def relay_protocol_of(self, candidate: Candidate) -> str | None:
        """The client-to-TURN transport a local relay candidate was allocated over."""
        for protocol in self._protocols:
            if protocol.local_candidate is candidate:
                return self.relay_protocols.get(protocol.id)
        return None

    def selected(self, component: int = 1) -> tuple[Candidate, Candidate, str | None] | None:
        """The nominated pair's local and remote candidates and the local one's TURN
        transport (None for a direct local candidate), or None before nomination."""
        pair = self._nominated.get(component)
        if pair is None:
            return None
        relay = self.relay_protocols.get(pair.protocol.id)
        return pair.local_candidate, pair.remote_candidate, relay
