"""Pure parts of the relay benchmark: loss, zero-loss rate search, ratios, load-bound flag,
table building."""

from __future__ import annotations

import math

from bench.loadgen import channel_data, send_indication
from bench.relay_stats import (
    Figure,
    Measurements,
    RateSearch,
    build_table,
    format_table,
    load_bound,
    loss,
    median,
    ratio,
)
from relay.stun.attributes import Data, XorPeerAddress
from relay.stun.channeldata import ChannelData, decode_channel_data
from relay.stun.constants import Method
from relay.stun.message import decode_message


def test_loss_clipped_and_nan_without_traffic() -> None:
    assert math.isclose(loss(1000, 990), 0.01)
    assert loss(1000, 1010) == 0.0  # duplicates or stray packets never make loss negative
    assert loss(100, 0) == 1.0
    assert math.isnan(loss(0, 0))


def _run(search: RateSearch, capacity: float) -> list[float]:
    """Drive the search against a receiver that loses everything above ``capacity``."""
    probes = []
    while (rate := search.next_rate()) is not None:
        probes.append(rate)
        search.record(rate, 0.0 if rate <= capacity else (rate - capacity) / rate)
    return probes


def test_rate_search_first_probe_is_a_fraction_of_max_received() -> None:
    search = RateSearch(max_received=10_000, max_steps=1)
    assert _run(search, capacity=20_000) == [9_000]
    assert search.ceiling == 9_000


def test_rate_search_backs_off_until_a_pass_then_bisects() -> None:
    search = RateSearch(max_received=10_000, max_steps=4)
    probes = _run(search, capacity=4_000)
    assert probes[0] == 9_000
    assert probes[1] == 9_000 * 0.6  # 5400: still failing
    assert probes[2] == 5_400 * 0.6  # 3240: passes
    assert probes[3] == (3_240 + 5_400) / 2  # bisect: 4320 fails
    assert search.ceiling == 3_240


def test_rate_search_steps_up_after_a_pass_but_not_past_what_was_offered() -> None:
    search = RateSearch(max_received=10_000, max_offered=11_000, max_steps=5)
    probes = _run(search, capacity=50_000)
    assert probes == [9_000, 9_000 * 1.15]  # the next step (11,902) exceeds max_offered
    assert search.ceiling == 9_000 * 1.15


def test_rate_search_stops_when_pass_and_fail_are_close() -> None:
    search = RateSearch(max_received=10_000, max_steps=10, resolution=0.1)
    _run(search, capacity=8_700)
    passed, failed = max(search.passed), min(r for r in search.failed if r > max(search.passed))
    assert (failed - passed) / passed <= 0.1
    assert len(search.history) < 10


def test_rate_search_nothing_passes_gives_nan() -> None:
    search = RateSearch(max_received=10_000, max_steps=2)
    _run(search, capacity=0)
    assert math.isnan(search.ceiling)
    assert RateSearch(max_received=0).next_rate() is None


def test_ratio_and_median_treat_missing_as_nan() -> None:
    assert ratio(2.0, 4.0) == 0.5
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))
    assert median([3.0, math.nan, 1.0, 2.0]) == 2.0
    assert math.isnan(median([math.nan]))


def test_load_bound_flags_figures_near_the_ceiling() -> None:
    assert load_bound(95.0, 100.0)
    assert load_bound(120.0, 100.0)
    assert not load_bound(80.0, 100.0)
    assert not load_bound(80.0, math.nan)
    assert not load_bound(math.nan, 100.0)


def test_build_table_medians_per_round_ratios_and_flags() -> None:
    data = Measurements()
    for round_, (ours, coturn, direct) in enumerate([(10, 20, 100), (12, 30, 100), (11, 95, 100)]):
        data.add("pps", "inrepo", round_, ours)
        data.add("pps", "coturn", round_, coturn)
        data.add("pps", "direct", round_, direct)
    data.add("rss", "inrepo", 0, 1.5)
    data.add("rss", "coturn", 0, 3.0)
    data.note("rss", "one run")
    figures = [
        Figure("pps", "relayed pps", "pkt/s"),
        Figure("rss", "RSS per allocation", "KiB", flag_ceiling=False, ratio_direct=False),
        Figure("absent", "never measured", "x"),
    ]
    table = build_table(figures, data)
    assert list(table["figure"]) == ["relayed pps", "RSS per allocation"]
    pps = table.iloc[0]
    assert (pps["inrepo"], pps["coturn"], pps["direct"]) == (11, 30, 100)
    # the median of per-round ratios (0.5, 0.4, 0.1158), not 11/30
    assert math.isclose(pps["inrepo/coturn"], 0.4)
    assert math.isclose(pps["inrepo/direct"], 0.11)
    assert pps["runs"] == 3
    assert pps["note"] == ""  # coturn's median (30) is far from the ceiling
    rss = table.iloc[1]
    assert rss["inrepo/coturn"] == 0.5
    assert math.isnan(rss["inrepo/direct"]) and math.isnan(rss["direct"])
    assert rss["note"] == "one run"
    text = format_table(table)
    assert "NA" in text and "relayed pps" in text


def test_build_table_flags_a_relay_at_the_generator_ceiling() -> None:
    data = Measurements()
    data.add("pps", "inrepo", 0, 50)
    data.add("pps", "coturn", 0, 98)
    data.add("pps", "direct", 0, 100)
    (row,) = build_table([Figure("pps", "relayed pps", "pkt/s")], data).to_dict("records")
    assert row["note"] == "coturn load-bound"


def test_loadgen_packets_decode_as_turn() -> None:
    payload = bytes(range(100))
    frame = channel_data(payload)
    assert decode_channel_data(frame) == ChannelData(0x4000, payload)
    msg = decode_message(send_indication(("198.18.102.2", 5000), payload))
    assert msg.method == Method.SEND
    peer = msg.get(XorPeerAddress)
    assert peer is not None and (str(peer.ip), peer.port) == ("198.18.102.2", 5000)
    data = msg.get(Data)
    assert data is not None and data.data == payload
