"""What differs between the browsers the driver runs: how to find, name and launch each.

Everything else (the page, the bridge, the call sequence) is shared. A ``BrowserKind`` turns
a ``LaunchPlan`` into the browser's argv, after making its profile (and trusting the lab CA
there, the browser's way).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lab.agents.browser.process import PRIVATE_TMP


@dataclass(frozen=True)
class LaunchPlan:
    url: str  # the page, on the bridge
    root: Path  # the browser's own directory: profile and $HOME, removed after the run
    cafile: str | None  # the lab CA to trust for TURN over TLS (None: nothing to trust)
    names: Mapping[str, str | None] = field(default_factory=dict)  # TURN host names -> IPv4
    literals: tuple[str, ...] = ()  # IP addresses in the ICE server URLs

    @property
    def home(self) -> Path:
        return self.root / "home"

    def env(self) -> dict[str, str]:
        """The browser's environment: the driver's, with $HOME and the XDG directories in
        ``root``, temporary files on its private tmpfs, no display (headless), no D-Bus."""
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        env.update(
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            XDG_CACHE_HOME=str(self.home / ".cache"),
            XDG_DATA_HOME=str(self.home / ".local" / "share"),
            XDG_RUNTIME_DIR=f"{PRIVATE_TMP}/run",
            TMPDIR=PRIVATE_TMP,
            DBUS_SESSION_BUS_ADDRESS="disabled:",
        )
        return env

    def make_dirs(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class BrowserKind:
    name: str  # reports.vocabulary.AgentImpl
    version: Callable[[], str | None]
    missing: Callable[[], str | None]
    launch: Callable[[LaunchPlan], list[str]]  # prepares the profile; returns the argv
