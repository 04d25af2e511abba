"""``natlab doctor``: what this machine has for the lab, and the command that adds what it lacks."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _run(*argv: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout or out.stderr).strip()


def _tool(name: str, binary: str, version_argv: tuple[str, ...], package: str) -> Check:
    path = shutil.which(binary)
    if path is None:
        return Check(name, False, f"{binary} not found", f"apt-get install {package}")
    first = _run(binary, *version_argv).splitlines()
    return Check(name, True, first[0] if first else path)


def _python_package(name: str, dist: str, fix: str) -> Check:
    try:
        return Check(name, True, f"{dist} {version(dist)}")
    except PackageNotFoundError:
        return Check(name, False, f"{dist} is not installed", fix)


def checks() -> list[Check]:
    from lab.nat.impairments import netem_available

    result = [
        Check(
            "root",
            os.geteuid() == 0,
            "running as root"
            if os.geteuid() == 0
            else "not root: namespaces and nftables need root",
            "run as root (sudo)",
        ),
        _tool("nftables", "nft", ("--version",), "nftables"),
        _tool("iproute2", "ip", ("-V",), "iproute2"),
        _tool("bridge", "brctl", ("--version",), "bridge-utils"),
        _tool("conntrack", "conntrack", ("--version",), "conntrack"),
        _tool("mininet", "mnexec", ("-v",), "mininet"),
        _tool("coturn", "turnserver", ("--version",), "coturn"),
        _tool("tcpdump", "tcpdump", ("--version",), "tcpdump"),
    ]
    dpkg = _run("dpkg-query", "-W", "-f=${Version}", "coturn")
    if dpkg and result[6].ok:
        result[6] = Check("coturn", True, f"coturn {dpkg}")
    try:
        import mininet.net  # noqa: F401

        result.append(Check("mininet-py", True, "mininet Python module"))
    except ImportError:
        result.append(
            Check(
                "mininet-py",
                False,
                "mininet Python module missing",
                "apt-get install mininet (use the system Python's venv)",
            )
        )
    result.append(_python_package("aioice", "aioice", "pip install 'aioice>=0.13,<0.14'"))
    result.append(_python_package("pandas", "pandas", "pip install pandas"))
    netem = netem_available() if os.geteuid() == 0 else False
    result.append(
        Check(
            "netem",
            netem,
            "sch_netem available: delay and jitter can be emulated"
            if netem
            else "sch_netem missing: scenarios asking for delay or jitter are skipped",
            "a kernel with CONFIG_NET_SCH_NETEM (linux-modules-extra / modprobe sch_netem)",
            required=False,
        )
    )
    from relay.server.datapath import C_MODULE

    result.append(
        Check(
            "relay C loop",
            C_MODULE is not None,
            "relay/server/_datapath built: recvmmsg/sendmmsg packet loop"
            if C_MODULE is not None
            else "not built: the relay runs its pure Python packet loop (slower)",
            "apt-get install gcc python3-dev, then pip install -e . (make setup does both)",
            required=False,
        )
    )
    result += agent_checks()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    result.append(
        Check(
            "chromium",
            chromium is not None,
            chromium or "not found: the report screenshot test is skipped",
            "apt-get install chromium",
            required=False,
        )
    )
    return result


def agent_checks() -> list[Check]:
    """One line per ICE implementation: its version, or what is missing and how to add it.
    A cell whose implementation is missing is skipped with that reason."""
    from lab.agents.registry import implementations

    found = []
    for impl in implementations():
        missing = impl.missing()
        detail = (impl.version() or "installed") if missing is None else missing
        found.append(Check(f"agent {impl.name}", missing is None, detail, required=False))
    return found
