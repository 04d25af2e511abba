"""firefox: Firefox ESR (nICEr) as a lab ICE agent, behind the agent contract.

The agent is a Python driver (``lab.agents.browser.call``, run by ``lab.agents.browser.main``)
that runs headless Firefox ESR on
a page of its own (no geckodriver in Debian: the page reports to the driver over a local HTTP
bridge) and speaks the lab's signaling for it; see ``browser.py`` for the profile. Firefox's
behaviour, as measured here: it needs a default route to find its addresses and a host name
(not an IP) with a CA-signed leaf for ``turns:``, and it resolves its own host name at start.
"""

from __future__ import annotations

import sys

from lab.agents.contract import DataPlane, Implementation
from lab.agents.firefox.browser import missing, version


def _command() -> list[str]:
    return [sys.executable, "-m", "lab.agents.firefox"]


IMPLEMENTATION = Implementation(
    name="firefox",
    command=_command,
    version=version,
    missing=missing,
    data_planes=(DataPlane.DATACHANNEL,),
)
