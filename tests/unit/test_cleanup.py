"""lab.cleanup naming convention: only nl-<runid>-<name> and natlab* tables are lab leftovers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from lab import cleanup
from lab.nat.netns import ifname, netns_name, new_run_id


@pytest.mark.parametrize(
    "name", ["nl-3fa9c1-relay", "nl-3fa9c1-v0a", "nl-abcd-h1", "nl-0123456789ab-nat-a"]
)
def test_cleanup_lab_name_matches(name: str) -> None:
    assert cleanup.is_lab_name(name)


@pytest.mark.parametrize(
    "name",
    ["eth0", "lo", "nl", "nl-", "nl-3fa9c1", "nl-3fa9c1-", "nlx-3fa9c1-a", "s1-eth1", "nl-ab-h1",
     "nl-ABCDEF-h1", "docker0", "nl-3fa9c1-a b"],
)  # fmt: skip
def test_cleanup_other_name_ignored(name: str) -> None:
    assert not cleanup.is_lab_name(name)


def test_cleanup_names_built_by_convention() -> None:
    run_id = new_run_id()
    assert cleanup.is_lab_name(netns_name(run_id, "relay"))
    assert len(ifname(run_id, "v0a")) <= 15
    with pytest.raises(ValueError):
        ifname(run_id, "toolongsuffix")
    with pytest.raises(ValueError):
        netns_name("Bad!", "h1")


def test_cleanup_nft_table_prefix() -> None:
    assert cleanup.is_lab_nft_table("natlab")
    assert cleanup.is_lab_nft_table("natlab_nat_a")
    assert not cleanup.is_lab_nft_table("filter")
    assert not cleanup.is_lab_nft_table("nat")


def test_cleanup_dry_run_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lab.cleanup", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines, "prints what it would do, or that there is nothing to clean"
    assert all(line.startswith("would ") for line in lines) or lines == [
        "lab.cleanup: nothing to clean"
    ], result.stdout


def test_cleanup_run_id_filter() -> None:
    assert cleanup.is_lab_name("nl-3fa9c1-relay", "3fa9c1")
    assert not cleanup.is_lab_name("nl-3fa9c1-relay", "3fa9c2")
    assert cleanup.is_lab_nft_table(cleanup.nft_table_name("3fa9c1", "nat_a"), "3fa9c1")
    assert not cleanup.is_lab_nft_table("natlab_3fa9c10_nat", "3fa9c1")
    assert not cleanup.is_lab_nft_table("natlab", "3fa9c1")


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.mark.lab
def test_cleanup_removes_only_its_run_leftovers() -> None:
    # Touches only names with this test's own run id (--run-id), so live runs are safe.
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nft") is None:
        pytest.skip("needs root, iproute2 and nftables")
    run_id = new_run_id()
    ns, decoy_ns = netns_name(run_id, "h1"), f"keep-{run_id}"
    veth_a, veth_b = ifname(run_id, "va"), ifname(run_id, "vb")
    bridge = ifname(run_id, "br")
    table, decoy_table = cleanup.nft_table_name(run_id, "t"), f"keep_{run_id}"
    argv = [sys.executable, "-m", "lab.cleanup", "--run-id", run_id]
    try:
        _sh("ip", "netns", "add", ns)
        _sh("ip", "netns", "add", decoy_ns)
        _sh("ip", "link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
        _sh("ip", "link", "add", bridge, "type", "bridge")
        _sh("nft", "add", "table", "inet", table)
        _sh("nft", "add", "table", "inet", decoy_table)
        first = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert first.returncode == 0, first.stderr
        for name in (ns, veth_a, bridge, table):
            assert name in first.stdout, first.stdout
        assert cleanup.lab_namespaces(run_id) == [] and cleanup.lab_links(run_id) == []
        assert cleanup.lab_nft_tables(run_id) == []
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
        assert decoy_ns in netns.stdout
        tables = subprocess.run(
            ["nft", "list", "tables"], capture_output=True, text=True, timeout=30
        )
        assert decoy_table in tables.stdout
        second = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert second.returncode == 0 and "nothing to clean" in second.stdout, second
    finally:
        for cmd in (
            ("ip", "netns", "delete", ns),
            ("ip", "netns", "delete", decoy_ns),
            ("ip", "link", "delete", veth_a),
            ("ip", "link", "delete", bridge),
            ("nft", "delete", "table", "inet", table),
            ("nft", "delete", "table", "inet", decoy_table),
        ):
            subprocess.run(cmd, capture_output=True, timeout=30, check=False)
