"""Mininet topologies: every NAT preset measured equal to its declaration, the address plan held,
and nothing of a run left behind (normal exit, exception, SIGKILL + cleanup)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from lab.cleanup import cleanup
from lab.nat.behavior import PRESETS
from lab.natcheck import check_nat
from lab.session import LabNetwork, lab_unavailable_reason, leftovers
from lab.topologies.addressing import in_plan
from lab.topologies.base import SideSpec
from lab.topologies.catalog import TOPOLOGIES, TwoNats

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(lab_unavailable_reason() is not None, reason=str(lab_unavailable_reason())),
]

NAT_PRESETS = [n for n in PRESETS if n != "open"]


def root_state() -> dict[str, str]:
    """What the lab must never change in the root namespace."""

    def run(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True).stdout

    links = sorted(line.split(":")[1].strip() for line in run("ip", "-o", "link").splitlines())
    return {
        "links": "\n".join(links),
        "routes": run("ip", "route", "show", "table", "all"),
        "nft": run("nft", "list", "tables"),
        "sysctl": run(
            "sysctl",
            "net.ipv4.ip_forward",
            "net.bridge.bridge-nf-call-iptables",
            "net.ipv4.conf.all.rp_filter",
        ),
    }


@pytest.mark.parametrize("name", NAT_PRESETS)
def test_topology_nat_preset_observed_equals_declared(name: str) -> None:
    (row,) = check_nat(name, ("natprobe",))
    assert row.agrees, row


@pytest.mark.interop
@pytest.mark.parametrize("name", NAT_PRESETS)
def test_topology_nat_preset_coturn_natdiscovery_agrees(name: str) -> None:
    (row,) = check_nat(name, ("natdiscovery",))
    if row.error.startswith("coturn's turnutils_natdiscovery is not installed"):
        pytest.skip(row.error)
    assert row.agrees, row


@pytest.mark.parametrize("kind", sorted(TOPOLOGIES))
def test_topology_routes_stay_inside_address_plan(kind: str) -> None:
    before = root_state()
    with LabNetwork(TOPOLOGIES[kind]) as lab:
        routes = lab.namespace_routes()
        assert len(routes) >= 6
        for node, table in routes.items():
            for line in table.splitlines():
                words = line.split()
                if not words or words[0] in ("local", "broadcast", "multicast"):
                    continue  # the kernel's own local table entries
                dest = words[1] if words[0] in ("blackhole", "unreachable") else words[0]
                if dest == "default":
                    # a blackhole, via a lab router, or into the host's own sink veth
                    sink = words[:3] == ["default", "dev", "sink0"]
                    assert words[0] == "blackhole" or sink or _via_in_plan(words), f"{node}: {line}"
                    continue
                assert in_plan(dest), f"{node}: route outside the address plan: {line}"
    assert root_state() == before


def _via_in_plan(words: list[str]) -> bool:
    return "via" in words and in_plan(words[words.index("via") + 1])


def test_topology_teardown_after_exception_leaves_nothing() -> None:
    before = root_state()
    with pytest.raises(RuntimeError, match="boom"), LabNetwork(TwoNats) as lab:
        run_id = lab.run_id
        lab.popen("pa", ["sleep", "60"])
        raise RuntimeError("boom")
    assert leftovers(run_id) == []
    assert root_state() == before


def test_topology_sigkilled_run_is_removed_by_cleanup() -> None:
    before = root_state()
    script = textwrap.dedent(
        """
        import sys, time
        from lab.session import LabNetwork
        from lab.topologies.catalog import TwoNats
        lab = LabNetwork(TwoNats).__enter__()
        lab.popen("pa", ["sleep", "120"])
        print(lab.run_id, flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        assert run_id, "the lab did not start"
        assert leftovers(run_id), "a live run must be visible"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert leftovers(run_id), "SIGKILL leaves the run behind: cleanup has work to do"
    _removed, failed = cleanup(run_id=run_id)
    assert not failed, failed
    deadline = time.monotonic() + 5
    while leftovers(run_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(run_id) == []
    assert root_state() == before


def test_topology_two_runs_at_once_do_not_collide() -> None:
    with LabNetwork(TwoNats) as one, LabNetwork(TwoNats, a=SideSpec("symmetric")) as two:
        assert one.run_id != two.run_id
        for lab in (one, two):
            assert lab.run("pa", ["ping", "-c1", "-W2", "198.18.0.30"]).returncode == 0
