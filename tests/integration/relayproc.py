"""Run the relay for integration tests: in-process (own loop, background thread) or as a process.

Servers bind 127.0.0.1 only. Every wait is bounded in time; processes are ended by PID
(terminate, then kill), never by name.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relay.server.app import RelayServer

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
LOG_LINES_KEPT = 4000


# --- in-process --------------------------------------------------------------------------


@contextlib.contextmanager
def relay_in_thread(**options: Any) -> Iterator[tuple[RelayServer, tuple[str, int]]]:
    """Start RelayServer(ServerOptions(**options)) on its own loop in a daemon thread.

    Defaults: listening on 127.0.0.1, port 0 (ephemeral). Yields (server, (host, port)) of the
    first UDP listener and always closes the server and the loop.
    """
    from relay.server.app import RelayServer
    from relay.server.options import ServerOptions

    options.setdefault("listening_ips", (LOOPBACK,))
    options.setdefault("listening_port", 0)
    opts = ServerOptions(**options)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="relay-in-thread", daemon=True)
    thread.start()
    server: RelayServer | None = None

    async def start() -> RelayServer:
        # Built inside the loop so that anything it creates binds to this loop.
        srv = RelayServer(opts)
        await srv.start()
        return srv

    try:
        server = asyncio.run_coroutine_threadsafe(start(), loop).result(START_TIMEOUT_S)
        udp = [a for a in server.bound_addresses if a[0] == LOOPBACK]
        assert udp, f"no UDP listener on {LOOPBACK}: {server.bound_addresses}"
        yield server, udp[0]
    finally:
        try:
            if server is not None:
                asyncio.run_coroutine_threadsafe(server.close(), loop).result(STOP_TIMEOUT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(STOP_TIMEOUT_S)
            if not thread.is_alive():
                loop.close()


def counter(server: RelayServer, key: str) -> int:
    # The server thread may update its counters while this thread reads them.
    for _ in range(100):
        try:
            return int(server.counters.get(key, 0))
        except RuntimeError:  # dictionary changed size during iteration
            time.sleep(0.001)
    raise RuntimeError(f"could not read counter {key!r}")


def wait_counter(server: RelayServer, key: str, at_least: int, timeout: float = 3.0) -> int:
    """Poll server.counters[key] until it reaches at_least or timeout; return the last value."""
    deadline = time.monotonic() + timeout
    value = counter(server, key)
    while value < at_least and time.monotonic() < deadline:
        time.sleep(0.01)
        value = counter(server, key)
    return value


# --- processes ---------------------------------------------------------------------------


def free_port(host: str = LOOPBACK, attempts: int = 50) -> int:
    """A port free for both UDP and TCP on host right now (the relay may listen on both)."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no free UDP+TCP port on {host} after {attempts} attempts")


@dataclass
class ManagedProcess:
    """A child process whose output lines are collected by reader threads."""

    argv: list[str]
    proc: subprocess.Popen[str]
    lines: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=LOG_LINES_KEPT)
    )
    port: int = 0
    _seen: threading.Condition = field(default_factory=threading.Condition)
    _readers: list[threading.Thread] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log(self) -> str:
        with self._seen:
            return "\n".join(self.lines)

    def _read(self, stream: IO[str], tag: str) -> None:
        for line in stream:
            with self._seen:
                self.lines.append(f"[{tag}] {line.rstrip()}")
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def start_readers(self) -> None:
        for stream, tag in ((self.proc.stdout, "out"), (self.proc.stderr, "err")):
            if stream is not None:
                t = threading.Thread(target=self._read, args=(stream, tag), daemon=True)
                t.start()
                self._readers.append(t)

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._seen:
            while True:
                if any(predicate(line) for line in self.lines):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    return any(predicate(line) for line in self.lines)
                self._seen.wait(min(remaining, 0.2))

    def stop(self) -> int | None:
        """SIGTERM by PID, then SIGKILL after STOP_TIMEOUT_S; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        for t in self._readers:
            t.join(2.0)
        return self.proc.returncode


@contextlib.contextmanager
def managed_process(
    argv: Sequence[str],
    *,
    ready: Callable[[ManagedProcess], bool],
    port: int = 0,
    cwd: Path | None = None,
) -> Iterator[ManagedProcess]:
    """Start argv, wait until ready(process) is true (bounded inside ready), stop it on exit."""
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd or ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    managed = ManagedProcess(argv=list(argv), proc=proc, port=port)
    managed.start_readers()
    try:
        if not ready(managed):
            raise RuntimeError(
                f"{argv[0]} not ready (exit status {proc.poll()}): {' '.join(argv)}\n{managed.log}"
            )
        yield managed
    finally:
        managed.stop()


@contextlib.contextmanager
def relay_subprocess(*args: str, port: int | None = None) -> Iterator[ManagedProcess]:
    """`python -m relay -L 127.0.0.1 -p PORT *args`, ready once stderr has a "ready" line."""
    port = port or free_port()
    argv = [sys.executable, "-m", "relay", "-L", LOOPBACK, "-p", str(port), *args]

    def ready(p: ManagedProcess) -> bool:
        return p.wait_for_line(lambda line: line.startswith("[err]") and "ready" in line, 15.0)

    with managed_process(argv, ready=ready, port=port) as managed:
        yield managed


# --- a minimal STUN probe (no relay.stun dependency: also used against coturn) -------------

BINDING_REQUEST_TYPE = 0x0001
MAGIC_COOKIE = 0x2112A442


def stun_binding_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Send one RFC 8489 Binding request; true if any STUN response with our id comes back."""
    tid = os.urandom(12)
    request = struct.pack("!HHI", BINDING_REQUEST_TYPE, 0, MAGIC_COOKIE) + tid
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(request, (host, port))
            data = sock.recv(2048)
        except OSError:  # timeout or ICMP port unreachable
            return False
    return len(data) >= 20 and data[8:20] == tid


def wait_stun_ready(p: ManagedProcess, host: str, port: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and p.proc.poll() is None:
        if stun_binding_answers(host, port):
            return True
        time.sleep(0.1)
    return False
