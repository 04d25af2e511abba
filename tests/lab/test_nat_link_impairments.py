"""Impairments on a veth between two namespaces: tbf rate, nftables loss, netem detection."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from lab.nat.impairments import (
    Impairment,
    ImpairmentUnavailable,
    netem_available,
    render_loss,
    require_delay_support,
    tc_commands,
)
from lab.nat.netns import add_veth, load_ruleset, namespaces, ns_run

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def pair() -> Iterator[dict[str, str]]:
    with namespaces("a", "b") as ns:
        add_veth(ns["a"], "eth0", ns["b"], "eth0")
        ns_run(ns["a"], ["ip", "addr", "add", "192.168.77.1/24", "dev", "eth0"])
        ns_run(ns["b"], ["ip", "addr", "add", "192.168.77.2/24", "dev", "eth0"])
        yield ns


def _loss_pct(ns: str) -> float:
    r = ns_run(
        ns,
        ["ping", "-n", "-q", "-c", "100", "-i", "0.002", "-W", "0.2", "192.168.77.2"],
        check=False,
        timeout=30,
    )
    m = re.search(r"([\d.]+)% packet loss", r.stdout)
    assert m, r.stdout + r.stderr
    return float(m.group(1))


def test_impairment_tbf_rate_is_installed(pair: dict[str, str]) -> None:
    cmds = tc_commands("eth0", Impairment(rate_mbit=20))
    ns_run(pair["a"], cmds[0], check=False)  # deleting a root qdisc that may not exist
    for argv in cmds[1:]:
        ns_run(pair["a"], argv)
    shown = ns_run(pair["a"], ["tc", "qdisc", "show", "dev", "eth0"]).stdout
    assert "tbf" in shown and "20Mbit" in shown, shown


def test_impairment_nft_loss_drops_about_the_asked_share(pair: dict[str, str]) -> None:
    load_ruleset(pair["a"], render_loss("eth0", 100))
    assert _loss_pct(pair["a"]) == 100
    load_ruleset(pair["a"], render_loss("eth0", 30))  # idempotent reload replaces the rule
    assert 10 <= _loss_pct(pair["a"]) <= 50
    load_ruleset(pair["a"], render_loss("eth0", 0))
    assert _loss_pct(pair["a"]) == 0


def test_impairment_delay_needs_netem() -> None:
    available = netem_available()
    assert netem_available() is available  # cached
    if available:
        require_delay_support(Impairment(delay_ms=20, jitter_ms=5))
    else:
        with pytest.raises(ImpairmentUnavailable, match="sch_netem missing"):
            require_delay_support(Impairment(delay_ms=20))
    require_delay_support(Impairment(rate_mbit=5, loss_pct=1))  # never needs netem
