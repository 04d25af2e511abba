"""The aioice agent's regular-nomination rule (lab.agents.aioice.nomination), without sockets."""

from __future__ import annotations

import itertools

import pytest

from lab.agents.aioice.nomination import (
    PairState,
    PairView,
    awaiting_nomination,
    best_succeeded,
    nomination_choice,
)

F, W, P, S, X = (
    PairState.FROZEN,
    PairState.WAITING,
    PairState.IN_PROGRESS,
    PairState.SUCCEEDED,
    PairState.FAILED,
)
WAIT = 2.0


def pairs(*states: PairState, component: int = 1) -> list[PairView]:
    """A check list, highest priority first."""
    return [PairView(component, state) for state in states]


def choose(
    check_list: list[PairView],
    since: float | None = 0.0,
    *,
    controlling: bool = True,
    nominating: bool = False,
    wait: float = WAIT,
) -> int | None:
    return nomination_choice(
        check_list,
        controlling=controlling,
        nominating=nominating,
        since_first_success=since,
        wait=wait,
    )


def test_nomination_best_pair_succeeded_is_nominated_at_once() -> None:
    assert choose(pairs(S, W, F, P)) == 0


def test_nomination_nothing_succeeded_nominates_nothing() -> None:
    assert choose(pairs(P, W, F, X), since=None) is None
    assert choose(pairs(P, W, F, X), since=10.0) is None  # however long it waited
    assert choose([], since=None) is None


def test_nomination_waits_for_a_better_pending_pair() -> None:
    # a direct pair whose hole punching needs a retransmission (in progress), below it a relay
    # pair that answered at once: the relay pair must not win right away
    check_list = pairs(P, S)
    assert choose(check_list, since=0.0) is None
    assert choose(check_list, since=WAIT - 0.01) is None
    # the direct pair succeeds meanwhile: it is the one nominated
    assert choose(pairs(S, S), since=1.0) == 0


@pytest.mark.parametrize("pending", [F, W, P])
def test_nomination_after_the_wait_takes_the_best_succeeded(pending: PairState) -> None:
    assert choose(pairs(pending, S, S), since=WAIT) == 1
    assert choose(pairs(pending, S, S), since=WAIT + 5) == 1


def test_nomination_failed_better_pairs_do_not_hold_it_back() -> None:
    assert choose(pairs(X, X, S, W), since=0.0) == 2


def test_nomination_pending_pairs_of_another_component_do_not_hold_it_back() -> None:
    check_list = [PairView(2, P), PairView(1, X), PairView(1, S)]
    assert choose(check_list, since=0.0) == 2
    assert choose([PairView(1, P), PairView(1, S)], since=0.0) is None


def test_nomination_wait_zero_nominates_the_first_success() -> None:
    assert choose(pairs(P, W, S), since=0.0, wait=0.0) == 2


def test_nomination_only_the_controlling_side_and_one_at_a_time() -> None:
    assert choose(pairs(S), controlling=False) is None
    assert choose(pairs(S), nominating=True) is None
    assert choose(pairs(P, S), since=WAIT, nominating=True) is None


def test_nomination_rule_over_every_three_pair_check_list() -> None:
    for states in itertools.product(PairState, repeat=3):
        check_list = pairs(*states)
        first = best_succeeded(check_list)
        for since in (None, 0.0, WAIT):
            got = choose(check_list, since=since)
            if first is None:
                assert got is None, states
                continue
            better_pending = any(s != X for s in states[:first])
            waited = since is not None and since >= WAIT
            # either the best succeeded pair or nothing; nothing only while a better pair is
            # pending and the wait is not over
            assert got == (None if better_pending and not waited else first), (states, since)


def test_nomination_a_succeeded_pair_holds_off_ice_failure_on_the_controlling_side() -> None:
    assert awaiting_nomination(pairs(X, S), controlling=True, done=False)
    assert not awaiting_nomination(pairs(X, S), controlling=False, done=False)
    assert not awaiting_nomination(pairs(X, S), controlling=True, done=True)
    assert not awaiting_nomination(pairs(X, X), controlling=True, done=False)
