"""Remove what killed lab runs left behind (`python -m lab.cleanup`, used by `make clean`).

Naming convention (every lab run must follow it, so that this module can find its leftovers
and nothing else):

- A run id is 4-12 lowercase letters or digits; `new_run_id()` makes 6 hex digits.
- Network namespaces a run creates are named ``nl-<runid>-<node>`` (`netns_name`), e.g.
  ``nl-3fa9c1-relay``.
- veth and bridge interfaces a run creates in the root namespace are named
  ``nl-<runid>-<suffix>`` too (`ifname`); Linux limits names to 15 bytes (IFNAMSIZ - 1), so
  with a 6-digit run id the suffix has at most 5 characters, e.g. ``nl-3fa9c1-v0a``.
- nftables tables a run adds to the root namespace are named ``natlab...`` (tables inside a
  lab namespace vanish with the namespace).
- Mininet's own leftovers (its unnamed namespaces, `s1-eth1` links, controllers) are removed by
  Mininet's `mn -c`, run only if Mininet is installed.

What it removes: namespaces matching the pattern (after SIGTERM to the processes still inside
them, by PID from `ip netns pids`), root-namespace interfaces matching the pattern whose kind
is veth or bridge, nftables tables whose name starts with "natlab". Nothing else. Idempotent:
a second run finds nothing and exits 0. `--dry-run` prints what would be removed.
Exit status: 0 when everything found was removed (or nothing was found), 1 if a removal failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence

PREFIX = "nl-"
RUN_ID_PATTERN = r"[0-9a-z]{4,12}"
LAB_NAME_RE = re.compile(rf"^{PREFIX}{RUN_ID_PATTERN}-[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*$")
NFT_TABLE_PREFIX = "natlab"
IFNAMSIZ = 16  # including the terminating NUL
CLEANABLE_LINK_KINDS = frozenset({"veth", "bridge"})
COMMAND_TIMEOUT_S = 60


def new_run_id() -> str:
    return secrets.token_hex(3)


def _check_run_id(run_id: str) -> None:
    if not re.fullmatch(RUN_ID_PATTERN, run_id):
        raise ValueError(f"run id {run_id!r} must be 4-12 lowercase letters or digits")


def netns_name(run_id: str, node: str) -> str:
    _check_run_id(run_id)
    name = f"{PREFIX}{run_id}-{node}"
    if not is_lab_name(name):
        raise ValueError(f"bad node name {node!r}")
    return name


def ifname(run_id: str, suffix: str) -> str:
    name = netns_name(run_id, suffix)
    if len(name.encode()) >= IFNAMSIZ:
        raise ValueError(f"interface name {name!r} longer than {IFNAMSIZ - 1} bytes")
    return name


def is_lab_name(name: str) -> bool:
    return LAB_NAME_RE.fullmatch(name) is not None


def is_lab_nft_table(name: str) -> bool:
    return name.startswith(NFT_TABLE_PREFIX)


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )


def lab_namespaces() -> list[str]:
    if shutil.which("ip") is None:
        return []
    out = _run(["ip", "-j", "netns", "list"])
    if out.returncode != 0 or not out.stdout.strip():
        return []
    return sorted(str(e["name"]) for e in json.loads(out.stdout) if is_lab_name(str(e["name"])))


def lab_links() -> list[str]:
    if shutil.which("ip") is None:
        return []
    out = _run(["ip", "-j", "-d", "link", "show"])
    if out.returncode != 0 or not out.stdout.strip():
        return []
    names = []
    for link in json.loads(out.stdout):
        name = str(link.get("ifname", ""))
        kind = link.get("linkinfo", {}).get("info_kind")
        if is_lab_name(name) and kind in CLEANABLE_LINK_KINDS:
            names.append(name)
    return sorted(names)


def lab_nft_tables() -> list[tuple[str, str]]:
    if shutil.which("nft") is None:
        return []
    out = _run(["nft", "-j", "list", "tables"])
    if out.returncode != 0 or not out.stdout.strip():
        return []
    tables = []
    for entry in json.loads(out.stdout).get("nftables", []):
        table = entry.get("table")
        if table and is_lab_nft_table(str(table["name"])):
            tables.append((str(table["family"]), str(table["name"])))
    return sorted(tables)


def _namespace_pids(name: str) -> list[int]:
    out = _run(["ip", "netns", "pids", name])
    return [int(p) for p in out.stdout.split() if p.isdigit()] if out.returncode == 0 else []


def cleanup(*, dry_run: bool = False, mininet: bool = True) -> tuple[list[str], list[str]]:
    """Remove lab leftovers; return (removed, failed) descriptions."""
    removed: list[str] = []
    failed: list[str] = []

    def do(what: str, argv: Sequence[str]) -> None:
        if dry_run:
            removed.append(f"would remove {what}")
            return
        result = _run(argv)
        if result.returncode == 0:
            removed.append(f"removed {what}")
        else:
            failed.append(f"{what}: {result.stderr.strip() or result.returncode}")

    for ns in lab_namespaces():
        for pid in _namespace_pids(ns):
            if dry_run:
                removed.append(f"would terminate pid {pid} in netns {ns}")
                continue
            try:
                os.kill(pid, signal.SIGTERM)
                removed.append(f"terminated pid {pid} in netns {ns}")
            except ProcessLookupError:
                pass
        do(f"netns {ns}", ["ip", "netns", "delete", ns])
    # Deleting one end of a veth pair deletes the other: re-list before each removal.
    for link in lab_links():
        if dry_run or link in lab_links():
            do(f"link {link}", ["ip", "link", "delete", link])
    for family, table in lab_nft_tables():
        do(f"nft table {family} {table}", ["nft", "delete", "table", family, table])
    if mininet and shutil.which("mn") is not None:
        if dry_run:
            removed.append("would run mn -c")
        else:
            result = _run(["mn", "-c"])
            (removed if result.returncode == 0 else failed).append(
                "ran mn -c" if result.returncode == 0 else f"mn -c: exit {result.returncode}"
            )
    return removed, failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.cleanup", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    parser.add_argument("--no-mininet", action="store_true", help="do not run `mn -c`")
    args = parser.parse_args(argv)
    removed, failed = cleanup(dry_run=args.dry_run, mininet=not args.no_mininet)
    for line in removed:
        print(line)
    for line in failed:
        print(f"failed: {line}", file=sys.stderr)
    if not removed and not failed:
        print("lab.cleanup: nothing to clean")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
