"""Compare two runs, or two relays, cell by cell.

Both tables are aggregated over trials per ``CELL_KEY`` (scenario, topology, NATs, firewalls,
ICE policy, TURN transports; the relay is not part of the key, so passing the rows of two
relays compares the relays). Per side: the outcome mode, the success rate (connected trials)
and the as-expected rate. Rows that differ come first. Skipped rows (an implementation not
installed) did not run and are left out: a cell skipped on one side is "only in" the other.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import pandas as pd

from reports.aggregate import (
    cell_label,
    impl_sort_key,
    is_na,
    nat_sort_key,
    outcome_mode,
    plural,
    skipped_rows,
)
from reports.html import chip, esc, page, pct, row_html, section_html, table_html
from reports.schema import CELL_KEY, conform
from reports.vocabulary import Outcome

# Comparison status, in the order rows are listed.
COMPARE_STATUSES = ("outcome differs", "only in a", "only in b", "rate differs", "same")
SIDE_COLUMNS = ("outcome", "trials", "success_rate", "as_expected_rate", "relays")
COMPARE_COLUMNS = (
    *CELL_KEY,
    "expected",
    *(f"{c}_a" for c in SIDE_COLUMNS),
    *(f"{c}_b" for c in SIDE_COLUMNS),
    "status",
    "differs",
)


def _aggregate(frame: pd.DataFrame) -> dict[tuple[Any, ...], dict[str, Any]]:
    frame = conform(frame)
    frame = frame[~skipped_rows(frame).to_numpy(dtype=bool)]
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    if not len(frame):
        return out
    for key, group in frame.groupby(list(CELL_KEY), dropna=False, sort=False):
        key = tuple(None if is_na(v) else v for v in key)
        outcome, expected = group["outcome"], group["expected"]
        trials = len(group)
        connected = int((outcome.notna() & (outcome != Outcome.FAIL)).fillna(False).sum())
        judged = outcome.notna() & expected.notna()
        as_expected = int((judged & (outcome == expected)).fillna(False).sum())
        out[key] = {
            "outcome": outcome_mode(outcome),
            "expected": outcome_mode(expected),
            "trials": trials,
            "success_rate": connected / trials,
            "as_expected_rate": as_expected / trials,
            "relays": ", ".join(sorted({str(r) for r in group["relay_impl"].dropna()})) or None,
        }
    return out


def compare(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """One row per cell present in ``a`` or ``b``: the cell key, the expected outcome, per
    side (suffix ``_a``/``_b``) the outcome mode, trials, success rate, as-expected rate and
    relays, then ``status`` (``COMPARE_STATUSES``) and ``differs``. Ordered by status (outcome
    differences first, ``same`` last), then by cell."""
    left, right = _aggregate(a), _aggregate(b)
    rows = []
    for key in list(left) + [k for k in right if k not in left]:
        la, rb = left.get(key), right.get(key)
        row: dict[str, Any] = dict(zip(CELL_KEY, key, strict=True))
        row["expected"] = la["expected"] if la and la["expected"] else (rb or {}).get("expected")
        for suffix, side in (("a", la), ("b", rb)):
            for column in SIDE_COLUMNS:
                row[f"{column}_{suffix}"] = side[column] if side else None
        if la is None:
            status = "only in b"
        elif rb is None:
            status = "only in a"
        elif la["outcome"] != rb["outcome"]:
            status = "outcome differs"
        elif (
            la["success_rate"] != rb["success_rate"]
            or la["as_expected_rate"] != rb["as_expected_rate"]
        ):
            status = "rate differs"
        else:
            status = "same"
        row["status"] = status
        row["differs"] = status != "same"
        rows.append(row)
    rows.sort(key=_sort_key)
    table = pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))
    for column in (*CELL_KEY, "expected", "outcome_a", "outcome_b", "relays_a", "relays_b"):
        table[column] = table[column].astype("string")
    for column in ("trials_a", "trials_b"):
        table[column] = table[column].astype("Int64")
    for column in ("success_rate_a", "success_rate_b", "as_expected_rate_a", "as_expected_rate_b"):
        table[column] = table[column].astype("Float64")
    table["status"] = table["status"].astype("string")
    table["differs"] = table["differs"].astype(bool)
    return table


def _sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    def text(v: Any) -> tuple[int, str]:
        return (1, "") if is_na(v) else (0, str(v))

    return (
        COMPARE_STATUSES.index(row["status"]),
        text(row["scenario"]),
        text(row["topology"]),
        text(row["firewall_a"]),
        text(row["firewall_b"]),
        text(row["ice_policy"]),
        text(row["turn_transports"]),
        impl_sort_key(row["agent_a_impl"]),
        impl_sort_key(row["agent_b_impl"]),
        nat_sort_key(row["nat_a"]),
        nat_sort_key(row["nat_b"]),
    )


def compare_section(table: pd.DataFrame, labels: Sequence[str] = ("a", "b")) -> str:
    """The comparison as an HTML section (for ``render_compare_html`` or another page)."""
    la, lb = (html.escape(label) for label in labels)
    counts = {s: int((table["status"] == s).sum()) for s in COMPARE_STATUSES}
    summary = " · ".join(
        f"{plural(n, 'cell')} {s.replace('in a', 'in ' + la).replace('in b', 'in ' + lb)}"
        for s, n in counts.items()
        if n
    )
    if not len(table):
        return section_html(
            "compare", "Comparison", "", '<p class="empty">Both tables are empty.</p>'
        )
    headers = [
        "status",
        "scenario",
        "cell",
        "expected",
        f"{la} outcome",
        f"{la} success",
        f"{lb} outcome",
        f"{lb} success",
    ]
    rows = []
    for _, row in table.iterrows():
        status = str(row["status"])
        cls = {"outcome differs": "bad", "rate differs": "warn"}.get(status, "")
        if status.startswith("only"):
            cls = "warn"
        badge_cls = {"outcome differs": "s-mismatch", "same": "s-ok"}.get(status, "s-flaky")
        side = status.replace("in a", f"in {la}").replace("in b", f"in {lb}")

        def rate(value: Any, trials: Any) -> str:
            return "" if is_na(trials) else f"{pct(value)} <small>of {trials}</small>"

        rows.append(
            row_html(
                [
                    f'<span class="badge {badge_cls}">{side}</span>',
                    (esc(row["scenario"]), "nowrap"),
                    html.escape(cell_label(row)),
                    chip(row["expected"]),
                    chip(row["outcome_a"], "no result") if not is_na(row["trials_a"]) else "—",
                    rate(row["success_rate_a"], row["trials_a"]),
                    chip(row["outcome_b"], "no result") if not is_na(row["trials_b"]) else "—",
                    rate(row["success_rate_b"], row["trials_b"]),
                ],
                numeric=[5, 7],
                cls=cls,
            )
        )
    lead = (
        f"Cells compared on scenario, topology, NATs, firewalls, ICE policy and TURN transports; "
        f"outcome = most frequent over trials; success = connected trials. {summary}."
    )
    return section_html("compare", f"{la} vs {lb}", lead, table_html(headers, rows, numeric=[5, 7]))


def render_compare_html(
    a: pd.DataFrame,
    b: pd.DataFrame,
    *,
    labels: Sequence[str] = ("a", "b"),
    title: str = "natlab comparison",
) -> str:
    """A self-contained HTML page comparing ``a`` and ``b`` (differences first); ``labels``
    name the two sides (``natlab report --compare`` passes the two result paths)."""
    if len(labels) != 2:
        raise ValueError(f"two labels needed, got {len(labels)}")
    table = compare(a, b)
    differing = int(table["differs"].sum())
    outcome_diffs = int((table["status"] == "outcome differs").sum())
    verdict = (
        '<div class="verdict none">no cells</div>'
        if not len(table)
        else f'<div class="verdict bad">{plural(differing, "cell")} differ</div>'
        if differing
        else '<div class="verdict good">identical outcomes</div>'
    )
    la, lb = (html.escape(label) for label in labels)
    header = (
        f'<header class="top"><div class="inner"><div><h1>{html.escape(title)}</h1>'
        f'<div class="sub">{la} vs {lb}</div></div>{verdict}</div></header>'
    )
    cards = (
        '<div class="cards">'
        f'<div class="card {"bad" if outcome_diffs else "good"}"><div class="label">'
        f'Outcome differs</div><div class="value">{outcome_diffs}</div>'
        '<div class="note">cells</div></div>'
        f'<div class="card"><div class="label">Cells</div><div class="value">{len(table)}</div>'
        f'<div class="note">{int((table["status"] == "same").sum())} same</div></div>'
        f'<div class="card"><div class="label">Only in {la}</div><div class="value">'
        f'{int((table["status"] == "only in a").sum())}</div><div class="note">cells</div></div>'
        f'<div class="card"><div class="label">Only in {lb}</div><div class="value">'
        f'{int((table["status"] == "only in b").sum())}</div><div class="note">cells</div></div>'
        "</div>"
    )
    return page(title, header + "<main>" + cards + compare_section(table, labels) + "</main>")
