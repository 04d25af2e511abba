"""compare(): two relays or two runs, cell by cell, differences first."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from reports.compare import COMPARE_STATUSES, compare, render_compare_html
from reports.schema import empty_table, read_results

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"


def load(name: str) -> pd.DataFrame:
    return read_results([str(RESULTS / f"{name}.csv")])


def relays() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = load("normal_two_relays")
    return frame[frame["relay_impl"] == "inrepo"], frame[frame["relay_impl"] == "coturn"]


def test_reports_compare_relays_differences_first() -> None:
    table = compare(*relays())
    assert len(table) == 59
    differing = table[table["differs"]]
    assert list(table["differs"].head(len(differing))) == [True] * len(differing)
    assert set(table["status"]) <= set(COMPARE_STATUSES)
    ranks = table["status"].map(COMPARE_STATUSES.index)
    assert ranks.is_monotonic_increasing
    diffs = {
        (r.scenario, r.nat_a, r.nat_b, r.firewall_a, r.ice_policy, r.outcome_a, r.outcome_b)
        for r in differing.itertuples()
    }
    assert diffs == {
        ("matrix-turn", "symmetric", "symmetric", "open", "all", "relay-tcp", "relay-udp"),
        ("matrix-stun", "restricted-cone", "symmetric", "open", "all", "fail", "direct"),
        ("matrix-turn", "port-restricted-cone", "symmetric", "open", "all", "relay-udp", "fail"),
        ("fallback-ladder", "port-restricted-cone", "port-restricted-cone", "minimal", "all",
         "relay-udp", "relay-tls"),
        ("matrix-stun", "full-cone", "symmetric", "open", "all", "direct", pd.NA),
    }  # fmt: skip


def test_reports_compare_same_table_has_no_differences() -> None:
    a, _ = relays()
    table = compare(a, a)
    assert not table["differs"].any()
    assert set(table["status"]) == {"same"}


def test_reports_compare_only_one_side_and_rates() -> None:
    frame = load("trials_mixed")
    a = frame[frame["trial"] < 5]  # the first five trials of every cell
    b = frame[frame["nat_a"] != "full-cone"]
    table = compare(a, b)
    assert list(table["status"]) == [
        "outcome differs",  # port-restricted pair: 5/5 direct in a, tie -> fail in b
        "only in a",
        "rate differs",  # restricted x port-restricted: 5/5 in a, 8/10 in b
        "same",
        "same",
    ]
    only = table[table["status"] == "only in a"].iloc[0]
    assert only["nat_a"] == "full-cone" and pd.isna(only["outcome_b"])
    assert pd.isna(only["trials_b"]) and only["trials_a"] == 5


def test_reports_compare_runs_differ_in_cells() -> None:
    table = compare(load("empty_cells"), load("all_failed"))
    assert table["status"].iloc[0] == "outcome differs"
    assert (table["status"] == "only in b").sum() == 16 - 9
    assert table["success_rate_b"].dropna().eq(0).all()


def test_reports_compare_empty() -> None:
    assert len(compare(empty_table(), empty_table())) == 0
    html = render_compare_html(empty_table(), empty_table())
    assert "Both tables are empty." in html


def test_reports_compare_html() -> None:
    html = render_compare_html(*relays(), labels=("inrepo", "coturn"), title="relays")
    assert "inrepo vs coturn" in html
    assert html.index("outcome differs") < html.index(">same<")
    assert "only in" not in html  # both relays ran every cell
    assert not re.search(r"\bnan\b|<NA>|\bNone\b", html)
    assert "<script" not in html and "http" not in html


def test_reports_compare_html_names_alias() -> None:
    html = render_compare_html(*relays(), labels=["runs/a.parquet", "runs/b.parquet"])
    assert "runs/a.parquet vs runs/b.parquet" in html
