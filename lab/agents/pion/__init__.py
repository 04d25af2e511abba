"""pion: natlab's ICE agent on pion/ice v2 (Go), behind the agent contract.

The agent is a Go program (``agent/``) built once at setup (``python -m lab.agents.pion.build``,
called by ``make setup``) from Debian's pion sources, offline. A cell only runs the built binary:
``missing()`` names what is absent and never builds.

pion's own behaviour, as measured here (DESIGN.md, "Outside implementations"):

- the controlling side nominates a pair only after a minimum wait per candidate type (host 0,
  srflx 0.5 s, prflx 1 s, relay 2 s; pion's defaults, kept), so relayed calls take about 2 s;
- all relay candidates get the same priority whatever their TURN transport;
- checks sent are counted from pion's Binding requests (its pair stats leave RequestsSent at
  zero in 2.3.1), and pion has no pair RTT either: RTT comes from the datagram plane or is NA.
"""

from __future__ import annotations

from lab.agents.contract import DataPlane, Implementation

# lab.agents.pion.build is imported inside the functions, so that ``python -m
# lab.agents.pion.build`` does not find it imported already by this package.


def _command() -> list[str]:
    from lab.agents.pion import build

    return [str(build.binary_path())]


def _version() -> str | None:
    from lab.agents.pion import build

    stamp = build.built_stamp()
    return None if stamp is None else f"pion/ice {stamp.ice_version}"


def _missing() -> str | None:
    from lab.agents.pion import build

    if build.is_current():
        return None  # the binary runs without go or the sources
    why = build.missing_prerequisites()
    if why:
        return why
    if build.built_stamp() is None:
        return "not built: run make setup (python -m lab.agents.pion.build)"
    return "out of date (its Go source changed): run make setup (python -m lab.agents.pion.build)"


IMPLEMENTATION = Implementation(
    name="pion",
    command=_command,
    version=_version,
    missing=_missing,
    data_planes=(DataPlane.DATAGRAM,),
)
