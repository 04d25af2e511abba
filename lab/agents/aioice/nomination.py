"""The regular-nomination rule of the controlling agent (RFC 8445 §8.1.1), as a pure function.

aioice nominates aggressively: every check of the controlling side carries USE-CANDIDATE and
the first pair to succeed wins. A relay pair then beats a higher-priority direct pair whose hole
punching needs a retransmission, and the two sides may select different pairs (seen on
loopback: relay-udp on one side, relay-tcp on the other). natlab's agent sends its checks
without USE-CANDIDATE and nominates the best succeeded pair once no pair of higher priority is
still pending, or ``wait`` seconds after the first success, whichever comes first.

No sockets, no clock, no aioice: ``lab.agents.aioice.internals`` maps aioice's check list to
``PairView`` values and carries out the decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class PairState(StrEnum):
    """A candidate pair's state (RFC 8445 §6.1.2.6)."""

    FROZEN = "frozen"
    WAITING = "waiting"
    IN_PROGRESS = "in-progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class PairView:
    """What the rule needs of one pair of the check list."""

    component: int
    state: PairState


def best_succeeded(pairs: Sequence[PairView]) -> int | None:
    """Index of the first succeeded pair of a check list sorted by priority, highest first."""
    return next((i for i, p in enumerate(pairs) if p.state == PairState.SUCCEEDED), None)


def nomination_choice(
    pairs: Sequence[PairView],
    *,
    controlling: bool,
    nominating: bool,
    since_first_success: float | None,
    wait: float,
) -> int | None:
    """Index of the pair to nominate now, or None to keep checking.

    ``pairs`` is the check list, highest priority first; ``nominating`` says a nomination is
    already under way; ``since_first_success`` is the time in seconds since the first pair
    succeeded (None: none yet). Only the controlling side nominates, one pair at a time.
    """
    if not controlling or nominating:
        return None
    best = best_succeeded(pairs)
    if best is None:
        return None
    if since_first_success is not None and since_first_success >= wait:
        return best
    component = pairs[best].component
    for pair in pairs[:best]:
        if pair.component == component and pair.state != PairState.FAILED:
            return None  # a better pair may still succeed
    return best


def awaiting_nomination(pairs: Sequence[PairView], *, controlling: bool, done: bool) -> bool:
    """Whether a failing check list must wait: the controlling side has a succeeded pair that
    the rule above is still to nominate (aioice would declare ICE failed once every pair has
    finished, since none is nominated)."""
    return controlling and not done and best_succeeded(pairs) is not None
