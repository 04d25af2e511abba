"""Running one relay process: the server on its event loop until SIGTERM/SIGINT, with
SIGUSR2 reloading the TLS certificate (coturn's convention). Used by the command line
(``relay.server.cli``) and by each worker process (``relay.server.workers``)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from relay.server.app import RelayServer
from relay.server.options import OptionsError, ServerOptions
from relay.turn.ports import ReservationBook
from relay.turn.quota import QuotaLedger

log = logging.getLogger("relay")


async def serve(
    options: ServerOptions,
    *,
    reuse_port: bool = False,
    quota: QuotaLedger | None = None,
    reservations: ReservationBook | None = None,
    nonce_secret: bytes | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    server = RelayServer(options, reuse_port=reuse_port, nonce_secret=nonce_secret)
    server.quota = quota
    server.reservations = reservations
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR2, _reload_tls, server)  # coturn's convention
    addresses = " ".join(f"{kind} {h}:{p}" for kind, (h, p) in server.listening)
    if on_ready is None:
        log.info("ready: %s (relay %s)", addresses, ",".join(options.relay_hosts))
    else:  # a worker: the parent says "ready" once every worker has bound its sockets
        log.info("worker %d listening: %s", os.getpid(), addresses)
        on_ready()
    try:
        await stop.wait()
    finally:
        log.info("shutting down: %s", dict(sorted(server.counters.items())))
        await server.close()


def _reload_tls(server: RelayServer) -> None:
    try:
        server.reload_tls()
    except OptionsError as err:  # keep serving with the old certificate
        log.error("SIGUSR2: TLS reload failed, keeping the old certificate: %s", err)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run, on uvloop when it is installed (a faster event loop, same semantics)."""
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)
