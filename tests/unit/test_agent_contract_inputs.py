"""The agent contract's pure parts: inputs and their command line, events, the registry's
names, the launcher's hosts file, and the cell's timeline column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.agents.contract import (
    AgentInputs,
    Event,
    EventKind,
    EventLog,
    HostPort,
    TurnServer,
    parse_hostport,
    parse_inputs,
    read_events,
)
from lab.agents.launch import hosts_file, with_hosts
from lab.agents.registry import implementation
from lab.expectations import CellIntent
from lab.run import CellSpec, spec_from_dict, spec_to_dict, timeline_json


def _inputs(**changes: object) -> AgentInputs:
    base: dict[str, object] = {
        "peer": "a",
        "controlling": True,
        "room": "r1",
        "signaling": HostPort("198.18.0.30", 443),
        "timeout": 20.0,
        "cafile": "/tmp/ca.pem",
        "stun": HostPort("198.18.0.2", 443),
        "turn": (
            TurnServer("udp", HostPort("198.18.0.2", 443)),
            TurnServer("tls", HostPort("turn.lab.test", 443)),
        ),
        "turn_secret": "s",
        "policy": "relay",
        "throughput_mbps": 5.0,
        "throughput_seconds": 3.0,
        "events": "/tmp/e.jsonl",
        "workdir": "/tmp/w",
    }
    base.update(changes)
    return AgentInputs(**base)  # type: ignore[arg-type]


def test_contract_inputs_argv_roundtrip() -> None:
    inputs = _inputs()
    assert parse_inputs(inputs.to_argv()) == inputs


def test_contract_inputs_extra_flags_follow_the_contract_ones() -> None:
    argv = _inputs(extra=("--nomination-wait", "1.0")).to_argv()
    assert argv[-2:] == ["--nomination-wait", "1.0"]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"peer": "c"}, "want a or b"),
        ({"controlling": False}, "controlling side"),
        ({"timeout": 0.5}, "--timeout"),
        ({"policy": "none"}, "--policy"),
        ({"throughput_seconds": None}, "go together"),
        ({"turn_secret": None}, "--turn-secret"),
        ({"cafile": None}, "--cafile"),
        ({"exchange": -1}, "--exchange"),
    ],
)
def test_contract_inputs_invalid_named(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        _inputs(**changes)


def test_contract_hostport_forms() -> None:
    assert parse_hostport("198.18.0.2", 3478) == HostPort("198.18.0.2", 3478)
    assert parse_hostport("turn.lab.test:443", 3478) == HostPort("turn.lab.test", 443)
    assert parse_hostport("[2001:db8::2]:5349", 3478) == HostPort("2001:db8::2", 5349)
    assert str(HostPort("2001:db8::2", 443)) == "[2001:db8::2]:443"
    for bad in ("", ":443", "host:port", "host:70000"):
        with pytest.raises(ValueError):
            parse_hostport(bad, 1)


def test_contract_events_written_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(str(path), "a", "aioice")
    log.emit(EventKind.START)
    log.emit(EventKind.GATHERED, "candidate:1 1 udp 1 10.0.1.2 5000 typ host")
    log.close()
    with path.open("a") as f:
        f.write('{"t": 1, "peer"')  # a torn last line (killed agent)
    events = read_events(path)
    assert [e.event for e in events] == ["start", "gathered"]
    assert events[1].detail and events[1].detail.endswith("typ host")
    assert read_events(tmp_path / "absent.jsonl") == []


def test_contract_event_log_without_file_records_nothing() -> None:
    log = EventLog(None, "b", "pion")
    log.emit(EventKind.DONE)
    log.close()


def test_timeline_merges_both_sides_in_time_order_and_caps(tmp_path: Path) -> None:
    for side, times in (("a", [10.0, 10.5, 12.0]), ("b", [10.2, 11.0])):
        lines = [Event(t, side, "x", "connected" if t > 11 else "start").to_json() for t in times]
        (tmp_path / f"events-{side}.jsonl").write_text("\n".join(lines) + "\n")
    timeline = json.loads(timeline_json(tmp_path) or "[]")
    assert [(round(t, 1), side) for t, side, _, _ in timeline] == [
        (0.0, "a"), (0.2, "b"), (0.5, "a"), (1.0, "b"), (2.0, "a"),
    ]  # fmt: skip
    capped = json.loads(timeline_json(tmp_path, limit=3) or "[]")
    assert len(capped) == 3
    assert capped[-1][1:3] == ["a", "connected"]  # each side's last event is kept
    assert timeline_json(tmp_path / "none") is None


def test_registry_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid: aioice, chromium, firefox, pion, libnice"):
        implementation("webkit")


def test_cell_spec_agents_validated_and_named() -> None:
    with pytest.raises(ValueError, match="unknown agent implementation 'webkit'"):
        CellSpec(agent_a="webkit")
    spec = CellSpec(CellIntent(nat_a="symmetric"), agent_a="chromium", agent_b="pion")
    assert "chromium-x-pion" in spec.name
    assert "aioice" not in CellSpec().name


def test_cell_spec_roundtrips_and_reads_flat_keys() -> None:
    spec = CellSpec(CellIntent(nat_a="symmetric", turn_transports=("tcp",)), agent_b="firefox")
    assert spec_from_dict(json.loads(json.dumps(spec_to_dict(spec)))) == spec
    flat = spec_from_dict({"nat_a": "symmetric", "turn_transports": "tcp", "agent_b": "firefox"})
    assert flat == spec
    assert spec_from_dict({"turn_transports": "none"}).intent.turn_transports == ()
    with pytest.raises(ValueError, match="unknown cell keys"):
        spec_from_dict({"nat_c": "open"})


def test_launch_hosts_file_and_wrapper(tmp_path: Path) -> None:
    hosts = hosts_file(tmp_path / "hosts", {"turn.lab.test": "198.18.0.2"})
    assert "198.18.0.2 turn.lab.test" in hosts.read_text().splitlines()
    argv = with_hosts(["agent", "--peer", "a"], hosts)
    assert argv[:3] == ["unshare", "--mount", "--"]
    assert argv[-4:] == [str(hosts), "agent", "--peer", "a"]
