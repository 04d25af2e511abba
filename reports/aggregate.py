"""Aggregation of a results table into cells, success rates with Wilson score intervals, and
the short markdown summary for CI logs.

A *cell* is one relay and one ``CELL_KEY`` (scenario, topology, NATs, firewalls, ICE policy,
TURN transports, the ICE implementation on each side); its rows are the trials. A trial is *as
expected* when its outcome equals its expected outcome, a *mismatch* when both are known and
differ, and a *lab error* when the outcome is NA (the lab could not produce a traversal
result). A row whose ``error`` starts with "skipped:" did not run here (an implementation is not
installed): it is counted as skipped, never as a trial, a failure or a lab error. Unknown
stays NA throughout.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pandas as pd

from reports.schema import CELL_KEY, conform
from reports.vocabulary import AGENT_IMPLS, LADDER, SKIPPED, AgentImpl, Outcome

Z_95 = 1.959963984540054  # two-sided 95 % normal quantile

# Display order of NAT presets (DESIGN.md "NAT model"); unknown names follow alphabetically.
NAT_ORDER = ("open", "full-cone", "restricted-cone", "port-restricted-cone", "symmetric", "cgnat")
FIREWALL_ORDER = ("open", "recommended", "minimal", "udp-blocked")

# Cell status, worst first: the order in which problems are listed. "skipped": no trial ran.
STATUSES = ("mismatch", "lab-error", "flaky", "unjudged", "ok", "skipped")
# The reference implementation: the lab's own agent. A pair of it on both sides (or NA, a table
# written before the implementation columns) is the default pair, and names no implementation.
REFERENCE_IMPL = AgentImpl.AIOICE.value
SKIP_PREFIX = f"{SKIPPED}:"

CELL_COLUMNS = (
    "relay_impl",
    *CELL_KEY,
    "relay_version",
    "agent_a_version",
    "agent_b_version",
    "trials",
    "skipped",
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


def is_skipped(error: Any) -> bool:
    """A row's ``error`` says the cell did not run here (``vocabulary.SKIPPED``)."""
    return not is_na(error) and str(error).startswith(SKIP_PREFIX)


def skipped_rows(frame: pd.DataFrame) -> pd.Series:
    """A boolean mask of the rows that did not run here."""
    return frame["error"].fillna("").str.startswith(SKIP_PREFIX).astype(bool)


def impl_sort_key(name: Any) -> tuple[int, str]:
    """The reference implementation first, then ``AGENT_IMPLS`` order, others, NA last."""
    if is_na(name):
        return (len(AGENT_IMPLS) + 1, "")
    name = str(name)
    return (AGENT_IMPLS.index(name), name) if name in AGENT_IMPLS else (len(AGENT_IMPLS), name)


def pair_label(impl_a: Any, impl_b: Any) -> str:
    """The implementations on side A and side B, e.g. "chromium x aioice" (with the
    multiplication sign, as in a cell's NAT pair)."""
    return f"{'NA' if is_na(impl_a) else impl_a} \u00d7 {'NA' if is_na(impl_b) else impl_b}"


def is_default_pair(impl_a: Any, impl_b: Any) -> bool:
    """The reference implementation on both sides, or NA on both (an older table)."""
    if is_na(impl_a) and is_na(impl_b):
        return True
    return not is_na(impl_a) and not is_na(impl_b) and impl_a == impl_b == REFERENCE_IMPL


def agent_pairs(cells: pd.DataFrame) -> list[tuple[str | None, str | None]]:
    """The distinct (agent_a_impl, agent_b_impl) pairs of a cell table, in display order."""
    pairs = {
        (None if is_na(a) else str(a), None if is_na(b) else str(b))
        for a, b in zip(cells["agent_a_impl"], cells["agent_b_impl"], strict=True)
    }
    return sorted(pairs, key=lambda p: (impl_sort_key(p[0]), impl_sort_key(p[1])))


def shows_pairs(cells: pd.DataFrame) -> bool:
    """Whether a report names implementation pairs: more than one pair, or one that is not the
    default (a table of aioice x aioice, or of NA, reads as it did before the columns)."""
    pairs = agent_pairs(cells)
    return len(pairs) > 1 or any(not is_default_pair(a, b) for a, b in pairs)


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
    if trials == 0:
        return "skipped"
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
    found: list[dict[str, Any]] = plain.where(frame.notna(), None).to_dict("records")
    return found


def _median(values: list[Any]) -> float | None:
    known = sorted(float(v) for v in values if v is not None)
    if not known:
        return None
    mid = len(known) // 2
    return known[mid] if len(known) % 2 else (known[mid - 1] + known[mid]) / 2


def cell_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (relay, cell): trials, expected and observed (modes), counts, rates with
    Wilson 95 % intervals, a status (``STATUSES``), the first error and medians.

    Skipped rows (``is_skipped``) are counted in ``skipped`` only: ``trials`` and every rate
    are over the trials that ran; a cell with no trial that ran has status "skipped", NA rates
    and the skip reason as its error."""
    frame = conform(frame)
    keys = ["relay_impl", *CELL_KEY]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for rec in records(frame):
        groups.setdefault(tuple(rec[k] for k in keys), []).append(rec)
    rows: list[dict[str, Any]] = []
    for key, rows_of_cell in groups.items():
        row: dict[str, Any] = dict(zip(keys, key, strict=True))
        group = [r for r in rows_of_cell if not is_skipped(r["error"])]
        skipped = len(rows_of_cell) - len(group)
        trials = len(group)
        outcomes = [r["outcome"] for r in group]
        judged = [r for r in group if r["outcome"] is not None and r["expected"] is not None]
        as_expected = sum(r["outcome"] == r["expected"] for r in judged)
        mismatched = len(judged) - as_expected
        connected = sum(o is not None and o != Outcome.FAIL for o in outcomes)
        lab_errors = sum(o is None for o in outcomes)
        expected = outcome_mode(r["expected"] for r in (group or rows_of_cell))
        observed = outcome_mode(outcomes)
        success = wilson_interval(connected, trials)
        passed = wilson_interval(as_expected, trials)
        counts = Counter("NA" if o is None else o for o in outcomes)
        row.update(
            relay_version=_first(r["relay_version"] for r in rows_of_cell),
            agent_a_version=_first(r["agent_a_version"] for r in rows_of_cell),
            agent_b_version=_first(r["agent_b_version"] for r in rows_of_cell),
            trials=trials,
            skipped=skipped,
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
            success_rate=connected / trials if trials else None,
            success_low=success[0] if success else None,
            success_high=success[1] if success else None,
            pass_rate=as_expected / trials if trials else None,
            pass_low=passed[0] if passed else None,
            pass_high=passed[1] if passed else None,
            status=_status(trials, expected, observed, as_expected, lab_errors),
            error=_first(r["error"] for r in (group or rows_of_cell)),
            time_to_connect_s=_median([r["time_to_connect_s"] for r in group]),
            throughput_mbps=_median([r["throughput_mbps"] for r in group]),
        )
        rows.append(row)
    rows.sort(key=_cell_sort_key)
    table = pd.DataFrame(rows, columns=list(CELL_COLUMNS))
    for column in ("trials", "skipped", "connected", "as_expected", "mismatched", "lab_errors"):
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
    strings = ("relay_impl", *CELL_KEY, "relay_version", "agent_a_version", "agent_b_version")
    for column in (*strings, "expected", "observed", "error"):
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
        impl_sort_key(row["agent_a_impl"]),
        impl_sort_key(row["agent_b_impl"]),
        nat_sort_key(row["nat_a"]),
        nat_sort_key(row["nat_b"]),
    )


def problems_first(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells ordered by status (``STATUSES``: mismatches first), keeping the order within."""
    rank = cells["status"].map({s: i for i, s in enumerate(STATUSES)})
    return cells.assign(_rank=rank).sort_values("_rank", kind="stable").drop(columns="_rank")


def cell_label(row: Any) -> str:
    """The NAT pair ("nat_a x nat_b", with a multiplication sign) plus whatever differs from
    the defaults (firewalls, ICE policy, topology, implementations), for lists and logs."""
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
    if not is_default_pair(row["agent_a_impl"], row["agent_b_impl"]):
        parts.append(pair_label(row["agent_a_impl"], row["agent_b_impl"]))
    return ", ".join(parts)


def truncate(text: Any, width: int) -> str:
    if is_na(text):
        return ""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1].rstrip() + "…"


def totals(frame: pd.DataFrame, cells: pd.DataFrame | None = None) -> dict[str, Any]:
    """Headline numbers: trials, cells, relays, as-expected trials (with a Wilson interval),
    mismatching cells, lab errors. Skipped rows and cells are counted apart (``skipped``,
    ``skipped_cells``), never as trials or cells."""
    frame = conform(frame)
    cells = cell_table(frame) if cells is None else cells
    skipped = skipped_rows(frame).to_numpy(dtype=bool)
    ran = frame[~skipped]
    trials = len(ran)
    judged = ran["outcome"].notna() & ran["expected"].notna()
    as_expected = int((judged & (ran["outcome"] == ran["expected"])).fillna(False).sum())
    skipped_cells = int((cells["status"] == "skipped").sum())
    return {
        "trials": trials,
        "cells": len(cells) - skipped_cells,
        "relays": sorted({str(r) for r in frame["relay_impl"].dropna()}),
        "as_expected": as_expected,
        "pass_rate": as_expected / trials if trials else None,
        "pass_interval": wilson_interval(as_expected, trials),
        "cells_ok": int((cells["status"] == "ok").sum()),
        "mismatched_cells": int((cells["status"] == "mismatch").sum()),
        "flaky_cells": int((cells["status"] == "flaky").sum()),
        "lab_error_cells": int((cells["status"] == "lab-error").sum()),
        "mismatched_trials": int(cells["mismatched"].sum()) if len(cells) else 0,
        "lab_errors": int(ran["outcome"].isna().sum()),
        "skipped": int(skipped.sum()),
        "skipped_cells": skipped_cells,
        "run_ids": sorted({str(r) for r in frame["run_id"].dropna()}),
    }


IMPL_MATRIX_COLUMNS = (
    "relay_impl",
    "agent_a_impl",
    "agent_b_impl",
    "cells",
    "run",
    "as_expected",
    "mismatch",
    "flaky",
    "lab_error",
    "unjudged",
    "skipped",
    "trials",
    "trials_as_expected",
)


def impl_matrix(cells: pd.DataFrame) -> pd.DataFrame:
    """The cross-implementation table (like libp2p's hole-punch interop matrix): one row per
    (relay, implementation on side A, implementation on side B) with its cells, the cells that
    ran (at least one trial not skipped), how many of those are as expected, mismatch, flaky,
    lab error or unjudged, the cells skipped, and the trials that ran and were as expected."""
    keys = ["relay_impl", "agent_a_impl", "agent_b_impl"]
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rec in records(cells):
        key = tuple(rec[k] for k in keys)
        row = rows.setdefault(
            key,
            dict(zip(keys, key, strict=True))
            | {c: 0 for c in IMPL_MATRIX_COLUMNS if c not in keys},
        )
        status = str(rec["status"])
        row["cells"] += 1
        if status == "skipped":
            row["skipped"] += 1
        else:
            row["run"] += 1
            column = {"ok": "as_expected", "lab-error": "lab_error"}.get(status, status)
            row[column] += 1
        row["trials"] += int(rec["trials"])
        row["trials_as_expected"] += int(rec["as_expected"])
    ordered = sorted(
        rows.values(),
        key=lambda r: (
            _text_key(r["relay_impl"]),
            impl_sort_key(r["agent_a_impl"]),
            impl_sort_key(r["agent_b_impl"]),
        ),
    )
    table = pd.DataFrame(ordered, columns=list(IMPL_MATRIX_COLUMNS))
    for column in keys:
        table[column] = table[column].astype("string")
    for column in IMPL_MATRIX_COLUMNS[3:]:
        table[column] = table[column].astype("Int64")
    return table


def _side_of(impl: str, impl_a: Any, impl_b: Any) -> str:
    on_a, on_b = impl == impl_a, impl == impl_b
    return "A and B" if on_a and on_b else "A" if on_a else "B"


def impl_behaviours(cells: pd.DataFrame) -> list[dict[str, Any]]:
    """Cells where an implementation really behaves differently from the expected outcome
    (DESIGN.md's theory): every trial of the cell mismatches, while the same cell (same relay,
    scenario, NATs, firewalls, ICE policy, TURN) with the reference implementation on both
    sides (``REFERENCE_IMPL``) is as expected, so the lab and the NATs did what they should.

    The behaviour is the non-reference implementation's; when both sides run one, it is the
    one whose pair with the reference also mismatches on the same side, else the pair's.
    Each item: ``impl`` (a name, or the pair's label), ``side``, ``cell`` (the cell's row) and
    ``baseline`` (the reference pair's row)."""
    keys = ["relay_impl", *CELL_KEY]
    plain = records(cells)
    index = {tuple(r[k] for k in keys): r for r in plain}
    a_at, b_at = keys.index("agent_a_impl"), keys.index("agent_b_impl")

    def twin(rec: dict[str, Any], impl_a: Any, impl_b: Any) -> dict[str, Any] | None:
        key = [rec[k] for k in keys]
        key[a_at], key[b_at] = impl_a, impl_b
        return index.get(tuple(key))

    def all_mismatch(rec: dict[str, Any] | None) -> bool:
        return (
            rec is not None
            and rec["status"] == "mismatch"
            and int(rec["trials"]) > 0
            and int(rec["mismatched"]) == int(rec["trials"])
        )

    found = []
    for rec in plain:
        impl_a, impl_b = rec["agent_a_impl"], rec["agent_b_impl"]
        if not all_mismatch(rec) or is_default_pair(impl_a, impl_b):
            continue
        baseline = twin(rec, REFERENCE_IMPL, REFERENCE_IMPL)
        if baseline is None or baseline["status"] != "ok":
            continue
        suspects = [i for i in dict.fromkeys((impl_a, impl_b)) if i and i != REFERENCE_IMPL]
        if not suspects:
            continue
        if len(suspects) == 2:
            alone = [
                rec_impl
                for rec_impl, pair in (
                    (impl_a, (impl_a, REFERENCE_IMPL)),
                    (impl_b, (REFERENCE_IMPL, impl_b)),
                )
                if all_mismatch(twin(rec, *pair))
            ]
            if len(alone) == 1:
                suspects = alone
        if len(suspects) == 1:
            impl, side = str(suspects[0]), _side_of(suspects[0], impl_a, impl_b)
        else:
            impl, side = pair_label(impl_a, impl_b), "A and B"
        found.append({"impl": impl, "side": side, "cell": rec, "baseline": baseline})
    return found


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {many or word + 's'}"


def _md(text: Any) -> str:
    return ("NA" if is_na(text) else str(text)).replace("|", "\\|").replace("\n", " ")


def markdown_summary(frame: pd.DataFrame, *, max_listed: int = 30, error_width: int = 80) -> str:
    """A short markdown summary for CI logs: per relay the cells, trials, cells as expected,
    mismatches and lab errors; then the cells that need attention (mismatch, lab error,
    flaky), each with expected, observed, trials as expected and the error, truncated. Skipped
    cells are not counted; a line says how many there were."""
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
    ]
    if t["skipped_cells"]:
        lines.append(
            f"{plural(t['skipped_cells'], 'cell')} skipped ({plural(t['skipped'], 'row')}: an "
            "implementation is not installed here), not counted."
        )
    lines += [
        "",
        "| relay | version | cells | as expected | mismatches | flaky | lab errors | trials |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    cells = cell_table(frame)
    ran = cells[(cells["status"] != "skipped").to_numpy(dtype=bool)]
    for relay, group in ran.groupby("relay_impl", dropna=False, sort=False):
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
