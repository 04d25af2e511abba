"""Chromium (Debian ``chromium``) as a lab browser: its binary, version and command line.

Run headless as root (``--no-sandbox``), with a profile and $HOME of its own, and nothing that
talks to the outside: no background networking, component updates, sync or QUIC. Host
candidates are not hidden behind mDNS names (``WebRtcHideLocalIpsWithMdns`` off), so peers
that are not browsers can check them. Chromium's own DNS client ignores /etc/hosts for TURN
names, so the driver resolves the lab names itself (the agent's /etc/hosts) and maps them with
``--host-resolver-rules``; every other name is unresolvable, so Chromium sends no DNS query
at all. The lab CA is trusted in the NSS database under ``$HOME/.pki/nssdb``.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

from lab.agents.browser.iceservers import host_resolver_rules
from lab.agents.browser.kind import BrowserKind, LaunchPlan
from lab.agents.browser.nss import certutil_missing, trust_ca

BINARY = Path("/usr/lib/chromium/chromium")  # the Debian wrapper script adds slow checks
VERSION_TIMEOUT_S = 10.0

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-breakpad",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-dev-shm-usage",
    "--disable-features=WebRtcHideLocalIpsWithMdns,Translate,MediaRouter,OptimizationHints",
    "--metrics-recording-only",
    "--password-store=basic",
    "--mute-audio",
    "--enable-logging=stderr",
    "--v=0",
)


def binary() -> str | None:
    if BINARY.exists():
        return str(BINARY)
    return shutil.which("chromium")


@functools.cache
def version() -> str | None:
    """E.g. "Chromium 156.0.8078.114", from ``chromium --version``."""
    path = binary()
    if path is None:
        return None
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT_S
        ).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return " ".join(out[:2]) if len(out) >= 2 else None


def missing() -> str | None:
    if binary() is None:
        return "chromium is not installed (Debian package chromium)"
    return certutil_missing()


def launch(plan: LaunchPlan) -> list[str]:
    path = binary()
    if path is None:
        raise RuntimeError("chromium is not installed (Debian package chromium)")
    plan.make_dirs()
    if plan.cafile:
        trust_ca(plan.home / ".pki" / "nssdb", plan.cafile)
    rules = host_resolver_rules(plan.names, plan.literals)
    return [
        path,
        *FLAGS,
        f"--user-data-dir={plan.root / 'profile'}",
        f"--host-resolver-rules={rules}",
        plan.url,
    ]


CHROMIUM = BrowserKind(name="chromium", version=version, missing=missing, launch=launch)
