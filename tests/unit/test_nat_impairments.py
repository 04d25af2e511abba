"""Impairment data, tc commands and the nftables loss table (pure)."""

from __future__ import annotations

import pytest

from lab.nat import impairments
from lab.nat.impairments import Impairment, ImpairmentUnavailable, render_loss, tc_commands


def test_nat_impairment_validation() -> None:
    for bad in (
        {"rate_mbit": 0},
        {"loss_pct": 101},
        {"loss_pct": -1},
        {"delay_ms": -1},
        {"jitter_ms": 5},
    ):
        with pytest.raises(ValueError):
            Impairment(**bad)  # type: ignore[arg-type]
    assert Impairment(delay_ms=10, jitter_ms=2).needs_netem
    assert not Impairment(rate_mbit=10, loss_pct=5).needs_netem


def test_nat_impairment_tc_commands() -> None:
    assert tc_commands("eth0", Impairment()) == [["tc", "qdisc", "del", "dev", "eth0", "root"]]
    tbf = tc_commands("eth0", Impairment(rate_mbit=10))[1]
    assert tbf[:8] == ["tc", "qdisc", "add", "dev", "eth0", "root", "handle", "1:"]
    assert tbf[8:11] == ["tbf", "rate", "10mbit"] and "burst" in tbf
    netem = tc_commands("eth0", Impairment(rate_mbit=2.5, delay_ms=40, jitter_ms=5))[1]
    assert netem[8:] == ["netem", "delay", "40ms", "5ms", "rate", "2.5mbit"]
    with pytest.raises(ValueError):
        tc_commands("eth 0", Impairment())


def test_nat_impairment_render_loss() -> None:
    s = render_loss("wan0", 2.5)
    assert s.startswith("table inet natlab_loss {}\ndelete table inet natlab_loss\n")
    assert 'oifname "wan0" numgen random mod 1000 < 25 counter drop' in s
    assert "drop" not in render_loss("wan0", 0)
    assert 'oifname "wan0" counter drop' in render_loss("wan0", 100)  # numgen range is 0-999
    with pytest.raises(ValueError):
        render_loss("wan0", 150)


def test_nat_impairment_require_delay_support(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(impairments, "netem_available", lambda: False)
    with pytest.raises(ImpairmentUnavailable, match="sch_netem missing: delay/jitter"):
        impairments.require_delay_support(Impairment(delay_ms=5))
    impairments.require_delay_support(Impairment(rate_mbit=5, loss_pct=3))
    monkeypatch.setattr(impairments, "netem_available", lambda: True)
    impairments.require_delay_support(Impairment(delay_ms=5))
