"""The words a result table is written in, each defined once (DESIGN.md "One result row").

``lab/`` writes rows in these words and ``reports/`` reads them; both import them from here,
since ``reports/`` reads tables only and never imports ``lab/``. ``StrEnum`` members compare
equal to their strings, so a value read back from a CSV or Parquet file is the same word.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """What a cell reached; ``expected`` and ``outcome`` use the same words."""

    DIRECT = "direct"
    RELAY_UDP = "relay-udp"
    RELAY_TCP = "relay-tcp"
    RELAY_TLS = "relay-tls"
    FAIL = "fail"


OUTCOMES: tuple[str, ...] = tuple(o.value for o in Outcome)
# The fallback ladder (DESIGN.md): a lower rung is worse; "fail" is below all.
LADDER: dict[str, int] = {
    Outcome.DIRECT: 4,
    Outcome.RELAY_UDP: 3,
    Outcome.RELAY_TCP: 2,
    Outcome.RELAY_TLS: 1,
    Outcome.FAIL: 0,
}


# An agent's own view when only the remote candidate is a relay: the other side's protocol
# decides the cell (lab.expectations.combine_sides). Never a cell outcome.
RELAY_REMOTE = "relay-remote"
AGENT_VIEWS: tuple[str, ...] = (*OUTCOMES[:-1], RELAY_REMOTE, Outcome.FAIL.value)


# The ``error`` of a row whose cell could not run here (an implementation is not installed)
# starts with "skipped:": neither passed nor failed.
SKIPPED = "skipped"


class RelayImpl(StrEnum):
    """The TURN servers the lab runs: the in-repo relay (``relay/``) and coturn."""

    INREPO = "inrepo"
    COTURN = "coturn"


RELAY_IMPLS: tuple[str, ...] = tuple(r.value for r in RelayImpl)


class AgentImpl(StrEnum):
    """The ICE implementations the lab runs as agents (lab/agents/<name>/)."""

    AIOICE = "aioice"
    CHROMIUM = "chromium"
    FIREFOX = "firefox"
    PION = "pion"
    LIBNICE = "libnice"


AGENT_IMPLS: tuple[str, ...] = tuple(a.value for a in AgentImpl)

# RFC 8445 section 5.1.1 candidate types, and the transport a relay candidate was reached by
CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")
RELAY_PROTOCOLS = ("udp", "tcp", "tls")


def relay_outcome(protocol: str) -> Outcome:
    """The ladder rung of a relayed path over ``protocol`` (one of RELAY_PROTOCOLS)."""
    return Outcome(f"relay-{protocol}")
