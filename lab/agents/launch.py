"""How the lab starts one agent on a lab host: its implementation's argv, run in a mount
namespace of its own where /etc/hosts is the cell's, so lab names (``turn.lab.test``) resolve
for every implementation's resolver (glibc, Go, browsers) without touching the host's file.

``unshare --mount`` makes the mount namespace private by default (util-linux), so the bind
mount is seen by the agent and its children only, and goes away with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

# $1 is the cell's hosts file; the agent's argv follows. exec keeps the PID the lab tracks.
_BIND_HOSTS = 'mount --bind "$1" /etc/hosts && shift && exec "$@"'


def hosts_file(path: Path, names: Mapping[str, str]) -> Path:
    """Write an /etc/hosts for the agent: loopback and the lab's names."""
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost"]
    lines += [f"{ip} {name}" for name, ip in names.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def with_hosts(argv: list[str], hosts: Path) -> list[str]:
    """``argv`` run with ``hosts`` as its /etc/hosts."""
    return ["unshare", "--mount", "--", "sh", "-c", _BIND_HOSTS, "sh", str(hosts), *argv]
