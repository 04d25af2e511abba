"""Worker processes (coturn's relay-threads): N processes share the listening ports with
SO_REUSEPORT, each owning the allocations whose 5-tuples the kernel hashes to it.

- UDP: the kernel picks a socket of the reuseport group by a hash of the 4-tuple, so a client
  always reaches the same worker (and its allocation) while the group does not change.
- TCP/TLS: a connection stays with the worker that accepted it.
- Relay ports: each worker owns a disjoint slice of min-port..max-port, so peers' datagrams
  arrive at the worker that holds the allocation.
- Quotas: one ledger in shared memory, so user-quota and total-quota hold across workers.
  Per-user counts live in hashed slots: two users whose names share a slot share a budget,
  which can refuse early but never admits more than the quota.
- Metrics: worker i serves /metrics on prometheus-port + i (labelled by its port).

The parent forwards SIGTERM/SIGINT/SIGUSR2 to the workers and exits when they have.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import secrets
import signal
import struct
import sys
import zlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from relay.server.options import OptionsError, ServerOptions
from relay.stun.constants import AddressFamily
from relay.turn.addresses import host_family

log = logging.getLogger("relay.workers")
SLOTS = 4096


class SharedQuota:
    """A QuotaLedger in shared memory, created before the fork."""

    def __init__(self, user_quota: int, total_quota: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self.user_quota = user_quota
        self.total_quota = total_quota
        self._lock = ctx.Lock()
        self._total: Any = ctx.RawValue("q", 0)
        self._users: Any = ctx.RawArray("i", SLOTS)

    def _slot(self, user: str) -> int:
        return zlib.crc32(user.encode("utf-8", "surrogatepass")) % SLOTS

    def acquire(self, user: str) -> int | None:
        slot = self._slot(user)
        with self._lock:
            if self.user_quota and self._users[slot] >= self.user_quota:
                return 486
            if self.total_quota and self._total.value >= self.total_quota:
                return 508
            self._users[slot] += 1
            self._total.value += 1
        return None

    def release(self, user: str) -> None:
        slot = self._slot(user)
        with self._lock:
            self._users[slot] = max(0, self._users[slot] - 1)
            self._total.value = max(0, self._total.value - 1)


class SharedReservations:
    """A ReservationBook in shared memory: fixed slots of (token, port, family, expiry)."""

    ENTRY = struct.Struct("!8sHBxxxxxd")  # 24 bytes
    SLOTS = 4096

    def __init__(self, relay_hosts: tuple[str, ...]) -> None:
        ctx = multiprocessing.get_context("fork")
        self._lock = ctx.Lock()
        self._table: Any = ctx.RawArray("B", self.ENTRY.size * self.SLOTS)
        self._hosts = {host_family(h): h for h in reversed(relay_hosts)}

    def _entries(self, token: bytes) -> Iterator[int]:
        start = zlib.crc32(token) % self.SLOTS
        for i in range(64):  # bounded linear probing
            yield (start + i) % self.SLOTS * self.ENTRY.size

    def put(self, token: bytes, address: tuple[str, int], expires: float) -> None:
        family = int(host_family(address[0]))
        with self._lock:
            for offset in self._entries(token):
                old_token, _, _, old_expires = self.ENTRY.unpack_from(self._table, offset)
                if old_token == bytes(8) or old_expires <= expires - 60:
                    self.ENTRY.pack_into(self._table, offset, token, address[1], family, expires)
                    return

    def take(self, token: bytes, now: float) -> tuple[str, int] | None:
        with self._lock:
            for offset in self._entries(token):
                found, port, family, expires = self.ENTRY.unpack_from(self._table, offset)
                if found == token:
                    self.ENTRY.pack_into(self._table, offset, bytes(8), 0, 0, 0.0)
                    host = self._hosts.get(AddressFamily(family))
                    return (host, port) if host is not None and expires > now else None
        return None


def port_slices(min_port: int, max_port: int, n: int) -> list[tuple[int, int]]:
    """n disjoint contiguous slices; EVEN-PORT pairs stay inside one slice."""
    span = max_port - min_port + 1
    if span < 2 * n:
        raise OptionsError(f"relay port range {min_port}-{max_port} too small for {n} workers")
    size = span // n
    return [
        (min_port + i * size, max_port if i == n - 1 else min_port + (i + 1) * size - 1)
        for i in range(n)
    ]


def _notify(fd: int) -> None:
    os.write(fd, b"r")


def serve_workers(options: ServerOptions, n: int) -> int:
    from relay.server.serve import run_loop, serve

    slices = port_slices(options.min_port, options.max_port, n)
    quota = SharedQuota(options.user_quota, options.total_quota)
    reservations = SharedReservations(options.relay_hosts)
    nonce_secret = secrets.token_bytes(32)
    read_fd, write_fd = os.pipe()
    children: list[int] = []
    for i, (low, high) in enumerate(slices):
        worker_options = replace(
            options,
            min_port=low,
            max_port=high,
            relay_threads=1,
            prometheus_port=options.prometheus_port + i if options.prometheus_port else 0,
        )
        pid = os.fork()
        if pid == 0:  # worker
            os.close(read_fd)
            code = 0
            try:
                run_loop(
                    serve(
                        worker_options,
                        reuse_port=True,
                        quota=quota,
                        reservations=reservations,
                        nonce_secret=nonce_secret,
                        on_ready=lambda: _notify(write_fd),
                    )
                )
            except (OSError, OptionsError) as err:
                print(f"relay worker {i}: cannot start: {err}", file=sys.stderr)
                code = 1
            except KeyboardInterrupt:
                pass
            os._exit(code)
        children.append(pid)
    os.close(write_fd)

    def forward(signum: int, _frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
        signal.signal(sig, forward)
    ready = 0
    while ready < n:
        try:
            chunk = os.read(read_fd, n)
        except InterruptedError:
            continue
        if not chunk:
            break  # a worker died before it was ready
        ready += len(chunk)
    os.close(read_fd)
    if ready == n:
        log.info("ready: %d workers, relay ports %s", n, ", ".join(f"{a}-{b}" for a, b in slices))
    else:
        log.error("only %d of %d workers started", ready, n)
        forward(signal.SIGTERM, None)
    worst = 0
    for pid in children:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                status = 0
                break
        worst = max(worst, os.waitstatus_to_exitcode(status) if status else 0)
    return 1 if ready < n else worst
