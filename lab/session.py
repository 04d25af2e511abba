"""A running lab network: start a topology, run processes on its hosts, always tear it down.

``LabNetwork`` is a context manager. Whatever happens inside (an exception, Ctrl-C, SIGTERM
turned into SystemExit by the caller), leaving it stops every process it started (by PID,
process group), stops Mininet (which removes the namespaces, links and bridges) and checks
that nothing with the run's prefix is left. A run killed with SIGKILL is cleaned up by
``make clean`` (``lab.cleanup``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from types import TracebackType
from typing import Any

from lab.cleanup import RUN_ENV, mininet_leftovers
from lab.nat.router import NatRouter
from lab.topologies.base import NODE_PREFIX, NatlabTopo
from lab.topologies.nodes import LabSwitch

LINK_UP_TIMEOUT = 5.0  # seconds for veths moved into namespaces to report carrier


class LabError(Exception):
    """The lab could not be built, or did not behave as declared: never a traversal result."""

    def __init__(self, message: str, evidence: str = "") -> None:
        super().__init__(message)
        self.evidence = evidence


def lab_unavailable_reason() -> str | None:
    """Why lab tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables)"
    for tool in ("mnexec", "nft", "ip", "conntrack", "brctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (run `make setup`)"
    try:
        import mininet  # noqa: F401
    except ImportError:
        return "the mininet Python module is missing (Debian package mininet)"
    return None


def new_run_id() -> str:
    """4 hex digits (node names are short), not used by any live run on this machine. At
    least one is a decimal digit: Mininet derives a switch's datapath id from the digits in its
    name and fails on a name without any (measured: run id "eafe" broke same-lan)."""
    for _ in range(100):
        run_id = secrets.token_hex(2)
        if any(c.isdigit() for c in run_id) and not leftovers(run_id):
            return run_id
    raise LabError("no free run id: clean up old runs with `make clean`")


class LabNetwork:
    def __init__(
        self,
        topo_cls: type[NatlabTopo],
        *,
        run_id: str | None = None,
        defer_firewalls: bool = False,
        **params: Any,
    ):
        self.run_id = run_id or new_run_id()
        self.defer_firewalls = defer_firewalls
        self.topo_cls = topo_cls
        self.params = params
        self.net: Any = None
        self.topo: NatlabTopo | None = None
        self.processes: list[tuple[str, subprocess.Popen[Any]]] = []

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LabNetwork:
        reason = lab_unavailable_reason()
        if reason:
            raise LabError(f"lab unavailable: {reason}")
        from mininet.log import setLogLevel
        from mininet.net import Mininet

        setLogLevel("error")
        self.topo = self.topo_cls(run_id=self.run_id, **self.params)
        self.net = Mininet(
            topo=self.topo,
            switch=LabSwitch,
            controller=None,
            build=False,
            autoSetMacs=False,
            waitConnected=False,
        )
        try:
            self.net.build()
            self.net.start()
            self._wait_links_up()
            if not self.defer_firewalls:
                self.apply_firewalls()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for _, proc in self.processes:
            _stop_process(proc)
        self.processes.clear()
        if self.net is not None:
            with contextlib.suppress(Exception):
                self.net.stop()
            self.net = None

    def _wait_links_up(self) -> None:
        deadline = time.monotonic() + LINK_UP_TIMEOUT
        pending = [n for n in self.net.hosts + self.net.switches]
        while pending and time.monotonic() < deadline:
            pending = [n for n in pending if _links_down(n.cmd("ip -o link show"))]
            if pending:
                time.sleep(0.05)
        if pending:
            raise LabError(f"links not up after {LINK_UP_TIMEOUT}s: {[n.name for n in pending]}")

    # ------------------------------------------------------------------ access

    @property
    def roles(self) -> dict[str, str]:
        assert self.topo is not None
        return self.topo.roles.nodes

    def node(self, role: str) -> Any:
        return self.net.get(self.roles[role])

    def routers(self) -> list[NatRouter]:
        return [n for n in self.net.hosts if isinstance(n, NatRouter)]

    def popen(self, role: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process in a host's namespace; it is stopped (by PID) when the lab closes."""
        kwargs.setdefault("env", {**os.environ, RUN_ENV: self.run_id})
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc: subprocess.Popen[Any] = self.node(role).popen(argv, **kwargs)
        self.processes.append((role, proc))
        return proc

    def run(
        self, role: str, argv: list[str], timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        proc = self.popen(role, argv, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_process(proc)
            out, err = proc.communicate()
            return subprocess.CompletedProcess(
                argv, -9, out, err + f"\n[timed out after {timeout}s]"
            )
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def apply_firewalls(self) -> None:
        for router in self.routers():
            router.apply_firewall()

    def reset_nat_state(self) -> None:
        """Flush conntrack and the NATs' dynamic maps (between a probe and a trial)."""
        for router in self.routers():
            router.reset_state()

    def evidence(self) -> str:
        return "\n".join(r.evidence() for r in self.routers())

    def namespace_routes(self) -> dict[str, str]:
        """`ip route` of every node, for the address-plan safety test."""
        return {n.name: n.cmd("ip -4 route show table all") for n in self.net.hosts}


def _links_down(listing: str) -> bool:
    """True while any non-loopback interface in an `ip -o link` listing is down."""
    return any("state DOWN" in line for line in listing.splitlines() if ": lo:" not in line)


def _stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM the process group (mnexec -d made the process a session leader), then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=3)


def leftovers(run_id: str | None = None) -> list[str]:
    """Processes (Mininet shells, agents) and root-namespace interfaces of lab runs still alive."""
    prefix = NODE_PREFIX + (run_id or "")
    found = [f"pid {pid}: {what}" for pid, what in mininet_leftovers(run_id)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(prefix) and len(name) > len(NODE_PREFIX) + 4:
            found.append(f"interface {name}")
    return found
