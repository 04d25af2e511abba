"""``natlab gather``: the seed's Trickle-ICE test of a TURN server (coturn guide, "Testen") in a
headless browser.

    natlab gather --ice-server URL [--ice-server URL ...] (--user U --password P | --secret S)
                  [--browser chromium|firefox] [--timeout S] [--cafile CA.pem] [--json]
                  [--workdir DIR] [--policy all|relay]

The seed opens the WebRTC samples' Trickle ICE page, enters the TURN URL and REST credentials,
gathers and reads the relay candidates off the table. Here the lab's page (``page/agent.js``,
op ``gather``) does the same in Chromium or Firefox, with one RTCPeerConnection per ICE server
URL, so each candidate and each ``icecandidateerror`` belongs to one server and transport.
The table (or ``--json``) lists per URL every candidate with its time since that URL's
gathering began, the errors (code and text: 401 for wrong credentials, 701 when the server
cannot be reached or TLS fails) and one summary line.

Exit status: 0 when every TURN URL gave a relay candidate and every STUN URL a srflx candidate
(or, with no NAT in between, when the browser has none to give: gathering completed without an
error); 1 otherwise; 2 for a bad command line; 130 when interrupted.

Parsing, credentials, reading the page's answer, verdicts and formatting are pure functions,
tested without a browser; only ``gather`` and ``main`` at the end start one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.agents.browser.candidates import relay_protocol
from lab.agents.browser.iceservers import IceServer, is_ip, resolve_names, rest_credentials
from lab.agents.browser.sdp import SdpError, parse_candidate
from relay.stun.constants import REASONS
from reports.vocabulary import AgentImpl

if TYPE_CHECKING:
    from lab.agents.browser.kind import BrowserKind

log = logging.getLogger("natlab.gather")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
BROWSERS = (AgentImpl.CHROMIUM.value, AgentImpl.FIREFOX.value)
POLICIES = ("all", "relay")  # RTCIceTransportPolicy
DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = 120.0
MAX_SERVERS = 16  # one peer connection each, all gathering at once
BROWSER_START_TIMEOUT_S = 20.0
PAGE_SLACK_S = 3.0  # the page's answer may take this long beyond its own gathering bound
REST_PEER = "natlab-gather"  # the user part of the REST username "<expiry>:<user>"
# RFC 7064 and RFC 7065: default ports and the transports each scheme may name
DEFAULT_PORTS = {"stun": 3478, "turn": 3478, "turns": 5349}
TRANSPORTS = {"stun": ("udp",), "turn": ("udp", "tcp"), "turns": ("tcp",)}
# W3C webrtc-pc, RTCPeerConnectionIceErrorEvent: 701 is no STUN code; no host candidate
# reached the server (no answer, connection or TLS failure, or its name did not resolve)
BROWSER_REASONS = {701: "server not reachable"}
_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?"
)


class GatherUsageError(ValueError):
    """A bad command line: one clear sentence, exit status 2."""


# --- ICE server URLs and credentials ------------------------------------------------------


@dataclass(frozen=True)
class IceUrl:
    """One ICE server URL: RFC 7064 ``stun:``, RFC 7065 ``turn:`` and ``turns:``."""

    scheme: str  # stun | turn | turns
    host: str  # a name, an IPv4 address or an IPv6 address (no brackets)
    port: int
    transport: str  # udp | tcp: the client-to-server transport (TLS runs over tcp)

    @property
    def is_turn(self) -> bool:
        return self.scheme != "stun"

    @property
    def url(self) -> str:
        """The URL as the browser gets it: port and transport always spelled out."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{self.scheme}:{host}:{self.port}"
        return text if self.scheme == "stun" else f"{text}?transport={self.transport}"

    @property
    def wanted(self) -> str:
        """The candidate type this URL is there for."""
        return "relay" if self.is_turn else "srflx"


def parse_ice_url(text: str) -> IceUrl:
    """``stun:HOST[:PORT]``, ``turn:HOST[:PORT][?transport=udp|tcp]`` or
    ``turns:HOST[:PORT][?transport=tcp]``; GatherUsageError saying what is wrong otherwise."""
    scheme, sep, rest = text.strip().partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        raise GatherUsageError(
            f"{text!r}: unknown scheme {scheme!r}; an ICE server URL starts with "
            "stun:, turn: or turns:"
        )
    if rest.startswith("//"):
        raise GatherUsageError(f"{text!r}: no '//' after {scheme}: (RFC 7064, RFC 7065)")
    hostport, question, query = rest.partition("?")
    transport = _transport(text, scheme, query if question else None)
    host, port = _host_port(text, hostport, DEFAULT_PORTS[scheme])
    return IceUrl(scheme, host, port, transport)


def _transport(text: str, scheme: str, query: str | None) -> str:
    allowed = TRANSPORTS[scheme]
    if query is None:
        return allowed[0]
    if scheme == "stun":
        raise GatherUsageError(f"{text!r}: a stun: URL takes no '?{query}'")
    key, _, value = query.partition("=")
    if key.lower() != "transport":
        raise GatherUsageError(f"{text!r}: the only query a {scheme}: URL takes is ?transport=")
    value = value.lower()
    if value not in allowed:
        raise GatherUsageError(
            f"{text!r}: transport {value!r}; a {scheme}: URL takes transport="
            + " or ".join(allowed)
        )
    return value


def _host_port(text: str, hostport: str, default_port: int) -> tuple[str, int]:
    if hostport.startswith("["):
        host, bracket, tail = hostport[1:].partition("]")
        if not bracket:
            raise GatherUsageError(f"{text!r}: '[' without ']' around the IPv6 address")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise GatherUsageError(f"{text!r}: {host!r} is not an IPv6 address") from None
        if tail and not tail.startswith(":"):
            raise GatherUsageError(f"{text!r}: expected ':PORT' after ']'")
        port_text = tail[1:] if tail else None
    else:
        if hostport.count(":") > 1:
            raise GatherUsageError(f"{text!r}: an IPv6 address goes in brackets: [ADDRESS]")
        host, colon, port_text_ = hostport.partition(":")
        port_text = port_text_ if colon else None
        if not host:
            raise GatherUsageError(f"{text!r}: no host")
        if not is_ip(host) and not _HOST_NAME.fullmatch(host):
            raise GatherUsageError(f"{text!r}: {host!r} is neither a host name nor an address")
    if port_text is None:
        return host, default_port
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise GatherUsageError(f"{text!r}: port {port_text!r} is not a number in 1-65535")
    return host, int(port_text)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def credentials_from(
    user: str | None, password: str | None, secret: str | None, now: float
) -> Credentials | None:
    """Static credentials, or the seed's TURN REST recipe from a shared secret (username
    ``<now + TTL>:natlab-gather``, password base64(HMAC-SHA1(secret, username)))."""
    if secret is not None and (user is not None or password is not None):
        raise GatherUsageError("give --user and --password, or --secret, not both")
    if secret is not None:
        if not secret:
            raise GatherUsageError("--secret is empty")
        return Credentials(*rest_credentials(secret, REST_PEER, now))
    if (user is None) != (password is None):
        raise GatherUsageError("--user and --password go together")
    if user is None or password is None:
        return None
    if not user:
        raise GatherUsageError("--user is empty")
    return Credentials(user, password)


def ice_server(url: IceUrl, credentials: Credentials | None) -> IceServer:
    """The RTCIceServer of one URL: TURN with the credentials, STUN without."""
    if url.is_turn and credentials is not None:
        return IceServer(url.url, url.host, credentials.username, credentials.password)
    return IceServer(url.url, url.host)


# --- the command line ---------------------------------------------------------------------


@dataclass(frozen=True)
class GatherRequest:
    urls: tuple[IceUrl, ...]
    credentials: Credentials | None
    browser: str = AgentImpl.CHROMIUM.value
    timeout: float = DEFAULT_TIMEOUT_S
    cafile: str | None = None
    json: bool = False
    workdir: str | None = None
    policy: str = "all"
    verbose: bool = False


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="natlab gather",
        description="a headless browser gathers ICE candidates from each ICE server URL, as "
        "the WebRTC samples' Trickle ICE page does; exit 0 when every TURN URL gave a relay "
        "candidate and every STUN URL a srflx one",
    )
    p.add_argument(
        "--ice-server",
        action="append",
        required=True,
        metavar="URL",
        help="stun:HOST[:PORT], turn:HOST[:PORT]?transport=udp|tcp or "
        "turns:HOST[:PORT]?transport=tcp (repeatable)",
    )
    p.add_argument("--user", metavar="U", help="TURN username (with --password)")
    p.add_argument("--password", metavar="P", help="TURN password (with --user)")
    p.add_argument("--secret", metavar="S", help="TURN REST shared secret (static-auth-secret)")
    p.add_argument("--browser", choices=BROWSERS, default=AgentImpl.CHROMIUM.value)
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"longest wait for each URL's gathering (default {DEFAULT_TIMEOUT_S:g})",
    )
    p.add_argument("--cafile", metavar="CA.pem", help="a CA the browser trusts for turns:")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--workdir", metavar="DIR", help="keep the browser's log here")
    p.add_argument("--policy", choices=POLICIES, default="all", help="iceTransportPolicy")
    p.add_argument("-v", "--verbose", action="store_true", help="log the driver's steps")
    return p


def request_from_args(args: argparse.Namespace, now: float) -> GatherRequest:
    urls = tuple(dict.fromkeys(parse_ice_url(text) for text in args.ice_server))
    if len(urls) > MAX_SERVERS:
        raise GatherUsageError(f"at most {MAX_SERVERS} --ice-server URLs")
    credentials = credentials_from(args.user, args.password, args.secret, now)
    turn = [u.url for u in urls if u.is_turn]
    if turn and credentials is None:
        raise GatherUsageError(f"{turn[0]} needs credentials: --user U --password P, or --secret S")
    if args.policy == "relay" and not turn:
        raise GatherUsageError("--policy relay gathers relay candidates only: give a TURN URL")
    if args.policy == "relay" and len(turn) < len(urls):
        stun = next(u.url for u in urls if not u.is_turn)
        raise GatherUsageError(f"{stun}: --policy relay gathers no srflx candidates")
    if not 0 < args.timeout <= MAX_TIMEOUT_S:
        raise GatherUsageError(f"--timeout must be within (0, {MAX_TIMEOUT_S:g}] seconds")
    if args.cafile is not None and not os.access(args.cafile, os.R_OK):
        raise GatherUsageError(f"cannot read --cafile {args.cafile}")
    return GatherRequest(
        urls=urls,
        credentials=credentials,
        browser=args.browser,
        timeout=args.timeout,
        cafile=args.cafile,
        json=args.json,
        workdir=args.workdir,
        policy=args.policy,
        verbose=args.verbose,
    )


def parse_args(argv: Sequence[str], now: float) -> GatherRequest:
    """The request of a command line; SystemExit(2) with argparse's message if it is bad."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    try:
        return request_from_args(args, now)
    except GatherUsageError as err:
        parser.error(str(err))


# --- what the page answered ---------------------------------------------------------------


@dataclass(frozen=True)
class GatheredCandidate:
    type: str  # host | srflx | prflx | relay
    protocol: str  # udp | tcp: the candidate's own transport
    address: str
    port: int
    relay_protocol: str | None  # a relay candidate's client-to-TURN transport: udp | tcp | tls
    ms: float | None  # since this URL's gathering began
    candidate: str  # as the browser wrote it

    @property
    def endpoint(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class CandidateError:
    """An ``icecandidateerror`` (RTCPeerConnectionIceErrorEvent)."""

    code: int | None
    text: str
    url: str | None
    address: str | None
    port: int | None
    ms: float | None

    @property
    def label(self) -> str:
        """``401 Unauthorized.``: the browser's text, else the code's reason phrase (Firefox
        gives no text)."""
        if self.code is None:
            return f"? {self.text}".strip()
        text = self.text.strip() or REASONS.get(self.code) or BROWSER_REASONS.get(self.code, "")
        return f"{self.code} {text}".strip()


@dataclass(frozen=True)
class UrlResult:
    url: IceUrl
    candidates: tuple[GatheredCandidate, ...] = ()
    errors: tuple[CandidateError, ...] = ()
    complete: bool = False
    gather_ms: float | None = None
    failure: str | None = None  # nothing gathered at all: why

    def of_type(self, kind: str) -> list[GatheredCandidate]:
        return [c for c in self.candidates if c.type == kind]

    @property
    def ok(self) -> bool:
        """A relay candidate from a TURN URL; a srflx one from a STUN URL, or none and no
        error (no NAT in between: the browser drops a srflx equal to its host candidate)."""
        if self.failure is not None:
            return False
        if self.of_type(self.url.wanted):
            return True
        return not self.url.is_turn and self.complete and not self.errors

    @property
    def summary(self) -> str:
        """``<url>: 1 relay candidate`` or ``<url>: no relay candidate: 401 Unauthorized``."""
        wanted = self.url.wanted
        if self.failure is not None:
            return f"{self.url.url}: not gathered: {self.failure}"
        found = self.of_type(wanted)
        if found:
            kinds = sorted({c.relay_protocol or "?" for c in found}) if self.url.is_turn else []
            via = f" ({', '.join(kinds)})" if kinds else ""
            plural = "s" if len(found) > 1 else ""
            return f"{self.url.url}: {len(found)} {wanted} candidate{plural}{via}"
        if self.errors:
            # the server's answers (STUN codes) say more than the browser's own 701s
            ordered = sorted(self.errors, key=lambda e: e.code is None or e.code >= 700)
            why = "; ".join(dict.fromkeys(e.label for e in ordered))
        elif not self.complete:
            why = f"gathering did not complete in {_ms_text(self.gather_ms)}"
        elif self.url.is_turn:
            why = "gathering completed without an error"
        else:
            why = "no error (no NAT between this host and the server?)"
        return f"{self.url.url}: no {wanted} candidate: {why}"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def result_from_page(url: IceUrl, reply: Any) -> UrlResult:
    """The page's ``gather`` answer for one URL (browser data: every field is checked). A relay
    candidate's transport comes from its getStats local-candidate entry (matched by address,
    port and protocol), else from what its icecandidate event said."""
    if not isinstance(reply, dict):
        return UrlResult(url, failure="the page answered nothing usable")
    stats: dict[tuple[str, int, str], Mapping[str, Any]] = {}
    for entry in _dicts(reply.get("stats")):
        address, port = _str(entry.get("address")), _int(entry.get("port"))
        if address is not None and port is not None:
            stats[(address, port, str(entry.get("protocol") or "").lower())] = entry
    candidates: list[GatheredCandidate] = []
    for entry in _dicts(reply.get("candidates")):
        text = _str(entry.get("candidate"))
        if text is None:
            continue
        try:
            parsed = parse_candidate(text)
        except SdpError:
            log.warning("unreadable candidate from the browser: %r", text)
            continue
        protocol = None
        if parsed.type == "relay":
            protocol = relay_protocol(stats.get(parsed.endpoint, {})) or relay_protocol(entry)
        candidates.append(
            GatheredCandidate(
                type=parsed.type,
                protocol=parsed.transport,
                address=parsed.address,
                port=parsed.port,
                relay_protocol=protocol,
                ms=_float(entry.get("ms")),
                candidate=text,
            )
        )
    errors = tuple(
        CandidateError(
            code=_int(e.get("code")),
            text=_str(e.get("text")) or "",
            url=_str(e.get("url")),
            address=_str(e.get("address")),
            port=_int(e.get("port")),
            ms=_float(e.get("ms")),
        )
        for e in _dicts(reply.get("errors"))
    )
    return UrlResult(
        url,
        candidates=tuple(candidates),
        errors=errors,
        complete=reply.get("complete") is True,
        gather_ms=_float(reply.get("gatherMs")),
    )


def exit_status(results: Iterable[UrlResult]) -> int:
    results = list(results)
    return EXIT_OK if results and all(r.ok for r in results) else EXIT_FAILED


# --- output -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GatherReport:
    browser: str
    version: str | None
    policy: str
    timeout: float
    results: tuple[UrlResult, ...]

    @property
    def ok(self) -> bool:
        return exit_status(self.results) == EXIT_OK


def _ms_text(ms: float | None) -> str:
    return "?" if ms is None else f"{ms:.0f} ms"


def format_table(report: GatherReport) -> str:
    """The samples page's table, per URL: candidates and errors in time order, then one
    summary line per URL."""
    head = (
        f"{report.browser} ({report.version or 'version unknown'}), "
        f"policy {report.policy}, timeout {report.timeout:g} s"
    )
    lines = [head]
    for result in report.results:
        lines += ["", result.url.url]
        if result.failure is not None:
            lines.append(f"  not gathered: {result.failure}")
            continue
        lines.append(f"  {'ms':>8}  {'type':<6} {'protocol':<8} {'address:port':<46} relay")
        rows: list[tuple[float, str]] = []
        for c in result.candidates:
            row = f"  {_ms(c.ms)}  {c.type:<6} {c.protocol:<8} {c.endpoint:<46} "
            rows.append((c.ms or 0.0, (row + (c.relay_protocol or "")).rstrip()))
        for e in result.errors:
            where = f" ({e.url})" if e.url else ""
            rows.append((e.ms or 0.0, f"  {_ms(e.ms)}  error  {e.label}{where}"))
        lines += [text for _, text in sorted(rows, key=lambda r: r[0])]
        if not rows:
            lines.append("  (no candidates, no errors)")
        state = "complete" if result.complete else "not complete"
        lines.append(f"  gathering {state} after {_ms_text(result.gather_ms)}")
    lines.append("")
    lines += [r.summary for r in report.results]
    return "\n".join(lines)


def _ms(ms: float | None) -> str:
    return f"{'?':>8}" if ms is None else f"{ms:8.1f}"


def to_json(report: GatherReport) -> dict[str, Any]:
    return {
        "browser": report.browser,
        "version": report.version,
        "policy": report.policy,
        "timeout_s": report.timeout,
        "ok": report.ok,
        "servers": [
            {
                "url": r.url.url,
                "scheme": r.url.scheme,
                "transport": r.url.transport,
                "ok": r.ok,
                "summary": r.summary,
                "complete": r.complete,
                "gather_ms": r.gather_ms,
                "failure": r.failure,
                "candidates": [
                    {
                        "type": c.type,
                        "protocol": c.protocol,
                        "address": c.address,
                        "port": c.port,
                        "relay_protocol": c.relay_protocol,
                        "ms": c.ms,
                        "candidate": c.candidate,
                    }
                    for c in r.candidates
                ],
                "errors": [
                    {
                        "code": e.code,
                        "text": e.text,
                        "url": e.url,
                        "address": e.address,
                        "port": e.port,
                        "ms": e.ms,
                    }
                    for e in r.errors
                ],
            }
            for r in report.results
        ],
    }


# --- the browser --------------------------------------------------------------------------


def browser_kind(name: str) -> BrowserKind:
    if name == AgentImpl.FIREFOX:
        from lab.agents.firefox.browser import FIREFOX

        return FIREFOX
    from lab.agents.chromium.browser import CHROMIUM

    return CHROMIUM


async def gather(request: GatherRequest, kind: BrowserKind, workdir: Path) -> list[UrlResult]:
    """Start the browser, gather every URL at once (one peer connection each), close it."""
    from lab.agents.browser.bridge import PageError
    from lab.agents.browser.session import BrowserSession

    def on_event(kind_: str, detail: Any) -> None:
        if kind_ == "page-error":
            log.warning("page error: %s", detail)

    # a name that does not resolve is that URL's failure; the others still gather
    unresolved = {
        name
        for name, address in resolve_names(u.host for u in request.urls).items()
        if address is None
    }
    hosts = [u.host for u in request.urls if u.host not in unresolved]
    session = BrowserSession(kind, workdir, on_event, hosts=hosts, cafile=request.cafile)

    async def one(url: IceUrl) -> UrlResult:
        if url.host in unresolved:
            return UrlResult(url, failure=f"{url.host} does not resolve")
        args = {
            "iceServers": [ice_server(url, request.credentials).to_js()],
            "policy": request.policy,
            "timeoutMs": round(request.timeout * 1000),
        }
        try:
            reply = await session.bridge.call(
                "gather", args, timeout=request.timeout + PAGE_SLACK_S
            )
        except PageError as err:
            return UrlResult(url, failure=str(err))
        return result_from_page(url, reply)

    try:
        await session.start(BROWSER_START_TIMEOUT_S)
        return list(await asyncio.gather(*(one(url) for url in request.urls)))
    finally:
        await session.close()


async def _run(request: GatherRequest, kind: BrowserKind, workdir: Path) -> list[UrlResult]:
    """``gather`` with SIGTERM treated as Ctrl-C: both cancel it, and its cleanup runs."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await gather(request, kind, workdir)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _workdir(request: GatherRequest) -> tuple[Path, bool]:
    """The work directory and whether it is ours to remove."""
    if request.workdir:
        path = Path(request.workdir)
        path.mkdir(parents=True, exist_ok=True)
        return path, False
    return Path(tempfile.mkdtemp(prefix="natlab-gather-")), True


def main(argv: Sequence[str] | None = None) -> int:
    try:
        request = parse_args(sys.argv[1:] if argv is None else argv, time.time())
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    logging.basicConfig(
        level=logging.INFO if request.verbose else logging.WARNING,
        format="natlab gather: %(message)s",
        stream=sys.stderr,
    )
    kind = browser_kind(request.browser)
    why = kind.missing()
    if why:
        print(f"natlab gather: {kind.name} cannot run here: {why}", file=sys.stderr)
        return EXIT_FAILED
    from lab.agents.browser.session import BrowserStartError

    try:
        workdir, ours = _workdir(request)
    except OSError as err:
        print(f"natlab gather: cannot use --workdir {request.workdir}: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        results = asyncio.run(_run(request, kind, workdir))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("natlab gather: interrupted; the browser is stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (BrowserStartError, OSError) as err:
        why = str(err) if isinstance(err, BrowserStartError) else f"cannot run {kind.name}: {err}"
        print(f"natlab gather: {why}", file=sys.stderr)
        if not ours:
            print(f"natlab gather: browser log: {workdir / 'browser.log'}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if ours:
            shutil.rmtree(workdir, ignore_errors=True)
    report = GatherReport(
        kind.name, kind.version(), request.policy, request.timeout, tuple(results)
    )
    if request.json:
        print(json.dumps(to_json(report), indent=2))
    else:
        print(format_table(report))
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
    return exit_status(results)
