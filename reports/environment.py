"""The run's environment for the report: kernel, Python, package versions, tool versions and
the relay versions recorded in the results table. Anything that cannot be found is ``None``
(shown as NA), never guessed."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import pandas as pd

PACKAGES = ("natlab", "pandas", "pyarrow", "aioice", "matplotlib")
TOOL_TIMEOUT_S = 5


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _run(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (out.stdout or out.stderr).strip()
    return text if out.returncode == 0 and text else None


def coturn_version() -> str | None:
    return _run(["dpkg-query", "-W", "-f=${Version}", "coturn"])


def nft_version() -> str | None:
    text = _run(["nft", "--version"])  # "nftables v1.0.6 (Lester Gooch #5)"
    if text is None:
        return None
    match = re.search(r"v?(\d+(?:\.\d+)+)", text)
    return match.group(1) if match else text


def relay_versions(frame: pd.DataFrame | None) -> dict[str, str | None]:
    """relay_impl -> the relay_version values seen for it in the table (joined if several)."""
    if frame is None or not len(frame):
        return {}
    found: dict[str, set[str]] = {}
    for impl, ver in zip(frame["relay_impl"], frame["relay_version"], strict=True):
        if pd.isna(impl):
            continue
        found.setdefault(str(impl), set())
        if not pd.isna(ver):
            found[str(impl)].add(str(ver))
    return {impl: ", ".join(sorted(v)) or None for impl, v in sorted(found.items())}


def collect_environment(frame: pd.DataFrame | None = None) -> dict[str, Any]:
    """Kernel and host (``platform.uname``), Python, package versions, coturn (dpkg), nft,
    and the relay versions from ``frame``."""
    uname = platform.uname()
    return {
        "host": {
            "kernel": f"{uname.system} {uname.release}",
            "kernel build": uname.version,
            "machine": uname.machine,
            "node": uname.node,
        },
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": {name: package_version(name) for name in PACKAGES},
        "tools": {"coturn": coturn_version(), "nft": nft_version()},
        "relays": relay_versions(frame),
    }
