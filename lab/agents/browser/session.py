"""A browser running the page: the bridge, the browser's process tree and its profile, from
start to a clean end. Used by the call driver (``call``) and by ``natlab gather``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from lab.agents.browser.bridge import EventSink, PageBridge, PageError
from lab.agents.browser.iceservers import is_ip, resolve_names
from lab.agents.browser.kind import BrowserKind, LaunchPlan
from lab.agents.browser.nss import NssError
from lab.agents.browser.process import BrowserProcess

log = logging.getLogger("natlab.browser")

CLOSE_WAIT_S = 0.3  # after pc.close(): TURN deallocations leave before the browser is killed


class BrowserStartError(Exception):
    pass


class BrowserSession:
    def __init__(
        self,
        kind: BrowserKind,
        workdir: Path,
        on_event: EventSink,
        *,
        hosts: Sequence[str] = (),
        cafile: str | None = None,
        keep_profile: bool = False,
    ) -> None:
        self.kind = kind
        self.workdir = workdir
        self.hosts = tuple(hosts)  # the ICE servers' hosts: names are resolved for the browser
        self.cafile = cafile  # trusted in the browser's NSS database when given
        self.keep_profile = keep_profile
        self.bridge = PageBridge(on_event)
        self.browser: BrowserProcess | None = None
        self.startup_s: float | None = None

    @property
    def root(self) -> Path:
        return self.workdir / f"{self.kind.name}-profile"

    def alive(self) -> bool:
        return self.browser is not None and self.browser.alive()

    def gone(self) -> bool:
        """The browser was started and has exited."""
        return self.browser is not None and not self.browser.alive()

    async def start(self, timeout: float) -> float:
        """Start the browser on the page; its start-up time (until the page polls) in seconds.
        Call from the thread that outlives the browser (its death signal follows it)."""
        await self.bridge.start()
        names = resolve_names(self.hosts)
        for name, address in names.items():
            log.info("%s resolves to %s", name, address)
        plan = LaunchPlan(
            url=self.bridge.url,
            root=self.root,
            cafile=self.cafile,
            names=names,
            literals=tuple(dict.fromkeys(h for h in self.hosts if is_ip(h))),
        )
        try:
            argv = self.kind.launch(plan)
        except (NssError, OSError, RuntimeError) as err:
            raise BrowserStartError(f"cannot prepare {self.kind.name}: {err}") from err
        log.info("starting %s", " ".join(argv))
        log_path = self.workdir / "browser.log"
        self.browser = BrowserProcess.start(argv, plan.env(), log_path, self.workdir)
        deadline = time.monotonic() + timeout
        while not self.bridge.ready.is_set():
            if not self.browser.alive():
                raise BrowserStartError(
                    f"{self.kind.name} exited (code {self.browser.proc.returncode}) before "
                    f"loading the page; its log ends:\n{self.browser.log_tail()}"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserStartError(
                    f"{self.kind.name} did not load the page in {timeout:.1f} s"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.bridge.ready.wait(), min(0.1, left))
        self.startup_s = round(time.monotonic() - self.browser.started, 3)
        log.info("%s start-up: %.3f s (page loaded)", self.kind.name, self.startup_s)
        return self.startup_s

    async def close(self) -> None:
        """Close the page's peer connection, kill the browser, stop the bridge, remove the
        profile (the browser's log stays)."""
        if self.alive() and self.bridge.ready.is_set():
            with contextlib.suppress(PageError, TimeoutError):
                await self.bridge.call("close", timeout=0.5)
                await asyncio.sleep(CLOSE_WAIT_S)
        self.stop()
        await self.bridge.close()
        if not self.keep_profile:
            shutil.rmtree(self.root, ignore_errors=True)

    def stop(self) -> None:
        if self.browser is not None:
            self.browser.measure()
            self.browser.stop()

    @property
    def peak_pss_kib(self) -> int | None:
        return None if self.browser is None else self.browser.peak_pss_kib
