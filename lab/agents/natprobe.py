"""RFC 5780 NAT behaviour discovery: classify the NAT in front of this host.

Runs on a lab host (usually behind a lab NAT) against natlab's relay started with two listening
addresses and ``rfc5780=True``. DESIGN.md, "NAT model": each NAT is verified, not trusted; this
probe is the verifier.

All tests use ONE local UDP socket, so they all observe the same mapping. Order matters:

1. Test I (RFC 5780 §4.3/§4.4): plain Binding to the primary address. Gives the mapped
   address, OTHER-ADDRESS (no OTHER-ADDRESS: the server does not do RFC 5780), ``nat_present``
   (mapped != local) and ``port_preserved``.
2. Filtering test II (§4.4): CHANGE-REQUEST change IP and port; an answer (from
   OTHER-ADDRESS) means endpoint-independent filtering.
3. Filtering test III (§4.4): CHANGE-REQUEST change port; an answer (from the primary IP,
   other port) means address-dependent filtering; neither answer: address-and-port-dependent.
4. Mapping test II (§4.3): Binding to (other IP, primary port); same mapped address as test I
   means endpoint-independent mapping.
5. Mapping test III (§4.3): Binding to OTHER-ADDRESS; same mapped address as mapping test II
   means address-dependent mapping, otherwise address-and-port-dependent. It runs whenever
   mapping test II answered, even when II already decided: contradicting answers (and a
   change-IP+port answer without a change-port one) are listed in ``anomalies``. The
   classification still follows the RFC's decision tree; ``consistent`` is False and the CLI
   with --strict exits 1. Seen for real: a Linux NAT whose router lets the dropped answer of
   filtering test II create a conntrack entry gives mapping test III another port (DESIGN.md
   "NAT model" pitfall); the probe says endpoint-independent mapping plus an anomaly.

The filtering tests run before the mapping tests II and III on purpose: those send to the other
IP and to OTHER-ADDRESS, which would open an address-dependent or address-and-port-dependent
filter for exactly the answers the filtering tests wait for (a false endpoint-independent).
Without a NAT (test I mapped == local), mapping tests II and III are skipped (§4.3: the
effective mapping is endpoint-independent).

Optional hairpin test (§4.5, ``hairpin=True``): a second socket learns its own mapping, the
first socket sends it one Binding indication (so that a filtering NAT lets the hairpinned packet
in), then the second socket sends Binding requests to the first socket's mapped address; the
hairpin works when the first socket receives one. Binding lifetime (§4.6) is not measured.

Retransmission follows RFC 8489 §6.2.1 (RTO doubling after each send, ``tries`` sends, then a
last wait of ``rm`` x RTO) with lab-sized defaults: RTO 200 ms, 4 sends, rm 2, so one unanswered
test gives up after 1.8 s (``natclass.transaction_timeout``).

CLI: ``python -m lab.agents.natprobe SERVER[:PORT] [--local IP[:PORT]] [--json]``; one JSON line
with --json, a human line otherwise. Exit status: 0 classified, 1 other failure, 2 the server does
not support RFC 5780, 3 no answer at all (timeout), 64 bad command line; with --strict, 1 also
for a classified result with anomalies.

The classification itself (and the result record) is pure and lives in ``lab.agents.natclass``;
this module does the sending, the waiting and the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.agents.natclass import (
    DEFAULT_RM,
    DEFAULT_RTO,
    DEFAULT_TRIES,
    FILTERING_II,
    FILTERING_III,
    HAIRPIN,
    HAIRPIN_BINDING,
    MAPPING_II,
    MAPPING_III,
    STATUS_ERROR,
    STATUS_NO_RFC5780,
    STATUS_OK,
    STATUS_TIMEOUT,
    TEST_I,
    Addr,
    ProbeResult,
    Step,
    anomalies,
    canonical,
    check_timing,
    classify_filtering,
    classify_mapping,
    fmt,
    nat_present,
    parse_hostport,
    retransmit_schedule,
)
from relay.stun import (
    ChangeRequest,
    ErrorCodeAttr,
    MappedAddress,
    Message,
    MessageClass,
    Method,
    OtherAddress,
    ResponseOrigin,
    StunDecodeError,
    XorMappedAddress,
    decode_message,
    encode_message,
    is_stun,
)
from relay.stun.attributes import Attribute

EXIT_USAGE = 64  # the CLI's bad command line (natclass.EXIT_CODES has the others)
DEFAULT_PORT = 3478
MAX_DATAGRAM = 65535


# ------------------------------------------------------------------ I/O


@dataclass
class _Answer:
    msg: Message
    source: Addr
    at: float


@dataclass
class _Endpoint(asyncio.DatagramProtocol):
    """A UDP socket that routes STUN responses and requests to waiters by transaction id."""

    transport: asyncio.DatagramTransport | None = None
    responses: dict[bytes, asyncio.Future[_Answer]] = field(default_factory=dict)
    requests: dict[bytes, asyncio.Future[_Answer]] = field(default_factory=dict)
    names: dict[bytes, str] = field(default_factory=dict)  # every transaction id sent: its step
    notes: list[str] = field(default_factory=list)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if not is_stun(data):
            return
        try:
            msg = decode_message(data)
        except StunDecodeError as err:
            self.notes.append(f"undecodable STUN message from {fmt(canonical(addr))}: {err}")
            return
        if msg.msg_class is MessageClass.INDICATION:
            return  # e.g. the hairpin test's hello reaching the second socket
        answer = _Answer(msg, canonical(addr), time.monotonic())
        waiting = self.requests if msg.msg_class is MessageClass.REQUEST else self.responses
        future = waiting.get(msg.transaction_id)
        if future is None:
            return
        if not future.done():
            future.set_result(answer)
        elif future.cancelled():
            name = self.names.get(msg.transaction_id, "?")
            self.notes.append(f"late answer to {name} from {fmt(answer.source)} (after giving up)")

    def error_received(self, exc: Exception) -> None:
        self.notes.append(f"socket error: {exc}")

    def send(self, data: bytes, addr: Addr) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    def expect(self, tid: bytes, name: str, *, request: bool = False) -> asyncio.Future[_Answer]:
        future: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        (self.requests if request else self.responses)[tid] = future
        self.names[tid] = name
        return future


async def _retransmit(
    send: Callable[[], None], future: asyncio.Future[_Answer], schedule: Sequence[float]
) -> tuple[_Answer | None, int, list[str]]:
    """Send, wait, resend per schedule; (result or None, sends made, send errors)."""
    sends = 0
    errors: list[str] = []
    for wait in schedule:
        try:
            send()
        except OSError as err:  # e.g. ENETUNREACH: a lab host without a route
            errors.append(f"send failed: {err}")
        sends += 1
        try:
            return await asyncio.wait_for(asyncio.shield(future), wait), sends, errors
        except TimeoutError:
            continue
    future.cancel()  # a later answer is noted as late
    return None, sends, errors


def _local_address(sockname: Sequence[Any], primary: Addr, family: int) -> Addr:
    """The socket's address, with a wildcard IP replaced by the source IP toward the server."""
    local = canonical(sockname)
    if not ipaddress.ip_address(local[0]).is_unspecified:
        return local
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as tmp:
            tmp.connect(primary)  # UDP connect sends nothing; it runs source address selection
            return (canonical(tmp.getsockname())[0], local[1])
    except OSError:
        return local


class _Prober:
    def __init__(
        self, ep: _Endpoint, primary: Addr, local: Addr, schedule: Sequence[float]
    ) -> None:
        self.ep = ep
        self.primary = primary
        self.local = local
        self.schedule = schedule
        self.steps: list[Step] = []
        self.errors: list[str] = []
        self.anomalies: list[str] = []

    async def binding(
        self,
        name: str,
        destination: Addr,
        *attrs: Attribute,
        expected_source: Addr | None = None,
        ep: _Endpoint | None = None,
    ) -> tuple[Step, Message | None]:
        ep = ep or self.ep
        tid = os.urandom(12)
        data = encode_message(Message.request(Method.BINDING, tid, *attrs))
        future = ep.expect(tid, name)
        started = time.monotonic()
        answer, sends, send_errors = await _retransmit(
            lambda: ep.send(data, destination), future, self.schedule
        )
        self.errors += [f"{name}: {e}" for e in send_errors]
        change = next((a for a in attrs if isinstance(a, ChangeRequest)), None)
        step = Step(
            name=name,
            destination=destination,
            change=_change_text(change),
            expected_source=expected_source,
            sends=sends,
        )
        if answer is None:
            self.steps.append(step)
            return step, None
        msg = answer.msg
        mapped_attr = msg.get(XorMappedAddress) or msg.get(MappedAddress)
        error = msg.get(ErrorCodeAttr)
        step = Step(
            name=step.name,
            destination=step.destination,
            change=step.change,
            answered=True,
            mapped=(
                (str(mapped_attr.ip), mapped_attr.port)
                if mapped_attr is not None and msg.msg_class is MessageClass.SUCCESS
                else None
            ),
            source=answer.source,
            expected_source=expected_source,
            error_code=error.code
            if error is not None and msg.msg_class is MessageClass.ERROR
            else None,
            sends=sends,
            rtt=round(answer.at - started, 4),
        )
        if msg.msg_class is MessageClass.ERROR:
            reason = f" {error.reason}" if error is not None and error.reason else ""
            self.errors.append(f"{name}: error response {step.error_code}{reason}")
        elif step.mapped is None:
            self.errors.append(f"{name}: success response without a mapped address")
        if not step.from_expected_source:
            self.errors.append(
                f"{name}: answer came from {fmt(step.source)}, expected {fmt(expected_source)}"
                + (" (server ignored CHANGE-REQUEST?)" if change is not None else "")
            )
        self.steps.append(step)
        return step, msg

    def result(self, status: str, started: float, **kw: Any) -> ProbeResult:
        return ProbeResult(
            status=status,
            server=self.primary,
            local=self.local,
            steps=tuple(self.steps),
            errors=tuple(self.errors + self.ep.notes),
            anomalies=tuple(self.anomalies),
            elapsed=round(time.monotonic() - started, 3),
            **kw,
        )

    async def run(self, started: float, hairpin: bool) -> ProbeResult:
        # --- test I (mapping and filtering) ---
        step1, msg1 = await self.binding(TEST_I, self.primary, expected_source=self.primary)
        if msg1 is None:
            total = sum(self.schedule)
            self.errors.insert(
                0,
                f"no answer from {fmt(self.primary)} after {step1.sends} sends in {total:.1f} s",
            )
            return self.result(STATUS_TIMEOUT, started)
        if step1.mapped is None:
            return self.result(STATUS_ERROR, started)
        mapped1 = step1.mapped
        common: dict[str, Any] = {
            "nat_present": nat_present(self.local, mapped1),
            "port_preserved": mapped1[1] == self.local[1],
        }
        origin = msg1.get(ResponseOrigin)
        if origin is not None and (str(origin.ip), origin.port) != step1.source:
            self.errors.append(
                f"I: RESPONSE-ORIGIN {fmt((str(origin.ip), origin.port))} is not the "
                f"packet's source {fmt(step1.source)}"
            )
        other_attr = msg1.get(OtherAddress)
        if other_attr is None:
            self.errors.insert(
                0,
                f"server {fmt(self.primary)} does not support RFC 5780: no OTHER-ADDRESS in its "
                "Binding response (start the relay with two listening addresses and rfc5780)",
            )
            return self.result(STATUS_NO_RFC5780, started, **common)
        other = canonical((str(other_attr.ip), other_attr.port))
        common["other_address"] = other
        if other[0] == self.primary[0] or other[1] == self.primary[1]:
            self.errors.insert(
                0,
                f"server {fmt(self.primary)} gives OTHER-ADDRESS {fmt(other)}, which must differ "
                "from the primary address in both IP and port (RFC 5780 §4.1)",
            )
            return self.result(STATUS_NO_RFC5780, started, **common)

        # --- filtering tests II and III (before the mapping tests touch the other IP) ---
        f2, _ = await self.binding(
            FILTERING_II, self.primary, ChangeRequest(True, True), expected_source=other
        )
        f3, _ = await self.binding(
            FILTERING_III,
            self.primary,
            ChangeRequest(False, True),
            expected_source=(self.primary[0], other[1]),
        )
        filtering = classify_filtering(_arrived(f2), _arrived(f3))

        # --- mapping tests II and III ---
        m2: Step | None = None
        m3: Step | None = None
        if common["nat_present"]:
            m2, _ = await self.binding(
                MAPPING_II, (other[0], self.primary[1]), expected_source=(other[0], self.primary[1])
            )
            if m2.mapped is not None:
                m3, _ = await self.binding(MAPPING_III, other, expected_source=other)
        mapping = classify_mapping(
            self.local, mapped1, m2.mapped if m2 else None, m3.mapped if m3 else None
        )
        self.anomalies += anomalies(
            mapped1,
            m2.mapped if m2 else None,
            m3.mapped if m3 else None,
            _arrived(f2),
            _arrived(f3),
        )

        hairpin_ok = await self.hairpin(mapped1) if hairpin else None
        status = STATUS_OK if mapping is not None and filtering is not None else STATUS_ERROR
        return self.result(
            status, started, mapping=mapping, filtering=filtering, hairpin=hairpin_ok, **common
        )

    async def hairpin(self, mapped1: Addr) -> bool | None:
        """RFC 5780 §4.5 from a second socket; None when that socket learns no mapping."""
        loop = asyncio.get_running_loop()
        assert self.ep.transport is not None
        bind_ip = self.ep.transport.get_extra_info("sockname")[0]
        try:
            transport, ep2 = await loop.create_datagram_endpoint(_Endpoint, local_addr=(bind_ip, 0))
        except OSError as err:
            self.errors.append(f"hairpin: cannot open a second socket: {err}")
            return None
        try:
            step, _ = await self.binding(
                HAIRPIN_BINDING, self.primary, expected_source=self.primary, ep=ep2
            )
            if step.mapped is None:
                self.errors.append("hairpin: the second socket learned no mapped address")
                return None
            mapped2 = step.mapped
            # let the hairpinned packet through a filtering NAT: socket 1 talks to mapping 2 first
            hello = encode_message(Message.indication(Method.BINDING, os.urandom(12)))
            try:
                self.ep.send(hello, mapped2)
            except OSError as err:
                self.errors.append(f"hairpin: send failed: {err}")
            tid = os.urandom(12)
            data = encode_message(Message.request(Method.BINDING, tid))
            future = self.ep.expect(tid, HAIRPIN, request=True)
            started = time.monotonic()
            answer, sends, send_errors = await _retransmit(
                lambda: ep2.send(data, mapped1), future, self.schedule
            )
            self.errors += [f"{HAIRPIN}: {e}" for e in send_errors]
            self.steps.append(
                Step(
                    name=HAIRPIN,
                    destination=mapped1,
                    answered=answer is not None,
                    source=answer.source if answer else None,
                    expected_source=mapped2,
                    sends=sends,
                    rtt=round(answer.at - started, 4) if answer else None,
                )
            )
            return answer is not None
        finally:
            self.errors += [f"hairpin socket: {n}" for n in ep2.notes]
            transport.close()


def _arrived(step: Step) -> bool | None:
    """Filtering evidence of one step: True/False, or None when its answer is unusable."""
    if not step.answered:
        return False
    if step.error_code is not None or step.mapped is None or not step.from_expected_source:
        return None
    return True


def _change_text(change: ChangeRequest | None) -> str:
    if change is None:
        return ""
    if change.change_ip and change.change_port:
        return "ip+port"
    return "ip" if change.change_ip else "port" if change.change_port else ""


async def probe(
    server: tuple[str, int],
    *,
    local: tuple[str, int] = ("0.0.0.0", 0),
    rto: float = DEFAULT_RTO,
    tries: int = DEFAULT_TRIES,
    rm: float = DEFAULT_RM,
    hairpin: bool = False,
) -> ProbeResult:
    """Classify the NAT between this host and an RFC 5780 server (see the module docstring).

    Never raises for network trouble: resolution and socket errors give status "error".
    Raises ValueError for bad timing arguments.
    """
    schedule = retransmit_schedule(rto, tries, rm)
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(server[0], server[1], type=socket.SOCK_DGRAM)
    except OSError as err:
        return ProbeResult(
            status=STATUS_ERROR,
            server=(server[0], server[1]),
            errors=(f"cannot resolve {server[0]}: {err}",),
            elapsed=round(time.monotonic() - started, 3),
        )
    family, _, _, _, sockaddr = infos[0]
    primary = canonical(sockaddr)
    if family == socket.AF_INET6 and local == ("0.0.0.0", 0):
        local = ("::", 0)
    try:
        transport, ep = await loop.create_datagram_endpoint(
            _Endpoint, local_addr=local, family=family
        )
    except OSError as err:
        return ProbeResult(
            status=STATUS_ERROR,
            server=primary,
            errors=(f"cannot bind {fmt(canonical(local))}: {err}",),
            elapsed=round(time.monotonic() - started, 3),
        )
    try:
        local_addr = _local_address(transport.get_extra_info("sockname"), primary, family)
        return await _Prober(ep, primary, local_addr, schedule).run(started, hairpin)
    finally:
        transport.close()


# ------------------------------------------------------------------ CLI


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # exit 2 means "no RFC 5780" here
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(
        prog="python -m lab.agents.natprobe",
        description="RFC 5780 NAT behaviour discovery against an RFC 5780 STUN server. "
        "Exit status: 0 classified, 1 failure, 2 no RFC 5780 at the server, 3 no answer.",
    )
    parser.add_argument("server", help=f"SERVER[:PORT] (port {DEFAULT_PORT} by default)")
    parser.add_argument("--local", default=None, help="local IP[:PORT] to bind (default any)")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--rto", type=float, default=DEFAULT_RTO, help="initial RTO, seconds")
    parser.add_argument("--tries", type=int, default=DEFAULT_TRIES, help="sends per test")
    parser.add_argument("--rm", type=float, default=DEFAULT_RM, help="last wait, RTO multiples")
    parser.add_argument("--hairpin", action="store_true", help="also test hairpinning (§4.5)")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when the answers contradict each other"
    )
    args = parser.parse_args(argv)
    try:
        server = parse_hostport(args.server, DEFAULT_PORT)
        local = parse_hostport(args.local, 0) if args.local else ("0.0.0.0", 0)
        check_timing(args.rto, args.tries, args.rm)
    except ValueError as err:
        parser.error(str(err))
    result = asyncio.run(
        probe(server, local=local, rto=args.rto, tries=args.tries, rm=args.rm, hairpin=args.hairpin)
    )
    if args.json:
        print(result.to_json(), flush=True)
    else:
        print(result.summary(), flush=True)
        for error in result.errors:
            print(f"natprobe: {error}", file=sys.stderr)
        for anomaly in result.anomalies:
            print(f"natprobe: anomaly: {anomaly}", file=sys.stderr)
    if args.strict and result.exit_code == 0 and not result.consistent:
        return 1
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
