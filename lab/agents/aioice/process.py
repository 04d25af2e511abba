"""The aioice agent as a process: command line, logging, signals, the result line, the watchdog.

    python -m lab.agents.aioice --peer a --controlling --room R --signaling HOST:PORT \\
        --cafile CA.pem [--stun HOST:PORT] [--turn-udp HOST:PORT] [--turn-tcp HOST:PORT] \\
        [--turn-tls HOST:PORT] --turn-secret S --policy all|relay --timeout 30 \\
        [--exchange 10] [--throughput-mbps X --throughput-seconds T] [--events FILE] \\
        [aioice only: --host-ip IP ... --gather-timeout S --nomination-wait S --ipv6 -v
         --signaling-plain]

Prints exactly one JSON line (``lab.agents.agent_result.AgentResult``) on stdout and exits
within ``--timeout`` seconds: a soft deadline ends the run and closes everything in time, and a
watchdog thread prints the result and ends the process if that ever hangs. Logs go to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from lab.agents.agent_result import AgentResult
from lab.agents.aioice import IMPLEMENTATION
from lab.agents.aioice.agent import IMPL, Agent, AgentAbort
from lab.agents.aioice.config import HARD_MARGIN_S, AgentConfig, build_parser, config_from_args
from lab.agents.contract import EXIT_FAILED, EXIT_OK, EXIT_USAGE, EventKind, EventLog

log = logging.getLogger("natlab.aioice")


class ResultPrinter:
    """Prints the result line exactly once, from the main thread or from the watchdog."""

    def __init__(self, result: AgentResult, t0: float, events: EventLog | None = None) -> None:
        self.result = result
        self.t0 = t0
        self.events = events
        self._lock = threading.Lock()
        self._printed = False

    def emit(self) -> None:
        with self._lock:
            if self._printed:
                return
            self.result.duration_s = round(time.monotonic() - self.t0, 3)
            for _ in range(10):  # the event loop thread may be updating it
                try:
                    line = self.result.to_json()
                    break
                except RuntimeError:
                    time.sleep(0.001)
            else:
                line = self.result.to_json()
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            self._printed = True

    def watchdog(self) -> None:
        self.result.fail("timeout")
        log.error("watchdog: --timeout reached, ending the process")
        if self.events is not None:
            with contextlib.suppress(Exception):  # the main thread may be closing the file
                self.events.emit(EventKind.FAILED, "timeout (watchdog)")
        self.emit()
        logging.shutdown()
        os._exit(EXIT_FAILED)


async def _amain(cfg: AgentConfig, result: AgentResult, t0: float, events: EventLog) -> None:
    agent = Agent(cfg, result, t0, events)
    loop = asyncio.get_running_loop()
    run = loop.create_task(agent.run())

    def terminate(signame: str) -> None:
        log.warning("%s received", signame)
        result.fail("terminated")
        agent.abort("terminated")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, terminate, sig.name)
    try:
        # the safety net behind every _until(): the soft deadline
        await asyncio.wait_for(run, max(0.0, agent.deadline - time.monotonic()) + 0.5)
    except AgentAbort as err:
        result.fail(err.reason)
    except TimeoutError:
        result.fail("timeout")
    except Exception:
        log.exception("internal error")
        result.fail("internal-error")
    finally:
        await agent.shutdown()


def _setup_logging(peer: str, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(
        f"%(asctime)s.%(msecs)03dZ {peer} %(name)s %(levelname)s %(message)s", "%H:%M:%S"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("aioice").setLevel(logging.INFO if verbose else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    t0 = time.monotonic()
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    args = build_parser().parse_args(argv)
    _setup_logging(args.peer, args.verbose)
    role = "controlling" if args.controlling else "controlled"
    version = IMPLEMENTATION.version()
    result = AgentResult(
        peer=args.peer, role=role, started_at=started_at, impl=IMPL, impl_version=version
    )
    try:
        cfg = config_from_args(args)
    except ValueError as err:
        log.error("usage: %s", err)
        result.fail("usage")
        ResultPrinter(result, t0).emit()
        return EXIT_USAGE
    events = EventLog(cfg.inputs.events, cfg.inputs.peer, IMPL)
    printer = ResultPrinter(result, t0, events)
    watchdog = threading.Timer(max(0.1, cfg.inputs.timeout - HARD_MARGIN_S), printer.watchdog)
    watchdog.daemon = True
    watchdog.start()
    try:
        asyncio.run(_amain(cfg, result, t0, events))
    except Exception:
        log.exception("internal error")
        result.fail("internal-error")
    finally:
        watchdog.cancel()
        if result.error is None:
            events.emit(EventKind.DONE, result.outcome)
        else:
            events.emit(EventKind.FAILED, result.error)
        printer.emit()
        events.close()
    log.info("result: %s%s", result.outcome, f" (error {result.error})" if result.error else "")
    return EXIT_OK if result.error is None else EXIT_FAILED
