"""The aioice agent's command line: the contract's flags (``lab.agents.contract``) plus the
flags only this implementation takes, and the TURN servers with their REST credentials."""

from __future__ import annotations

import argparse
import ssl
from dataclasses import dataclass

from lab.agents.contract import (
    AgentInputs,
    HostPort,
    add_arguments,
    inputs_from_args,
    rest_credentials,
)

GATHER_TIMEOUT_S = 5.0
NOMINATION_WAIT_S = 2.0  # longest wait for a better pair once one pair has succeeded
MAX_GATHER_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class TurnEndpoint:
    """One TURN server as aioice is given it. ``addr``'s host may be a name (TLS: the name the
    relay's certificate is checked against, see ``tls_context``)."""

    protocol: str  # client-to-TURN transport: udp | tcp | tls
    addr: tuple[str, int]
    username: str
    password: str
    ssl_context: ssl.SSLContext | None = None

    @property
    def aioice_transport(self) -> str:
        return "udp" if self.protocol == "udp" else "tcp"

    def __str__(self) -> str:
        return f"turn-{self.protocol} {HostPort(*self.addr)}"


def tls_context(cafile: str | None) -> ssl.SSLContext:
    """A client context trusting ``cafile`` only, checking the server's name.

    For TURN over TLS aioice calls ``loop.create_connection(host=HOST, port=PORT, ssl=ctx)``
    with the server tuple it was given, and asyncio then resolves HOST (getaddrinfo: the
    agent's own /etc/hosts in a lab cell), connects to the address it gets and, as no
    ``server_hostname`` is passed, checks the certificate against HOST itself: a DNS name
    (``turn.lab.test``) against the certificate's DNS SANs, an IP against its IP SANs. So a
    name is passed through unresolved, never replaced by its address.
    """
    return ssl.create_default_context(cafile=cafile)


@dataclass(frozen=True)
class AgentConfig:
    """The contract's inputs and the aioice-only settings."""

    inputs: AgentInputs
    signaling_tls: bool = True
    host_ips: tuple[str, ...] | None = None  # host candidate addresses (None: aioice's choice)
    gather_timeout: float = GATHER_TIMEOUT_S
    nomination_wait: float = NOMINATION_WAIT_S
    ipv6: bool = False
    verbose: bool = False

    def turn_endpoints(self, now: float) -> list[TurnEndpoint]:
        """The offered TURN servers with REST credentials made at ``now`` (Unix time)."""
        inp = self.inputs
        if not inp.turn:
            return []
        assert inp.turn_secret is not None  # AgentInputs checks it
        username, password = rest_credentials(inp.turn_secret, inp.peer, now)
        return [
            TurnEndpoint(
                server.transport,
                (server.address.host, server.address.port),
                username,
                password,
                tls_context(inp.cafile) if server.transport == "tls" else None,
            )
            for server in inp.turn
        ]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lab.agents.aioice",
        description="natlab ICE agent (aioice): prints one JSON result line on stdout",
    )
    add_arguments(p)
    extra = p.add_argument_group("aioice only")
    extra.add_argument("--signaling-plain", action="store_true", help="plain TCP signaling")
    extra.add_argument(
        "--host-ip",
        action="append",
        metavar="IP",
        help="host candidate address; repeatable (default: every non-loopback address)",
    )
    extra.add_argument("--gather-timeout", type=float, default=GATHER_TIMEOUT_S, metavar="S")
    extra.add_argument(
        "--nomination-wait",
        type=float,
        default=NOMINATION_WAIT_S,
        metavar="S",
        help="after the first successful check, wait at most S for a better pair",
    )
    extra.add_argument("--ipv6", action="store_true", help="IPv6 host candidates too")
    extra.add_argument("-v", "--verbose", action="store_true", help="aioice's own logs too")
    return p


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """Validate the command line; ValueError with the reason otherwise."""
    inputs = inputs_from_args(args)
    if not args.signaling_plain and not inputs.cafile:
        raise ValueError("--cafile is needed for TLS signaling (or --signaling-plain)")
    if not 0 < args.gather_timeout <= MAX_GATHER_TIMEOUT_S:
        raise ValueError(f"--gather-timeout must be within (0, {MAX_GATHER_TIMEOUT_S:g}]")
    if args.nomination_wait < 0:
        raise ValueError("--nomination-wait must not be negative")
    return AgentConfig(
        inputs=inputs,
        signaling_tls=not args.signaling_plain,
        host_ips=tuple(args.host_ip) if args.host_ip else None,
        gather_timeout=args.gather_timeout,
        nomination_wait=args.nomination_wait,
        ipv6=args.ipv6,
        verbose=args.verbose,
    )
