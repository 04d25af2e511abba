"""lab.cleanup naming convention: only nl-<runid>-<name> and natlab* tables are lab leftovers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lab import cleanup


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
    run_id = cleanup.new_run_id()
    assert cleanup.is_lab_name(cleanup.netns_name(run_id, "relay"))
    assert len(cleanup.ifname(run_id, "v0a")) <= 15
    with pytest.raises(ValueError):
        cleanup.ifname(run_id, "toolongsuffix")
    with pytest.raises(ValueError):
        cleanup.netns_name("Bad!", "h1")


def test_cleanup_nft_table_prefix() -> None:
    assert cleanup.is_lab_nft_table("natlab")
    assert cleanup.is_lab_nft_table("natlab_nat_a")
    assert not cleanup.is_lab_nft_table("filter")
    assert not cleanup.is_lab_nft_table("nat")


def test_cleanup_dry_run_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lab.cleanup", "--dry-run", "--no-mininet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "would remove" in result.stdout or "nothing to clean" in result.stdout
