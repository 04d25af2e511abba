"""aioice: natlab's default ICE agent, on the aioice library, behind the agent contract.

Modules: ``process`` (command line, result line, watchdog; ``python -m lab.agents.aioice``),
``config`` (the contract's flags plus aioice's own, TURN credentials), ``agent`` (the call
sequence), ``internals`` (the only module touching aioice internals; its list is checked by
tests/unit/test_aioice_internals.py), ``nomination`` (the regular-nomination rule, pure),
``gathering`` (parallel STUN/TURN queries), ``dataplane`` (pings, pongs, bulk datagrams).

aioice's own behaviour as the lab uses it: one relay candidate per offered TURN transport
(aioice alone allocates over one), relay priorities by transport as libwebrtc's (UDP > TCP >
TLS), regular nomination (aioice nominates aggressively), checks sent counted from its Binding
requests (retransmissions included); TURN over TLS by name checks the certificate against the
name (``config.tls_context``). This module stays light: it imports no aioice.
"""

from __future__ import annotations

import importlib.metadata
import sys

from lab.agents.contract import DataPlane, Implementation

SUPPORTED = "0.13."  # lab.agents.aioice.internals follows aioice 0.13's internals


def _command() -> list[str]:
    return [sys.executable, "-m", "lab.agents.aioice"]


def _version() -> str | None:
    try:
        return f"aioice {importlib.metadata.version('aioice')}"
    except importlib.metadata.PackageNotFoundError:
        return None


def _missing() -> str | None:
    try:
        import aioice  # noqa: F401
    except ImportError as err:
        return f"aioice does not import ({err}): pip install 'aioice>=0.13,<0.14'"
    version = (_version() or "aioice ?").removeprefix("aioice ")
    if not version.startswith(SUPPORTED):
        return (
            f"aioice {version} installed, natlab's agent needs {SUPPORTED}x (its internals: "
            "lab/agents/aioice/internals.py): pip install 'aioice>=0.13,<0.14'"
        )
    return None


IMPLEMENTATION = Implementation(
    name="aioice",
    command=_command,
    version=_version,
    missing=_missing,
    data_planes=(DataPlane.DATAGRAM,),
)
