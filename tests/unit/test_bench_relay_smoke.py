"""Smoke test: the relay benchmark harness in --quick mode against our relay.

Loopback always (it needs no privileges); the lab-namespace variant only as root.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.__main__ import build_parser, relay_config
from bench.relay_bench import Hosts, RelayBenchConfig, relay_argv, run_relay_benchmarks
from lab.nat.netns import netns_supported


def _quick(tmp_path: Path, topology: str) -> RelayBenchConfig:
    return RelayBenchConfig.quick(
        topology=topology,
        relays=("inrepo",),
        duration=0.3,
        search_duration=0.2,
        alloc_clients=50,
        hold_allocations=100,
        workdir=tmp_path,
    )


def _check(table, trials) -> None:  # type: ignore[no-untyped-def]
    rows = {row["figure"]: row for row in table.to_dict("records")}
    pps = rows["ChannelData 1200 B, 1 thread: relayed pps (full blast)"]
    assert pps["inrepo"] > 0 and pps["direct"] > 0
    assert 0 < pps["inrepo/direct"] < 2
    assert math.isnan(pps["coturn"])  # not measured in this run
    assert rows["Send indication 1200 B, 1 thread: relayed pps (full blast)"]["inrepo"] > 0
    assert rows["100 allocations held: succeeded"]["inrepo"] == 100
    assert rows["held allocations: file descriptors per allocation"]["inrepo"] >= 1
    allocate = "Allocate (401 + authenticated), 1 thread; direct = generator ceiling"
    assert rows[allocate]["inrepo"] > 0
    assert set(trials["target"]) == {"inrepo", "direct"}
    assert (trials["sent"] > 0).all()


@pytest.mark.timeout(120)
def test_bench_relay_quick_loopback(tmp_path: Path) -> None:
    table, trials = run_relay_benchmarks(_quick(tmp_path, "loopback"), log=lambda _m: None)
    _check(table, trials)


@pytest.mark.timeout(120)
def test_bench_relay_quick_netns(tmp_path: Path) -> None:
    reason = netns_supported()
    if reason:
        pytest.skip(f"namespace variant: {reason}")
    table, trials = run_relay_benchmarks(_quick(tmp_path, "netns"), log=lambda _m: None)
    _check(table, trials)


def test_bench_relay_same_flags_for_both_relays(tmp_path: Path) -> None:
    hosts = Hosts(relay_port=3478, sink_port=5000)
    ours = relay_argv("inrepo", hosts, 1, tmp_path / "log")
    coturn = relay_argv("coturn", hosts, 1, tmp_path / "log")
    common = ours[ours.index("-n") :]
    assert coturn[1 : 1 + len(common)] == common
    assert common[common.index("-m") : common.index("-m") + 2] == ["-m", "1"]
    assert "--allow-loopback-peers" in common  # loopback hosts: the peer is 127.0.0.1


def test_bench_cli_quick_config() -> None:
    args = build_parser().parse_args(["--quick", "--topology", "loopback", "--relays", "inrepo"])
    cfg = relay_config(args)
    assert cfg.topology == "loopback" and cfg.relays == ("inrepo",) and cfg.repeat == 1
    args = build_parser().parse_args(["--sizes", "100,1200", "--relay-repeat", "5"])
    cfg = relay_config(args)
    assert cfg.sizes == (100, 1200) and cfg.repeat == 5
