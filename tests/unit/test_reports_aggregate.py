"""Wilson intervals, cell aggregation and the markdown summary on golden tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from reports.aggregate import (
    cell_table,
    markdown_summary,
    outcome_mode,
    problems_first,
    totals,
    wilson_interval,
)
from reports.schema import empty_table, read_results

X = "\u00d7"  # the multiplication sign between the NATs of a cell
RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"


def load(name: str) -> pd.DataFrame:
    return read_results([str(RESULTS / f"{name}.csv")])


def test_reports_wilson_no_trials_is_na() -> None:
    assert wilson_interval(0, 0) is None


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (5, 10, 0.236593, 0.763407),
        (10, 10, 0.722467, 1.0),
        (0, 10, 0.0, 0.277533),
        (1, 1, 0.206549, 1.0),
        (0, 1, 0.0, 0.793451),
        (81, 263, 0.255289, 0.366217),  # worked by hand: centre 0.31075, half-width 0.05546
    ],
)
def test_reports_wilson_known_values(k: int, n: int, low: float, high: float) -> None:
    interval = wilson_interval(k, n)
    assert interval is not None
    assert interval[0] == pytest.approx(low, abs=1e-5)
    assert interval[1] == pytest.approx(high, abs=1e-5)


def test_reports_wilson_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_reports_outcome_mode_tie_goes_to_lower_rung() -> None:
    assert outcome_mode(["direct", "fail"]) == "fail"
    assert outcome_mode(["relay-udp", "relay-tls", "relay-udp"]) == "relay-udp"
    assert outcome_mode([pd.NA, None]) is None


def test_reports_cells_mixed_trials() -> None:
    cells = cell_table(load("trials_mixed")).set_index(["nat_a", "nat_b"])
    ok = cells.loc[("full-cone", "full-cone")]
    assert (ok["trials"], ok["status"]) == (10, "ok")
    assert ok["success_low"] == pytest.approx(0.722467, abs=1e-5)
    half = cells.loc[("port-restricted-cone", "port-restricted-cone")]
    assert (half["observed"], half["status"]) == ("fail", "mismatch")
    assert (half["success_low"], half["success_high"]) == (
        pytest.approx(0.236593, abs=1e-5),
        pytest.approx(0.763407, abs=1e-5),
    )
    flaky = cells.loc[("restricted-cone", "port-restricted-cone")]
    assert (flaky["status"], flaky["as_expected"], flaky["trials"]) == ("flaky", 8, 10)
    lab = cells.loc[("restricted-cone", "restricted-cone")]
    assert (lab["lab_errors"], lab["status"]) == (1, "flaky")
    single = cells.loc[("symmetric", "symmetric")]
    assert (single["trials"], single["status"], single["success_rate"]) == (1, "ok", 0.0)


def test_reports_cells_na_everywhere() -> None:
    cells = cell_table(load("na_values"))
    assert len(cells) == 5
    assert set(cells["status"]) == {"ok", "unjudged", "lab-error"}
    assert cells["relay_impl"].isna().sum() == 2


def test_reports_cells_empty_table() -> None:
    cells = cell_table(empty_table())
    assert len(cells) == 0
    assert totals(empty_table())["pass_interval"] is None


def test_reports_problems_first_orders_by_status() -> None:
    cells = problems_first(cell_table(load("normal_two_relays")))
    assert list(cells["status"].head(5)) == ["mismatch"] * 4 + ["lab-error"]
    assert set(cells["status"].iloc[5:]) == {"ok"}


def test_reports_markdown_summary_normal() -> None:
    text = markdown_summary(load("normal_two_relays"))
    assert text.startswith("## natlab results")
    assert "| coturn | coturn 4.6.1-1 | 59 | 56 | 2 | 0 | 1 | 59 |" in text
    assert "| inrepo | natlab-relay 0.1.0 | 59 | 57 | 2 | 0 | 0 | 59 |" in text
    assert "Needs attention (5 cells)" in text
    assert (
        f"| mismatch | inrepo | matrix-turn | symmetric {X} symmetric | relay-udp | relay-tcp |"
        in (text)
    )
    assert (
        f"| mismatch | coturn | matrix-turn | port-restricted-cone {X} symmetric | relay-udp | fail"
        in (text)
    )
    lab_line = next(line for line in text.splitlines() if line.startswith("| lab-error"))
    assert lab_line.endswith("… |")  # the long lab error is truncated
    assert "113 of 118 trials as expected" in text


def test_reports_markdown_summary_truncates_list_and_errors() -> None:
    text = markdown_summary(load("all_failed"), max_listed=3, error_width=20)
    assert "… and 29 more." in text
    assert "| a: TURN allocate fa… |" in text
    assert "| inrepo | natlab-relay 0.1.0 | 16 | 0 | 16 | 0 | 0 | 16 |" in text


def test_reports_markdown_summary_empty_and_na() -> None:
    assert "No results" in markdown_summary(empty_table())
    text = markdown_summary(load("na_values"))
    assert "nan" not in text.lower().replace("natlab", "")
    assert "<NA>" not in text
    assert "| NA | NA | 2 | 0 | 0 | 0 | 2 | 2 |" in text


def test_reports_markdown_summary_all_as_expected() -> None:
    assert "All cells as expected." in markdown_summary(load("empty_cells"))
