"""The agent contract (lab.agents.contract), checked for every installed implementation.

Each implementation, run for real in a lab cell with our relay: with itself across two
full-cone NATs it connects directly; against aioice, relay-only over UDP, it relays; its result
names it and its version; its timeline has both sides' start, connected and done; a bad
command line gives exit 2 and a result line with error "usage". An implementation that is not
installed here is skipped with the reason ``natlab doctor`` gives.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lab.agents.agent_result import AgentResult
from lab.agents.contract import EXIT_USAGE
from lab.agents.registry import implementation
from lab.expectations import CellIntent
from lab.run import CellResult, CellSpec, run_cell
from reports.vocabulary import AGENT_IMPLS, AgentImpl

MARKS = {
    AgentImpl.CHROMIUM: pytest.mark.browser,
    AgentImpl.FIREFOX: pytest.mark.browser,
    AgentImpl.PION: pytest.mark.pion,
    AgentImpl.LIBNICE: pytest.mark.libnice,
}
IMPLS = [
    pytest.param(name, id=name, marks=[m] if (m := MARKS.get(name)) else []) for name in AGENT_IMPLS
]


def _need(name: str) -> None:
    why = implementation(name).missing()
    if why:
        pytest.skip(f"{name} is not installed here: {why}")


def _explain(result: CellResult) -> str:
    parts = [json.dumps(result.row.as_dict(), indent=1, default=str)]
    if result.artifacts:
        for log in sorted(result.artifacts.glob("agent-*.log")):
            parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
    return "\n".join(parts)


def _events(result: CellResult) -> list[tuple[str, str]]:
    return [(side, event) for _, side, event, _ in json.loads(result.row.timeline or "[]")]


@pytest.mark.parametrize("name", IMPLS)
def test_agent_contract_same_implementation_connects_directly(name: str, tmp_path: Path) -> None:
    _need(name)
    spec = CellSpec(
        CellIntent(nat_a="full-cone", nat_b="full-cone", turn_transports=("udp",)),
        scenario="contract",
        agent_a=name,
        agent_b=name,
        keep_artifacts=True,
    )
    result = run_cell(spec, tmp_path)
    why = _explain(result)
    assert result.row.expected == "direct"
    assert result.row.outcome == "direct", why
    assert result.row.agent_a_impl == result.row.agent_b_impl == name
    assert result.row.agent_a_version and result.row.agent_b_version, why
    for side in "ab":
        assert result.agents[side].impl == name, why
        for event in ("start", "connected", "done"):
            assert (side, event) in _events(result), f"{side} has no {event} event\n{why}"


@pytest.mark.parametrize("name", IMPLS)
def test_agent_contract_relay_only_against_aioice(name: str, tmp_path: Path) -> None:
    _need(name)
    spec = CellSpec(
        CellIntent(
            nat_a="port-restricted-cone",
            nat_b="symmetric",
            ice_policy="relay",
            turn_transports=("udp",),
        ),
        scenario="contract",
        agent_a=name,
        agent_b=AgentImpl.AIOICE,
    )
    result = run_cell(spec, tmp_path)
    why = _explain(result)
    assert result.row.expected == "relay-udp"
    assert result.row.outcome == "relay-udp", why
    assert result.row.relay_protocol == "udp", why


@pytest.mark.parametrize("name", IMPLS)
def test_agent_contract_bad_command_line_is_usage(name: str) -> None:
    _need(name)
    argv = [*implementation(name).command(), "--peer", "a", "--controlling", "--room", "r"]
    argv += ["--signaling", "198.18.0.30:443", "--timeout", "0.1"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_USAGE, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no result line; stderr: {proc.stderr[-2000:]}"
    result = AgentResult.from_json(lines[-1])
    assert result.error == "usage" and result.outcome == "fail"
    assert result.impl == name
