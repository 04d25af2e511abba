"""One browser process tree, started so that it cannot outlive the driver.

The browser runs as PID 1 of a PID namespace of its own (``unshare --pid --fork
--kill-child --mount-proc``): when that process dies, the kernel kills every process left in
the namespace (renderers, GPU and network helpers, crash handlers), so nothing is left
behind whoever spawned it. ``setpriv --pdeathsig KILL`` kills ``unshare`` (and so the
namespace) when the driver's thread that started it dies, even by SIGKILL; and the tree is
in a process group of its own that ``stop`` kills. Its output goes to a log file in the
agent's work directory, kept for a failed cell.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

STOP_WAIT_S = 3.0
# The browser's temporary files (TMPDIR, XDG_RUNTIME_DIR): a tmpfs mounted over this directory
# in the browser's own mount namespace, so they vanish with it, however it ends. Short, as
# Chromium's singleton socket path must fit a Unix socket address (108 bytes).
PRIVATE_TMP = "/mnt"
PRIVATE_TMP_SIZE = "256m"
_SETUP = (
    "hostname localhost"
    f" && mount -t tmpfs -o size={PRIVATE_TMP_SIZE},mode=1777 natlab-browser {PRIVATE_TMP}"
    f" && mkdir -m 700 {PRIVATE_TMP}/run"
    ' && exec "$@"'
)


def contained(argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped so that its whole process tree dies with it and with the driver: PID,
    mount and UTS namespaces of its own (host name ``localhost``: Firefox looks its own name
    up at start), a private tmpfs on PRIVATE_TMP."""
    return [
        "setpriv", "--pdeathsig", "KILL", "--",
        "unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--mount-proc", "--uts", "--",
        "sh", "-c", _SETUP, "sh",
        *argv,
    ]  # fmt: skip


class BrowserProcess:
    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path, started: float) -> None:
        self.proc = proc
        self.log_path = log_path
        self.started = started  # time.monotonic() at the start
        self.peak_pss_kib: int | None = None

    @classmethod
    def start(
        cls, argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path
    ) -> BrowserProcess:
        """Start the browser (call from the thread that lives as long as the run: the
        death signal follows the starting thread)."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                contained(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        return cls(proc, log_path, time.monotonic())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def measure(self) -> int | None:
        """The tree's memory now: the sum of its processes' proportional set sizes (Pss, KiB:
        shared pages split between the processes that map them, so the browser's binary
        counts once), from /proc; the largest sum seen so far is kept as the peak."""
        total, found = 0, False
        for pid in _descendants(self.proc.pid):
            pss = _pss_kib(pid)
            if pss is not None:
                total, found = total + pss, True
        if found:
            self.peak_pss_kib = max(total, self.peak_pss_kib or 0)
        return self.peak_pss_kib

    def stop(self) -> None:
        """Kill the tree (its process group, then the PID namespace dies with its PID 1)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=STOP_WAIT_S)

    def kill_now(self) -> None:
        """For the watchdog thread: no waiting."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the browser's log, without its D-Bus complaints (no bus, on purpose)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        kept = [line for line in lines if "dbus" not in line.lower()]
        return "\n".join(kept)[-chars:]


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it, from /proc/<pid>/stat parent links."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo and len(found) < 10_000:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _pss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None
