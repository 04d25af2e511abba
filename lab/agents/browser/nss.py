"""Trusting the lab CA the way the browsers do: an NSS database (certutil, Debian
libnss3-tools). Chromium reads ``$HOME/.pki/nssdb``; Firefox reads its profile directory. The
CA is trusted for TLS servers only (``C,,``); nothing else is changed, and no mode that
ignores certificate errors is ever used.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CERTUTIL_TIMEOUT_S = 20.0
CA_NICKNAME = "natlab lab CA"


class NssError(RuntimeError):
    pass


def certutil_missing() -> str | None:
    if shutil.which("certutil") is None:
        return "certutil is not installed (Debian package libnss3-tools)"
    return None


def _certutil(*args: str) -> None:
    try:
        done = subprocess.run(
            ["certutil", *args], capture_output=True, text=True, timeout=CERTUTIL_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise NssError(f"certutil {args[0]}: {err}") from err
    if done.returncode != 0:
        raise NssError(f"certutil {' '.join(args[:1])}: {done.stderr.strip() or done.stdout}")


def trust_ca(database: Path, cafile: str) -> None:
    """Create the NSS database (no password) in ``database`` if needed and trust ``cafile``."""
    why = certutil_missing()
    if why:
        raise NssError(why)
    database.mkdir(parents=True, exist_ok=True)
    if not (database / "cert9.db").exists():
        _certutil("-N", "-d", f"sql:{database}", "--empty-password")
    _certutil("-A", "-d", f"sql:{database}", "-n", CA_NICKNAME, "-t", "C,,", "-i", cafile)
