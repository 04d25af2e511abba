"""A Python agent as a process: the command line, logging, signals, the result line, the watchdog.

Every Python-driven implementation's ``main`` is ``run_agent``: it parses the contract's flags
(and the implementation's own), runs its ``lab.agents.call.Call`` under a soft deadline, and
prints exactly one result line (``lab.agents.agent_result.AgentResult``) on stdout within
``--timeout``: a watchdog thread prints it and ends the process if clean-up ever hangs. A bad
command line prints a result with error "usage" and exits 2; an implementation that cannot
run here exits 1 with the reason in its log. The timeline ends with "done" (with the agent's
peak memory, ``peak_rss_mib=``) or "failed".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import logging
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from lab.agents.agent_result import AgentResult
from lab.agents.call import HARD_MARGIN_S, AgentAbort, Call
from lab.agents.contract import EXIT_FAILED, EXIT_OK, EXIT_USAGE, AgentInputs, EventKind, EventLog

log = logging.getLogger("natlab.agent")
C = TypeVar("C")  # an implementation's parsed configuration


def own_peak_rss_mib() -> float:
    """This process's peak resident set (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class ResultPrinter:
    """Prints the result line exactly once, from the main thread or from the watchdog."""

    def __init__(self, result: AgentResult, t0: float) -> None:
        self.result = result
        self.t0 = t0
        self.events: EventLog | None = None
        self.on_watchdog: Callable[[], None] | None = None  # e.g. kill a browser at once
        self._lock = threading.Lock()
        self._printed = False

    def emit(self) -> None:
        with self._lock:
            if self._printed:
                return
            self.result.duration_s = round(time.monotonic() - self.t0, 3)
            for _ in range(10):  # the event loop thread may be updating the result
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
        if self.on_watchdog is not None:
            with contextlib.suppress(Exception):
                self.on_watchdog()
        if self.events is not None:
            with contextlib.suppress(Exception):  # the main thread may be closing the file
                self.events.emit(EventKind.FAILED, "timeout (watchdog)")
        self.emit()
        logging.shutdown()
        os._exit(EXIT_FAILED)


@dataclass(frozen=True)
class AgentProgram(Generic[C]):
    """What ``run_agent`` needs of one implementation."""

    impl: str  # reports.vocabulary.AgentImpl value
    parser: Callable[[], argparse.ArgumentParser]  # the contract's flags plus its own
    config: Callable[[argparse.Namespace], C]  # validate; ValueError with the reason
    inputs: Callable[[C], AgentInputs]
    make_call: Callable[[C, AgentResult, float, EventLog], Call]
    version: Callable[[], str | None]
    missing: Callable[[], str | None] = lambda: None
    quiet_loggers: Callable[[bool], None] = lambda verbose: None  # the library's own loggers


def setup_logging(peer: str, name: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(
        f"%(asctime)s.%(msecs)03dZ {peer} {name} %(name)s %(levelname)s %(message)s", "%H:%M:%S"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


async def drive(call: Call) -> None:
    """Run the call under its soft deadline; SIGTERM/SIGINT end it as "terminated"."""
    loop = asyncio.get_running_loop()
    run = loop.create_task(call.run())

    def terminate(signame: str) -> None:
        log.warning("%s received", signame)
        call.result.fail("terminated")
        call.abort("terminated")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, terminate, sig.name)
    try:
        # the safety net behind every Call.until(): the soft deadline
        await asyncio.wait_for(run, max(0.0, call.deadline - time.monotonic()) + 0.5)
    except AgentAbort as err:
        call.result.fail(err.reason)
    except TimeoutError:
        call.result.fail("timeout")
    except Exception:
        log.exception("internal error")
        call.result.fail("internal-error")
    finally:
        await call.shutdown()


def run_agent(program: AgentProgram[C], argv: Sequence[str] | None) -> int:
    t0 = time.monotonic()
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    try:
        args = program.parser().parse_args(argv)
    except SystemExit as exit_:
        if exit_.code in (0, None):  # --help
            raise
        result = AgentResult(peer="?", role="?", started_at=started_at, impl=program.impl)
        result.fail("usage")
        ResultPrinter(result, t0).emit()
        return EXIT_USAGE
    setup_logging(args.peer, program.impl)
    program.quiet_loggers(bool(getattr(args, "verbose", False)))
    role = "controlling" if args.controlling else "controlled"
    result = AgentResult(peer=args.peer, role=role, started_at=started_at, impl=program.impl)
    printer = ResultPrinter(result, t0)
    try:
        cfg = program.config(args)
    except ValueError as err:
        log.error("usage: %s", err)
        result.fail("usage")
        printer.emit()
        return EXIT_USAGE
    inputs = program.inputs(cfg)
    why = program.missing()
    if why:
        log.error("%s cannot run here: %s", program.impl, why)
        result.fail("not-installed")
        printer.emit()
        return EXIT_FAILED
    result.impl_version = program.version()
    events = EventLog(inputs.events, inputs.peer, program.impl)
    printer.events = events
    watchdog = threading.Timer(max(0.1, inputs.timeout - HARD_MARGIN_S), printer.watchdog)
    watchdog.daemon = True
    watchdog.start()
    detail: list[str] = []
    try:
        asyncio.run(_main(program, cfg, printer, events, t0, detail))
    except Exception:
        log.exception("internal error")
        result.fail("internal-error")
    finally:
        watchdog.cancel()
        summary = "; ".join([*detail, f"peak_rss_mib={own_peak_rss_mib()}"])
        if result.error is None:
            events.emit(EventKind.DONE, f"{result.outcome}; {summary}")
        else:
            events.emit(EventKind.FAILED, f"{result.error}; {summary}")
        printer.emit()
        events.close()
    log.info("result: %s%s", result.outcome, f" (error {result.error})" if result.error else "")
    return EXIT_OK if result.error is None else EXIT_FAILED


async def _main(
    program: AgentProgram[C],
    cfg: C,
    printer: ResultPrinter,
    events: EventLog,
    t0: float,
    detail: list[str],
) -> None:
    call = program.make_call(cfg, printer.result, t0, events)
    printer.on_watchdog = call.on_watchdog
    try:
        await drive(call)
    finally:
        detail += call.summary()
