"""Remove what killed lab runs left behind (`python -m lab.cleanup`, used by `make clean`).

Naming convention (every lab run must follow it, so that this module can find its leftovers
and nothing else):

- Run ids, network namespaces ``nl-<runid>-<node>`` and interfaces ``nl-<runid>-<suffix>``:
  as ``lab.nat.netns`` names them (`new_run_id`, `netns_name`, `ifname`, `is_lab_name`).
- nftables tables a run adds to the root namespace are named ``natlab...``, with the run id
  in the name (``natlab_<runid>_<what>``, `nft_table_name`); tables inside a lab namespace
  vanish with the namespace.
- Mininet topologies (``lab.topologies``) name their nodes ``nl<run id><role>`` with a 4-hex
  run id, e.g. ``nl3fa9pa``; each node is a shell ``bash ... mininet:nl3fa9pa`` holding an
  unnamed network namespace. A killed run leaves those shells (and any agent processes inside
  their namespaces) alive; they are found by that command line and by namespace inode, and
  ended by PID. Mininet's own ``mn -c`` is only run with ``--mn-c``: it kills every Mininet
  shell on the machine, including those of other runs.

What it removes: processes of Mininet lab nodes (above), namespaces matching the pattern
(after SIGTERM to the processes still inside them, by PID from `ip netns pids`),
root-namespace interfaces matching the pattern whose kind
is veth or bridge, nftables tables whose name starts with "natlab". Nothing else. Idempotent:
a second run finds nothing and exits 0. `--dry-run` prints what would be removed;
`--run-id ID` limits everything to one run (safe while other runs are live; no `mn -c`).
Exit status: 0 when everything found was removed (or nothing was found), 1 if a removal failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence

from lab.nat.netns import check_run_id, is_lab_name

NFT_TABLE_PREFIX = "natlab"
CLEANABLE_LINK_KINDS = frozenset({"veth", "bridge"})
COMMAND_TIMEOUT_S = 60


def nft_table_name(run_id: str, what: str) -> str:
    check_run_id(run_id)
    if not re.fullmatch(r"[A-Za-z0-9_]+", what):
        raise ValueError(f"bad nftables table suffix {what!r}")
    return f"{NFT_TABLE_PREFIX}_{run_id}_{what}"


def is_lab_nft_table(name: str, run_id: str | None = None) -> bool:
    if not name.startswith(NFT_TABLE_PREFIX):
        return False
    return run_id is None or name.startswith(f"{NFT_TABLE_PREFIX}_{run_id}_")


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return subprocess.CompletedProcess(list(argv), 1, "", f"{argv[0]}: {err}")


def lab_namespaces(run_id: str | None = None) -> list[str]:
    if shutil.which("ip") is None:
        return []
    out = _run(["ip", "-j", "netns", "list"])
    if out.returncode != 0 or not out.stdout.strip():
        return []
    names = (str(e["name"]) for e in json.loads(out.stdout))
    return sorted(n for n in names if is_lab_name(n, run_id))


def lab_links(run_id: str | None = None) -> list[str]:
    if shutil.which("ip") is None:
        return []
    out = _run(["ip", "-j", "-d", "link", "show"])
    if out.returncode != 0 or not out.stdout.strip():
        return []
    names = []
    for link in json.loads(out.stdout):
        name = str(link.get("ifname", ""))
        kind = link.get("linkinfo", {}).get("info_kind")
        if is_lab_name(name, run_id) and kind in CLEANABLE_LINK_KINDS:
            names.append(name)
    return sorted(names)


def lab_nft_tables(run_id: str | None = None) -> list[tuple[str, str]]:
    if shutil.which("nft") is None:
        return []
    out = _run(["nft", "-j", "list", "tables"])
    if out.returncode != 0 or not out.stdout.strip():
        return []
    tables = []
    for entry in json.loads(out.stdout).get("nftables", []):
        table = entry.get("table")
        if table and is_lab_nft_table(str(table["name"]), run_id):
            tables.append((str(table["family"]), str(table["name"])))
    return sorted(tables)


MININET_SHELL_RE = re.compile(r"mininet:(nl[0-9a-f]{4}[a-z0-9]{1,4})\b")


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _netns_inode(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


RUN_ENV = "NATLAB_RUN"  # set on every process a lab run starts in a node (lab.session)


def _run_marker(pid: str) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return None
    prefix = RUN_ENV.encode() + b"="
    for item in env:
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


def mininet_leftovers(run_id: str | None = None) -> list[tuple[int, str]]:
    """(pid, description) of lab Mininet shells, of every process in their namespaces, and of
    processes a run started (marked with NATLAB_RUN) even after their namespace lost its shell."""
    pids = [p for p in os.listdir("/proc") if p.isdigit() and p != str(os.getpid())]
    shells: dict[str, str] = {}  # netns inode -> node name
    found: list[tuple[int, str]] = []
    for pid in pids:
        match = MININET_SHELL_RE.search(_cmdline(pid))
        if match is None or (run_id is not None and not match.group(1).startswith(f"nl{run_id}")):
            continue
        inode = _netns_inode(pid)
        root = _netns_inode("1")
        if inode is not None and inode != root:
            shells[inode] = match.group(1)
        found.append((int(pid), f"mininet node {match.group(1)}"))
    seen = {pid for pid, _ in found}
    for pid in pids:
        if int(pid) in seen:
            continue
        inode = _netns_inode(pid)
        marker = _run_marker(pid)
        if inode in shells:
            found.append((int(pid), f"process in {shells[inode]}: {_cmdline(pid)[:80]}"))
        elif marker is not None and (run_id is None or marker == run_id):
            found.append((int(pid), f"process of run {marker}: {_cmdline(pid)[:80]}"))
    return found


def _namespace_pids(name: str) -> list[int]:
    out = _run(["ip", "netns", "pids", name])
    return [int(p) for p in out.stdout.split() if p.isdigit()] if out.returncode == 0 else []


def cleanup(
    *, dry_run: bool = False, mininet: bool = False, run_id: str | None = None
) -> tuple[list[str], list[str]]:
    """Remove lab leftovers (of one run if run_id); return (removed, failed) descriptions."""
    if run_id is not None:
        check_run_id(run_id)
        mininet = False  # `mn -c` cannot be limited to one run
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

    # agents first, then the node shells: a namespace dies with its last process
    for pid, what in sorted(mininet_leftovers(run_id), key=lambda x: "mininet node" in x[1]):
        if dry_run:
            removed.append(f"would kill pid {pid} ({what})")
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            removed.append(f"killed pid {pid} ({what})")
        except ProcessLookupError:
            pass
    for ns in lab_namespaces(run_id):
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
    for link in lab_links(run_id):
        if dry_run or link in lab_links(run_id):
            do(f"link {link}", ["ip", "link", "delete", link])
    for family, table in lab_nft_tables(run_id):
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
    parser.add_argument(
        "--mn-c", action="store_true", help="also run Mininet's `mn -c` (ends ALL Mininet shells)"
    )
    parser.add_argument("--run-id", help="only this run's leftovers")
    args = parser.parse_args(argv)
    try:
        removed, failed = cleanup(dry_run=args.dry_run, mininet=args.mn_c, run_id=args.run_id)
    except ValueError as err:
        parser.error(str(err))
    for line in removed:
        print(line)
    for line in failed:
        print(f"failed: {line}", file=sys.stderr)
    if not removed and not failed:
        print("lab.cleanup: nothing to clean")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
