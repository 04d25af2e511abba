"""RFC 5780 NAT classification from a probe's answers, and the probe's result record.

Pure (no sockets, no clock): ``lab.agents.natprobe`` sends the tests and feeds what came back to
``classify_mapping`` (§4.3), ``classify_filtering`` (§4.4) and ``anomalies``; the outcome is a
``ProbeResult`` of ``Step``s, one JSON line on the wire. Also the RFC 8489 §6.2.1 retransmission
schedule the probe follows and the SERVER[:PORT] parser of its command line. The vocabulary is
RFC 4787's long names from ``lab.nat.behavior`` (mapping and filtering use the same words).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lab.nat.behavior import Mapping

Addr = tuple[str, int]

# RFC 4787 vocabulary, as DESIGN.md "NAT model": Mapping's words, which Filtering shares.
ENDPOINT_INDEPENDENT = Mapping.EIM.value
ADDRESS_DEPENDENT = Mapping.ADM.value
ADDRESS_AND_PORT_DEPENDENT = Mapping.APDM.value
BEHAVIOURS = (ENDPOINT_INDEPENDENT, ADDRESS_DEPENDENT, ADDRESS_AND_PORT_DEPENDENT)

# ProbeResult.status values and the CLI exit status of each.
STATUS_OK = "ok"  # mapping and filtering classified
STATUS_ERROR = "error"  # answered, but not everything could be classified (see errors)
STATUS_NO_RFC5780 = "no-rfc5780"  # the Binding response has no (usable) OTHER-ADDRESS
STATUS_TIMEOUT = "timeout"  # no answer to test I at all
EXIT_CODES = {STATUS_OK: 0, STATUS_ERROR: 1, STATUS_NO_RFC5780: 2, STATUS_TIMEOUT: 3}

DEFAULT_RTO = 0.2
DEFAULT_TRIES = 4
DEFAULT_RM = 2.0  # RFC 8489 says 16; 2 keeps an unanswered test under 2 s in the lab

# Step names, in the order they run.
TEST_I = "I"
FILTERING_II = "filtering-II"
FILTERING_III = "filtering-III"
MAPPING_II = "mapping-II"
MAPPING_III = "mapping-III"
HAIRPIN_BINDING = "hairpin-binding"
HAIRPIN = "hairpin"


# ------------------------------------------------------------------ pure logic


def retransmit_schedule(
    rto: float = DEFAULT_RTO, tries: int = DEFAULT_TRIES, rm: float = DEFAULT_RM
) -> list[float]:
    """Seconds to wait after each send (RFC 8489 §6.2.1): RTO, 2 RTO, 4 RTO, ..., then rm RTO."""
    check_timing(rto, tries, rm)
    return [rto * 2**i for i in range(tries - 1)] + [rto * rm]


def transaction_timeout(
    rto: float = DEFAULT_RTO, tries: int = DEFAULT_TRIES, rm: float = DEFAULT_RM
) -> float:
    """How long one unanswered test takes: 1.8 s with the defaults."""
    return sum(retransmit_schedule(rto, tries, rm))


def check_timing(rto: float, tries: int, rm: float) -> None:
    if not rto > 0:
        raise ValueError(f"rto must be > 0, not {rto!r}")
    if tries < 1:
        raise ValueError(f"tries must be >= 1, not {tries!r}")
    if not rm > 0:
        raise ValueError(f"rm must be > 0, not {rm!r}")


def canonical(addr: Sequence[Any]) -> Addr:
    """(host, port) with the host in canonical text (no scope id, v4-mapped v6 unwrapped)."""
    ip = ipaddress.ip_address(str(addr[0]).split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (str(ip), int(addr[1]))


def nat_present(local: Addr, mapped: Addr) -> bool:
    """RFC 5780 §4.3: not behind a NAT when the mapped address is the local one."""
    return canonical(mapped) != canonical(local)


def classify_mapping(
    local: Addr, test1: Addr | None, test2: Addr | None, test3: Addr | None
) -> str | None:
    """RFC 5780 §4.3 from the mapped addresses of tests I, II, III (None: no answer).

    None when the answers present do not decide it.
    """
    if test1 is None:
        return None
    if not nat_present(local, test1):
        return ENDPOINT_INDEPENDENT  # §4.3: no NAT, the effective mapping is EIM
    if test2 is None:
        return None
    if canonical(test2) == canonical(test1):
        return ENDPOINT_INDEPENDENT
    if test3 is None:
        return None
    return ADDRESS_DEPENDENT if canonical(test3) == canonical(test2) else ADDRESS_AND_PORT_DEPENDENT


def classify_filtering(change_ip_and_port: bool | None, change_port: bool | None) -> str | None:
    """RFC 5780 §4.4 from whether the answers to tests II and III arrived.

    None for a test means it gave no usable evidence (not run, an error response, or an answer
    from the wrong source); the result is then None unless the other test decides it.
    """
    if change_ip_and_port is None:
        return None
    if change_ip_and_port:
        return ENDPOINT_INDEPENDENT
    if change_port is None:
        return None
    return ADDRESS_DEPENDENT if change_port else ADDRESS_AND_PORT_DEPENDENT


def anomalies(
    test1: Addr | None,
    mapping2: Addr | None,
    mapping3: Addr | None,
    filtering2: bool | None,
    filtering3: bool | None,
) -> list[str]:
    """Answers that contradict each other (the RFC's decision tree never looks at them)."""
    notes: list[str] = []
    if (
        test1 is not None
        and mapping2 is not None
        and mapping3 is not None
        and canonical(mapping2) == canonical(test1)
        and canonical(mapping3) != canonical(test1)
    ):
        notes.append(
            f"inconsistent mapping: mapping-II kept {fmt(test1)} "
            f"but mapping-III got {fmt(mapping3)}"
        )
    if filtering2 and filtering3 is False:
        notes.append("inconsistent filtering: change IP+port answered but change port did not")
    return notes


def fmt(addr: Addr | None) -> str:
    if addr is None:
        return "-"
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def parse_hostport(text: str, default_port: int) -> Addr:
    """'1.2.3.4', '1.2.3.4:3478', 'host:3478', '::1', '[::1]:3478' -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad address {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""  # no port, or a bare IPv6 address
    if not host:
        raise ValueError(f"bad address {text!r}: no host")
    if not port_text:
        return (host, default_port)
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"bad port in {text!r}")
    return (host, int(port_text))


# ------------------------------------------------------------------ results


def _addr_json(addr: Addr | None) -> list[Any] | None:
    return None if addr is None else [addr[0], addr[1]]


def _addr_from(value: Any) -> Addr | None:
    return None if value is None else (str(value[0]), int(value[1]))


@dataclass(frozen=True)
class Step:
    """One test: what was sent where, and what (if anything) came back."""

    name: str
    destination: Addr
    change: str = ""  # "", "ip+port" or "port": the CHANGE-REQUEST flags sent
    answered: bool = False  # a response (success or error) with our transaction id arrived
    mapped: Addr | None = None  # XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS) of a success
    source: Addr | None = None  # where the response came from
    expected_source: Addr | None = None
    error_code: int | None = None  # ERROR-CODE of an error response
    sends: int = 0
    rtt: float | None = None  # seconds from the first send to the answer

    @property
    def from_expected_source(self) -> bool:
        return self.expected_source is None or self.source == self.expected_source

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "destination": _addr_json(self.destination),
            "change": self.change,
            "answered": self.answered,
            "mapped": _addr_json(self.mapped),
            "source": _addr_json(self.source),
            "expected_source": _addr_json(self.expected_source),
            "error_code": self.error_code,
            "sends": self.sends,
            "rtt": None if self.rtt is None else round(self.rtt, 4),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Step:
        dest = _addr_from(d["destination"])
        assert dest is not None
        return cls(
            name=d["name"],
            destination=dest,
            change=d.get("change", ""),
            answered=bool(d["answered"]),
            mapped=_addr_from(d.get("mapped")),
            source=_addr_from(d.get("source")),
            expected_source=_addr_from(d.get("expected_source")),
            error_code=d.get("error_code"),
            sends=int(d.get("sends", 0)),
            rtt=d.get("rtt"),
        )


@dataclass(frozen=True)
class ProbeResult:
    """What the probe found. mapping/filtering use DESIGN.md's words, or None if unclassified."""

    status: str
    server: Addr
    local: Addr | None = None  # local IP toward the server and the socket's port
    other_address: Addr | None = None
    nat_present: bool | None = None
    mapping: str | None = None
    filtering: str | None = None
    port_preserved: bool | None = None  # mapped port == local port in test I
    hairpin: bool | None = None  # None: not tested (or the test could not run)
    steps: tuple[Step, ...] = ()
    errors: tuple[str, ...] = ()
    anomalies: tuple[str, ...] = ()  # answers that contradict each other (see module doc)
    elapsed: float = 0.0

    @property
    def mapped(self) -> dict[str, Addr | None]:
        """Mapped address seen per test (None: no answer)."""
        return {s.name: s.mapped for s in self.steps}

    @property
    def classified(self) -> bool:
        return self.status == STATUS_OK

    @property
    def consistent(self) -> bool:
        return not self.anomalies

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.status, 1)

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "server": _addr_json(self.server),
            "local": _addr_json(self.local),
            "other_address": _addr_json(self.other_address),
            "nat_present": self.nat_present,
            "mapping": self.mapping,
            "filtering": self.filtering,
            "port_preserved": self.port_preserved,
            "hairpin": self.hairpin,
            "mapped": {name: _addr_json(a) for name, a in self.mapped.items()},
            "steps": [s.to_dict() for s in self.steps],
            "errors": list(self.errors),
            "anomalies": list(self.anomalies),
            "consistent": self.consistent,
            "elapsed": round(self.elapsed, 3),
        }

    def to_json(self) -> str:
        """One line of JSON (addresses as [host, port])."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ProbeResult:
        d = json.loads(text)
        server = _addr_from(d["server"])
        assert server is not None
        return cls(
            status=d["status"],
            server=server,
            local=_addr_from(d.get("local")),
            other_address=_addr_from(d.get("other_address")),
            nat_present=d.get("nat_present"),
            mapping=d.get("mapping"),
            filtering=d.get("filtering"),
            port_preserved=d.get("port_preserved"),
            hairpin=d.get("hairpin"),
            steps=tuple(Step.from_dict(s) for s in d.get("steps", ())),
            errors=tuple(d.get("errors", ())),
            anomalies=tuple(d.get("anomalies", ())),
            elapsed=float(d.get("elapsed", 0.0)),
        )

    def summary(self) -> str:
        """One human line."""
        where = f"server {fmt(self.server)}"
        if self.status == STATUS_TIMEOUT:
            return f"timeout: no answer from {where}"
        test1 = self.step(TEST_I)
        mapped = test1.mapped if test1 is not None else None
        seen = f"mapped {fmt(mapped)} from local {fmt(self.local)}"
        if self.status == STATUS_NO_RFC5780:
            return f"no RFC 5780 at {where} ({seen})"
        nat = "NAT" if self.nat_present else "no NAT"
        parts = [
            f"{nat}: mapping {self.mapping or 'unknown'}",
            f"filtering {self.filtering or 'unknown'}",
            "port preserved" if self.port_preserved else "port not preserved",
        ]
        if self.hairpin is not None:
            parts.append("hairpin " + ("on" if self.hairpin else "off"))
        if self.anomalies:
            parts.append(f"{len(self.anomalies)} anomalies")
        prefix = "" if self.status == STATUS_OK else f"{self.status}: "
        return f"{prefix}{', '.join(parts)} ({seen}; {where})"
