"""Every ICE implementation the lab can run as an agent, by name (reports.vocabulary.AgentImpl).

Each lives in ``lab/agents/<name>/`` and declares itself there as ``IMPLEMENTATION``, a
``lab.agents.contract.Implementation``; this module only collects them.
"""

from __future__ import annotations

import importlib

from lab.agents.contract import Implementation
from reports.vocabulary import AGENT_IMPLS


def implementation(name: str) -> Implementation:
    """The implementation called ``name``; ValueError listing the valid names otherwise."""
    if name not in AGENT_IMPLS:
        raise ValueError(f"unknown agent implementation {name!r}; valid: {', '.join(AGENT_IMPLS)}")
    try:
        module = importlib.import_module(f"lab.agents.{name}")
    except ImportError as err:  # a driver's own import failed: say so, as a missing install
        return _unavailable(name, f"lab.agents.{name} cannot be imported: {err}")
    found: Implementation = module.IMPLEMENTATION
    return found


def _unavailable(name: str, why: str) -> Implementation:
    return Implementation(
        name=name,
        command=lambda: [],
        version=lambda: None,
        missing=lambda: why,
        data_planes=(),
    )


def implementations() -> list[Implementation]:
    return [implementation(name) for name in AGENT_IMPLS]


def skip_reason(names: tuple[str, ...]) -> str | None:
    """Why a cell with these implementations cannot run here (None: it can)."""
    reasons = [f"{name}: {why}" for name in names if (why := implementation(name).missing())]
    return "; ".join(dict.fromkeys(reasons)) or None
