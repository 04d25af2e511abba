"""Minimal network-namespace plumbing for lab/nat (rulesets, sysctls, throwaway namespaces).

Names follow lab.cleanup: ``nl-<run id>-<role>``, so `python -m lab.cleanup` finds leftovers.
Nothing here touches the root namespace's links, routes or nftables: veth pairs are created
directly inside their namespaces.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence

from lab.cleanup import netns_name

COMMAND_TIMEOUT_S = 20


class NetnsError(RuntimeError):
    pass


def new_run_id() -> str:
    return secrets.token_hex(4)  # 8 hex digits


def ns_run(
    ns: str,
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float = COMMAND_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and r.returncode != 0:
        raise NetnsError(f"[{ns}] {' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def netns_supported() -> str | None:
    """None when namespaces can be used here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return f"`ip netns` unavailable: {r.stderr.strip()}"
    return None


def delete_netns(ns: str) -> None:
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
    for pid in r.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)


@contextlib.contextmanager
def namespaces(*roles: str, run_id: str | None = None) -> Iterator[dict[str, str]]:
    """Create ``nl-<id>-<role>`` namespaces (loopback up); delete them on exit, even on error."""
    rid = run_id or new_run_id()
    made: list[str] = []
    try:
        for role in roles:
            ns = netns_name(rid, role)
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
            made.append(ns)
            ns_run(ns, ["ip", "link", "set", "lo", "up"])
        yield {role: netns_name(rid, role) for role in roles}
    finally:
        for ns in reversed(made):
            delete_netns(ns)


def add_veth(ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
    """A veth pair whose ends are born inside the two namespaces (never in the root one)."""
    subprocess.run(
        [
            "ip",
            "link",
            "add",
            if_a,
            "netns",
            ns_a,
            "type",
            "veth",
            "peer",
            "name",
            if_b,
            "netns",
            ns_b,
        ],
        check=True,
        capture_output=True,
    )
    ns_run(ns_a, ["ip", "link", "set", if_a, "up"])
    ns_run(ns_b, ["ip", "link", "set", if_b, "up"])


def load_ruleset(ns: str, script: str) -> None:
    ns_run(ns, ["nft", "-f", "-"], input=script)


def check_ruleset(ns: str, script: str) -> subprocess.CompletedProcess[str]:
    return ns_run(ns, ["nft", "-c", "-f", "-"], input=script, check=False)


def apply_sysctls(ns: str, sysctls: Mapping[str, str]) -> None:
    for key, value in sysctls.items():
        ns_run(ns, ["sysctl", "-qw", f"{key}={value}"])


def flush_conntrack(ns: str) -> None:
    r = ns_run(ns, ["conntrack", "-F"], check=False)
    # conntrack -F exits non-zero on an empty table with some versions; only errors matter
    if r.returncode != 0 and "0 flow entries" not in r.stderr + r.stdout:
        raise NetnsError(f"[{ns}] conntrack -F: {r.stderr.strip()}")
