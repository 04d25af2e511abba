"""Aggregation of a results table into cells, success rates with Wilson score intervals, and
the short markdown summary for CI logs.

A *cell* is one relay and one ``CELL_KEY`` (scenario, topology, NATs, firewalls, ICE policy,
TURN transports); its rows are the trials. A trial is *as expected* when its outcome equals
its expected outcome, a *mismatch* when both are known and differ, and a *lab error* when the
outcome is NA (the lab could not produce a traversal result). Unknown stays NA throughout.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pandas as pd

from reports.schema import CELL_KEY, conform
from reports.vocabulary import LADDER, Outcome

Z_95 = 1.959963984540054  # two-sided 95 % normal quantile

# Display order of NAT presets (DESIGN.md "NAT model"); unknown names follow alphabetically.
NAT_ORDER = ("open", "full-cone", "restricted-cone", "port-restricted-cone", "symmetric", "cgnat")
FIREWALL_ORDER = ("open", "recommended", "minimal", "udp-blocked")

# Cell status, worst first: the order in which problems are listed.
STATUSES = ("mismatch", "lab-error", "flaky", "unjudged", "ok")

CELL_COLUMNS = (
    "relay_impl",
    *CELL_KEY,
    "relay_version",
    "trials",
    "expected",
    "observed",
    "outcomes",
    "connected",
    "as_expected",
    "mismatched",
    "lab_errors",
    "success_rate",
    "success_low",
    "success_high",
    "pass_rate",
    "pass_low",
    "pass_high",
    "status",
    "error",
    "time_to_connect_s",
    "throughput_mbps",
)


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval for ``successes`` of ``trials`` (95 % by default).

    ``None`` (NA) when there are no trials: nothing is known about the rate.
    """
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"invalid counts: {successes} of {trials}")
    if trials == 0:
        return None
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def is_na(value: Any) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def outcome_mode(values: Iterable[Any]) -> str | None:
    """The most frequent known outcome; a tie goes to the lowest ladder rung (the pessimistic
    reading); ``None`` when no outcome is known."""
    counts = Counter(str(v) for v in values if not is_na(v))
    if not counts:
        return None
    top = max(counts.values())
    tied = [v for v, n in counts.items() if n == top]
    return min(tied, key=lambda v: (LADDER.get(v, -1), v))


def nat_sort_key(name: Any) -> tuple[int, str]:
    if is_na(name):
        return (len(NAT_ORDER) + 1, "")
    name = str(name)
    return (NAT_ORDER.index(name), name) if name in NAT_ORDER else (len(NAT_ORDER), name)


def firewall_sort_key(name: Any) -> tuple[int, str]:
    if is_na(name):
        return (len(FIREWALL_ORDER) + 1, "")
    name = str(name)
    if name in FIREWALL_ORDER:
        return (FIREWALL_ORDER.index(name), name)
    return (len(FIREWALL_ORDER), name)


def _text_key(value: Any) -> tuple[int, str]:
    return (1, "") if is_na(value) else (0, str(value))


def _first(values: Iterable[Any]) -> Any:
    for value in values:
        if not is_na(value):
            return value
    return None


def _status(trials: int, expected: Any, observed: Any, as_expected: int, lab_errors: int) -> str:
    if lab_errors == trials:
        return "lab-error"
    if is_na(expected):
        return "unjudged"
    if observed != expected:
        return "mismatch"
    return "ok" if as_expected == trials else "flaky"


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as plain dicts, NA as ``None`` (fast to aggregate in Python)."""
    plain = frame.astype("object")
    return plain.where(frame.notna(), None).to_dict("records")


def _median(values: list[Any]) -> float | None:
    known = sorted(float(v) for v in values if v is not None)
    if not known:
        return None
    mid = len(known) // 2
    return known[mid] if len(known) % 2 else (known[mid - 1] + known[mid]) / 2


def cell_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (relay, cell): trials, expected and observed (modes), counts, rates with
    Wilson 95 % intervals, a status (``STATUSES``), the first error and medians."""
    frame = conform(frame)
    keys = ["relay_impl", *CELL_KEY]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for rec in records(frame):
        groups.setdefault(tuple(rec[k] for k in keys), []).append(rec)
    rows: list[dict[str, Any]] = []
    for key, group in groups.items():
        row: dict[str, Any] = dict(zip(keys, key, strict=True))
        trials = len(group)
        outcomes = [r["outcome"] for r in group]
        judged = [r for r in group if r["outcome"] is not None and r["expected"] is not None]
        as_expected = sum(r["outcome"] == r["expected"] for r in judged)
        mismatched = len(judged) - as_expected
        connected = sum(o is not None and o != Outcome.FAIL for o in outcomes)
        lab_errors = sum(o is None for o in outcomes)
        expected = outcome_mode(r["expected"] for r in group)
        observed = outcome_mode(outcomes)
        success = wilson_interval(connected, trials)
        passed = wilson_interval(as_expected, trials)
        counts = Counter("NA" if o is None else o for o in outcomes)
        row.update(
            relay_version=_first(r["relay_version"] for r in group),
            trials=trials,
            expected=expected,
            observed=observed,
            outcomes=", ".join(
                f"{name} {n}"
                for name, n in sorted(counts.items(), key=lambda kv: -LADDER.get(kv[0], -1))
            ),
            connected=connected,
            as_expected=as_expected,
            mismatched=mismatched,
            lab_errors=lab_errors,
            success_rate=connected / trials,
            success_low=success[0] if success else None,
            success_high=success[1] if success else None,
            pass_rate=as_expected / trials,
            pass_low=passed[0] if passed else None,
            pass_high=passed[1] if passed else None,
            status=_status(trials, expected, observed, as_expected, lab_errors),
            error=_first(r["error"] for r in group),
            time_to_connect_s=_median([r["time_to_connect_s"] for r in group]),
            throughput_mbps=_median([r["throughput_mbps"] for r in group]),
        )
        rows.append(row)
    rows.sort(key=_cell_sort_key)
    table = pd.DataFrame(rows, columns=list(CELL_COLUMNS))
    for column in ("trials", "connected", "as_expected", "mismatched", "lab_errors"):
        table[column] = table[column].astype("Int64")
    for column in (
        "success_rate",
        "success_low",
        "success_high",
        "pass_rate",
        "pass_low",
        "pass_high",
        "time_to_connect_s",
        "throughput_mbps",
    ):
        table[column] = table[column].astype("Float64")
    for column in ("relay_impl", *CELL_KEY, "relay_version", "expected", "observed", "error"):
        table[column] = table[column].astype("string")
    return table


def _cell_sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        _text_key(row["relay_impl"]),
        _text_key(row["scenario"]),
        _text_key(row["topology"]),
        firewall_sort_key(row["firewall_a"]),
        firewall_sort_key(row["firewall_b"]),
        _text_key(row["ice_policy"]),
        _text_key(row["turn_transports"]),
        nat_sort_key(row["nat_a"]),
        nat_sort_key(row["nat_b"]),
    )


def problems_first(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells ordered by status (``STATUSES``: mismatches first), keeping the order within."""
    rank = cells["status"].map({s: i for i, s in enumerate(STATUSES)})
    return cells.assign(_rank=rank).sort_values("_rank", kind="stable").drop(columns="_rank")


def cell_label(row: Any) -> str:
    """The NAT pair ("nat_a x nat_b", with a multiplication sign) plus whatever differs from
    the defaults (firewalls, ICE policy, topology), for lists and logs."""
    nat_a = "NA" if is_na(row["nat_a"]) else row["nat_a"]
    nat_b = "NA" if is_na(row["nat_b"]) else row["nat_b"]
    parts = [f"{nat_a} \u00d7 {nat_b}"]
    fw = (row["firewall_a"], row["firewall_b"])
    if any(is_na(f) or f != "open" for f in fw):
        parts.append("fw " + "/".join("NA" if is_na(f) else str(f) for f in fw))
    if is_na(row["ice_policy"]) or row["ice_policy"] != "all":
        parts.append(f"ice {'NA' if is_na(row['ice_policy']) else row['ice_policy']}")
    if not is_na(row["topology"]) and row["topology"] != "two-nats":
        parts.append(str(row["topology"]))
    if is_na(row["turn_transports"]):
        parts.append("turn NA")
    return ", ".join(parts)


def truncate(text: Any, width: int) -> str:
    if is_na(text):
        return ""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def totals(frame: pd.DataFrame, cells: pd.DataFrame | None = None) -> dict[str, Any]:
    """Headline numbers: trials, cells, relays, as-expected trials (with a Wilson interval),
    mismatching cells, lab errors."""
    frame = conform(frame)
    cells = cell_table(frame) if cells is None else cells
    trials = len(frame)
    judged = frame["outcome"].notna() & frame["expected"].notna()
    as_expected = int((judged & (frame["outcome"] == frame["expected"])).fillna(False).sum())
    return {
        "trials": trials,
        "cells": len(cells),
        "relays": sorted({str(r) for r in frame["relay_impl"].dropna()}),
        "as_expected": as_expected,
        "pass_rate": as_expected / trials if trials else None,
        "pass_interval": wilson_interval(as_expected, trials),
        "cells_ok": int((cells["status"] == "ok").sum()),
        "mismatched_cells": int((cells["status"] == "mismatch").sum()),
        "flaky_cells": int((cells["status"] == "flaky").sum()),
        "lab_error_cells": int((cells["status"] == "lab-error").sum()),
        "mismatched_trials": int(cells["mismatched"].sum()) if len(cells) else 0,
        "lab_errors": int(frame["outcome"].isna().sum()),
        "run_ids": sorted({str(r) for r in frame["run_id"].dropna()}),
    }


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {many or word + 's'}"


def _md(text: Any) -> str:
    return ("NA" if is_na(text) else str(text)).replace("|", "\\|").replace("\n", " ")


def markdown_summary(frame: pd.DataFrame, *, max_listed: int = 30, error_width: int = 80) -> str:
    """A short markdown summary for CI logs: per relay the cells, trials, cells as expected,
    mismatches and lab errors; then the cells that need attention (mismatch, lab error,
    flaky), each with expected, observed, trials as expected and the error, truncated."""
    frame = conform(frame)
    lines = ["## natlab results", ""]
    if not len(frame):
        return "\n".join([*lines, "No results: the table is empty.", ""])
    t = totals(frame)
    rate = f"{t['pass_rate']:.1%}" if t["pass_rate"] is not None else "NA"
    lines += [
        f"{plural(t['trials'], 'trial')} in {plural(t['cells'], 'cell')}; {t['as_expected']} of "
        f"{t['trials']} trials as expected ({rate}); "
        f"{plural(t['mismatched_cells'], 'mismatching cell')}, {t['flaky_cells']} flaky, "
        f"{plural(t['lab_errors'], 'lab error')}.",
        "",
        "| relay | version | cells | as expected | mismatches | flaky | lab errors | trials |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    cells = cell_table(frame)
    for relay, group in cells.groupby("relay_impl", dropna=False, sort=False):
        status = group["status"]
        lines.append(
            f"| {_md(relay)} | {_md(_first(group['relay_version']))} | {len(group)} "
            f"| {int((status == 'ok').sum())} | {int((status == 'mismatch').sum())} "
            f"| {int((status == 'flaky').sum())} | {int((status == 'lab-error').sum())} "
            f"| {int(group['trials'].sum())} |"
        )
    attention = problems_first(cells[cells["status"].isin(["mismatch", "lab-error", "flaky"])])
    if len(attention):
        lines += [
            "",
            f"### Needs attention ({len(attention)} cells)",
            "",
            "| status | relay | scenario | cell | expected | observed | as expected | error |",
            "|---|---|---|---|---|---|---:|---|",
        ]
        for _, row in attention.head(max_listed).iterrows():
            lines.append(
                f"| {row['status']} | {_md(row['relay_impl'])} | {_md(row['scenario'])} "
                f"| {_md(cell_label(row))} | {_md(row['expected'])} | {_md(row['observed'])} "
                f"| {row['as_expected']}/{row['trials']} "
                f"| {_md(truncate(row['error'], error_width))} |"
            )
        if len(attention) > max_listed:
            lines.append(f"\n… and {len(attention) - max_listed} more.")
    else:
        lines += ["", "All cells as expected."]
    return "\n".join(lines) + "\n"
