"""Candidate gathering helpers that need no aioice internals: running the server-reflexive and
relay queries in parallel under one timeout, and dropping redundant candidates."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from aioice import Candidate

log = logging.getLogger("natlab.aioice")

T = TypeVar("T")
CANCEL_GRACE_S = 1.0  # how long cancelled queries get to close their sockets


async def run_parallel(
    jobs: Sequence[tuple[str, Coroutine[Any, Any, T]]], timeout: float
) -> tuple[list[T], list[str]]:
    """Run labelled queries at once; the results of those that finished within ``timeout``, in
    submission order, and one failure line per query that raised or did not finish."""
    tasks = [(label, asyncio.create_task(job)) for label, job in jobs]
    if not tasks:
        return [], []
    done, pending = await asyncio.wait([t for _, t in tasks], timeout=timeout)
    failures: list[str] = []
    for label, task in tasks:
        if task in pending:
            task.cancel()
            failures.append(f"{label}: no answer in {timeout:g} s")
            log.warning("gathering %s: no answer in %g s", label, timeout)
    if pending:
        await asyncio.wait(pending, timeout=CANCEL_GRACE_S)
    results: list[T] = []
    for label, task in tasks:
        if task not in done:
            continue
        exc = task.exception()
        if exc is not None:
            failures.append(f"{label}: {exc!r}")
            log.warning("gathering %s failed: %r", label, exc)
            continue
        results.append(task.result())
    return results, failures


def redundant(candidate: Candidate, others: Sequence[Candidate]) -> bool:
    """A srflx candidate equal to its base or to a candidate already kept (RFC 8445 §5.1.3)."""
    if (candidate.host, candidate.port) == (candidate.related_address, candidate.related_port):
        return True
    return any((c.host, c.port) == (candidate.host, candidate.port) for c in others)


def candidate_line(candidate: Candidate) -> str:
    """The RFC 8839 ``candidate:`` attribute (aioice's ``to_sdp`` leaves the prefix out)."""
    return f"candidate:{candidate.to_sdp()}"


def parse_candidate_line(text: str) -> Candidate:
    """A peer's candidate, written with or without ``a=`` and ``candidate:`` (browsers, pion
    and aioice write it differently); ValueError if it is not one."""
    line = text.strip().removeprefix("a=").removeprefix("candidate:")
    return Candidate.from_sdp(line)


def address(candidate: Candidate) -> str:
    return f"{candidate.host}:{candidate.port}"
