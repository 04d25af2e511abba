"""chromium: Chromium (libwebrtc) as a lab ICE agent, behind the agent contract.

The agent is a Python driver (``lab.agents.browser.call``, run by ``lab.agents.browser.main``)
that runs headless Chromium on a
page of its own and speaks the lab's signaling for it; see ``browser.py`` for the browser's
command line. Chromium's behaviour, as measured here: it gathers only on non-loopback
interfaces, checks the TURN TLS certificate against its NSS database, gives relay candidates
libwebrtc's type preferences (UDP > TCP > TLS), and its own DNS client does not read
/etc/hosts for TURN names (the driver maps them with ``--host-resolver-rules``).
"""

from __future__ import annotations

import sys

from lab.agents.chromium.browser import missing, version
from lab.agents.contract import DataPlane, Implementation


def _command() -> list[str]:
    return [sys.executable, "-m", "lab.agents.chromium"]


IMPLEMENTATION = Implementation(
    name="chromium",
    command=_command,
    version=version,
    missing=missing,
    data_planes=(DataPlane.DATACHANNEL,),
)
