"""Firefox ESR (Debian ``firefox-esr``) as a lab browser: its binary, version, profile and
command line.

There is no geckodriver in Debian: Firefox is started directly, headless, on the page, with a
fresh profile whose ``user.js`` turns off everything that would talk to the outside (updates,
telemetry, safe browsing, captive-portal and connectivity checks, remote settings, push, DNS
over HTTPS) and mDNS obfuscation of host candidates. Firefox resolves names with the system
resolver, so the lab's names come from the agent's /etc/hosts. The lab CA is trusted in the
profile's own NSS database (cert9.db). Firefox needs a default route to find its addresses
(lab hosts have one) and resolves its own host name at start: the driver runs it in a UTS
namespace named ``localhost`` (``lab.agents.browser.process``).
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

from lab.agents.browser.kind import BrowserKind, LaunchPlan
from lab.agents.browser.nss import certutil_missing, trust_ca

BINARY = Path("/usr/lib/firefox-esr/firefox-esr")  # /usr/bin/firefox-esr is a symlink to it
APPLICATION_INI = Path("/usr/lib/firefox-esr/application.ini")

PREFS: dict[str, bool | int | str] = {
    # WebRTC: real host addresses; ICE over UDP and TURN only as the lab offers it
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "media.peerconnection.enabled": True,
    # performance.now() at full resolution: ping RTTs below a millisecond
    "privacy.reduceTimerPrecision": False,
    # nothing that phones home
    "app.update.enabled": False,
    "app.update.auto": False,
    "app.normandy.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.page": 0,
    "browser.aboutwelcome.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.update.enabled": False,
    "browser.search.update": False,
    "browser.topsites.contile.enabled": False,
    "browser.ping-centre.telemetry": False,
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.server": "",
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.systemAddon.update.enabled": False,
    "media.gmp-manager.updateEnabled": False,
    "media.gmp-gmpopenh264.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "network.http.speculative-parallel-limit": 0,
    "network.trr.mode": 5,  # no DNS over HTTPS: the system resolver (the agent's /etc/hosts)
    "dom.push.connection.enabled": False,
    "services.settings.server": "",
    "security.OCSP.enabled": 0,
    "geo.enabled": False,
}


def binary() -> str | None:
    if BINARY.exists():
        return str(BINARY)
    return shutil.which("firefox-esr")


@functools.cache
def version() -> str | None:
    """E.g. "Firefox 153.8.0esr", from the installed application.ini."""
    try:
        text = APPLICATION_INI.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Version="):
            return f"Firefox {line.removeprefix('Version=').strip()}esr"
    return None


def missing() -> str | None:
    if binary() is None:
        return "firefox-esr is not installed (Debian package firefox-esr)"
    return certutil_missing()


def user_js(prefs: dict[str, bool | int | str]) -> str:
    return "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items())


def launch(plan: LaunchPlan) -> list[str]:
    path = binary()
    if path is None:
        raise RuntimeError("firefox-esr is not installed (Debian package firefox-esr)")
    plan.make_dirs()
    profile = plan.root / "profile"
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "user.js").write_text(user_js(PREFS))
    if plan.cafile:
        trust_ca(profile, plan.cafile)
    return [path, "--headless", "--no-remote", "--profile", str(profile), plan.url]


FIREFOX = BrowserKind(name="firefox", version=version, missing=missing, launch=launch)
