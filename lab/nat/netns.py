"""Network-namespace plumbing of the lab: the names a run gives what it creates, commands in a
namespace or a Mininet node, and throwaway namespaces, veth pairs, rulesets and sysctls.

Naming convention (every lab run follows it, so that ``python -m lab.cleanup`` finds its
leftovers and nothing else):

- A run id is 4-12 lowercase letters or digits; `new_run_id()` makes 6 hex digits.
- Network namespaces a run creates are named ``nl-<runid>-<node>`` (`netns_name`), e.g.
  ``nl-3fa9c1-relay``.
- veth and bridge interfaces a run creates in the root namespace are named
  ``nl-<runid>-<suffix>`` too (`ifname`); Linux limits names to 15 bytes (IFNAMSIZ - 1), so
  with a 6-digit run id the suffix has at most 5 characters, e.g. ``nl-3fa9c1-v0a``.

Nothing here touches the root namespace's links, routes or nftables: veth pairs are created
directly inside their namespaces.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

COMMAND_TIMEOUT_S = 20
PREFIX = "nl-"
RUN_ID_PATTERN = r"[0-9a-z]{4,12}"
LAB_NAME_RE = re.compile(rf"^{PREFIX}{RUN_ID_PATTERN}-[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*$")
IFNAMSIZ = 16  # including the terminating NUL


class NetnsError(RuntimeError):
    pass


def new_run_id() -> str:
    return secrets.token_hex(3)  # 6 hex digits


def check_run_id(run_id: str) -> None:
    if not re.fullmatch(RUN_ID_PATTERN, run_id):
        raise ValueError(f"run id {run_id!r} must be 4-12 lowercase letters or digits")


def netns_name(run_id: str, node: str) -> str:
    check_run_id(run_id)
    name = f"{PREFIX}{run_id}-{node}"
    if not is_lab_name(name):
        raise ValueError(f"bad node name {node!r}")
    return name


def ifname(run_id: str, suffix: str) -> str:
    name = netns_name(run_id, suffix)
    if len(name.encode()) >= IFNAMSIZ:
        raise ValueError(f"interface name {name!r} longer than {IFNAMSIZ - 1} bytes")
    return name


def is_lab_name(name: str, run_id: str | None = None) -> bool:
    if LAB_NAME_RE.fullmatch(name) is None:
        return False
    return run_id is None or name.startswith(f"{PREFIX}{run_id}-")


class _Node(Protocol):
    """What ``run_in`` needs of a node: a Mininet ``Node`` (its name and ``popen``)."""

    name: str

    def popen(self, *args: Any, **kwargs: Any) -> subprocess.Popen[str]: ...


def run_in(node: _Node, argv: list[str], *, stdin: str | None = None, timeout: float = 20.0) -> str:
    """Run a command inside a node's namespace; raise with its stderr when it fails."""
    proc = node.popen(argv, stdin=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"{node.name}: {' '.join(argv)} timed out") from None
    if proc.returncode != 0:
        raise RuntimeError(
            f"{node.name}: {' '.join(argv)} failed ({proc.returncode}): {err.strip()}"
        )
    return str(out)


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
