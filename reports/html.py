"""The HTML report: one self-contained file (inline CSS, plots as data URIs, no scripts, no
external resources) built from a results table.

Sections, in order: a summary header (cells, trials, pass rate, mismatches), the cells that
need attention, per relay a NAT x NAT outcome matrix (observed colour-coded, expected in small
text, mismatches marked), the fallback ladder per firewall profile, success rates with Wilson
intervals, time-to-connect distributions, throughput direct vs relay, the observed NAT
classification, and the run's environment.

A table with ICE implementations other than aioice on both sides (``agent_a_impl``,
``agent_b_impl``) also gets a cross-implementation table (side A x side B per relay, with the
implementation behaviours found: ``aggregate.impl_behaviours``) and one set of outcome matrices
per implementation pair. A table with timelines gets per-cell timelines (``reports.timeline``):
open for unexpected cells, collapsed for the others. Rows that did not run here ("skipped:")
show as skipped, never as failed, and are not counted. A table of aioice x aioice (or of NA,
written before those columns) renders as it did before them.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from reports import plots
from reports.aggregate import (
    agent_pairs,
    cell_label,
    cell_table,
    firewall_sort_key,
    impl_behaviours,
    impl_matrix,
    impl_sort_key,
    is_na,
    nat_sort_key,
    pair_label,
    plural,
    problems_first,
    records,
    totals,
    truncate,
    wilson_interval,
)
from reports.environment import relay_versions
from reports.schema import CELL_KEY, COLUMNS, conform
from reports.vocabulary import LADDER, OUTCOMES

# What a declared NAT preset must look like to an RFC 5780 probe (DESIGN.md "NAT model");
GROUP_KEY = (
    "scenario",
    "topology",
    "firewall_a",
    "firewall_b",
    "ice_policy",
    "turn_transports",
    "agent_a_impl",
    "agent_b_impl",
)
CELL_ID = ("relay_impl", *CELL_KEY)  # one cell of the cell table
MAX_OPEN_TIMELINES = 40  # unexpected cells whose timeline is shown open; the rest are listed
MAX_TIMELINES = 400  # timelines embedded (open or collapsed); beyond, cells are only named
LADDER_SCENARIO = "fallback-ladder"
RUNGS = sorted(OUTCOMES, key=lambda o: -LADDER[o])  # direct ... fail
STATUS_TEXT = {
    "ok": "as expected",
    "mismatch": "mismatch",
    "flaky": "flaky",
    "lab-error": "lab error",
    "unjudged": "no expectation",
    "skipped": "skipped",
}

# The stylesheet ships beside this module as package data and is inlined into every page.
CSS = (resources.files("reports") / "report.css").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- formatting


def esc(value: Any) -> str:
    """Escaped text; NA as a muted "NA" (never "nan" or "<NA>")."""
    if is_na(value):
        return '<span class="na">NA</span>'
    return html.escape(str(value))


def attr(value: Any) -> str:
    return "NA" if is_na(value) else html.escape(str(value), quote=True)


def num(value: Any, digits: int = 2, unit: str = "") -> str:
    if is_na(value):
        return '<span class="na">NA</span>'
    return f"{float(value):.{digits}f}{unit}"


def pct(value: Any) -> str:
    if is_na(value):
        return '<span class="na">NA</span>'
    return f"{float(value) * 100:.1f}&#8239;%"


def interval(low: Any, high: Any) -> str:
    if is_na(low) or is_na(high):
        return '<span class="na">NA</span>'
    return f"{float(low) * 100:.1f}\u2013{float(high) * 100:.1f}&#8239;%"


def outcome_class(outcome: Any) -> str:
    return "o-na" if is_na(outcome) or outcome not in OUTCOMES else f"o-{outcome}"


def chip(outcome: Any, empty: str = "NA") -> str:
    text = empty if is_na(outcome) else html.escape(str(outcome))
    return f'<span class="chip {outcome_class(outcome)}">{text}</span>'


def badge(status: str) -> str:
    return f'<span class="badge s-{status}">{STATUS_TEXT.get(status, status)}</span>'


def _known_str(value: Any) -> str:
    return "NA" if is_na(value) else str(value)


def section_html(anchor: str, title: str, lead: str, body: str) -> str:
    lead_html = f'<p class="lead">{lead}</p>' if lead else ""
    return f'<section class="block" id="{anchor}"><h2>{title}</h2>{lead_html}{body}</section>'


def table_html(headers: Sequence[str], rows: Iterable[str], numeric: Iterable[int] = ()) -> str:
    numeric = set(numeric)
    head = "".join(
        f'<th class="num">{h}</th>' if i in numeric else f"<th>{h}</th>"
        for i, h in enumerate(headers)
    )
    return (
        f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def row_html(
    cells: Sequence[str | tuple[str, str]], numeric: Iterable[int] = (), cls: str = ""
) -> str:
    """A table row; a cell is its HTML, or (HTML, class)."""
    numeric = set(numeric)
    tds = []
    for i, cell in enumerate(cells):
        content, td_cls = cell if isinstance(cell, tuple) else (cell, "")
        td_cls = " ".join(c for c in (td_cls, "num" if i in numeric else "") if c)
        tds.append(f'<td class="{td_cls}">{content}</td>' if td_cls else f"<td>{content}</td>")
    return f'<tr class="{cls}">{"".join(tds)}</tr>' if cls else f"<tr>{''.join(tds)}</tr>"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "x"


def _cell_id(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(None if is_na(row[k]) else row[k] for k in CELL_ID)


def pair_anchor(relay: Any, impl_a: Any, impl_b: Any) -> str:
    """The id of one implementation pair's outcome matrices under one relay."""
    return "pair-" + _slug(f"{_known_str(relay)} {_known_str(impl_a)} {_known_str(impl_b)}")


def _timeline_anchors(
    cells: pd.DataFrame, timelines: Mapping[tuple[Any, ...], Any]
) -> dict[tuple[Any, ...], str]:
    """Cell -> the id of its timeline block (unique, readable)."""
    anchors: dict[tuple[Any, ...], str] = {}
    used: set[str] = set()
    for rec in records(cells):
        key = _cell_id(rec)
        if key not in timelines:
            continue
        base = "tl-" + _slug(" ".join(_known_str(v) for v in key))
        anchor, n = base, 2
        while anchor in used:
            anchor, n = f"{base}-{n}", n + 1
        used.add(anchor)
        anchors[key] = anchor
    return anchors


# ----------------------------------------------------------------------------- selections


def is_ladder_row(frame: pd.DataFrame) -> pd.Series:
    """Rows that belong to the fallback ladder: the ladder scenario, or any firewall that is
    not (known to be) open."""
    scenario = (frame["scenario"] == LADDER_SCENARIO).fillna(False)
    open_a = (frame["firewall_a"] == "open").fillna(False)
    open_b = (frame["firewall_b"] == "open").fillna(False)
    return (scenario | ~(open_a & open_b)).astype(bool)


def _relay_order(frame: pd.DataFrame, relays: Sequence[str] | None) -> list[str | None]:
    seen = sorted({str(r) for r in frame["relay_impl"].dropna()})
    order: list[str | None] = list(relays) if relays is not None else []
    order += [r for r in seen if r not in order]
    if frame["relay_impl"].isna().any():
        order.append(None)
    return order


def _rows_of(cells: pd.DataFrame, relay: str | None) -> pd.DataFrame:
    if relay is None:
        return cells[cells["relay_impl"].isna().to_numpy(dtype=bool)]
    return cells[(cells["relay_impl"] == relay).fillna(False).to_numpy(dtype=bool)]


def _group_title(key: Mapping[str, Any], show_pair: bool = False) -> str:
    """A heatmap's title: the implementation pair (when the table has several, or one that is
    not aioice x aioice), scenario, topology, TURN, ICE policy, firewalls."""
    transports = key["turn_transports"]
    turn = (
        "STUN only"
        if transports == "none"
        else f"TURN {transports}"
        if not is_na(transports)
        else "TURN NA"
    )
    parts = [_known_str(key["scenario"]), _known_str(key["topology"]), turn]
    if show_pair:
        parts.insert(0, pair_label(key["agent_a_impl"], key["agent_b_impl"]))
    parts.append(f"ICE {_known_str(key['ice_policy'])}")
    if key["firewall_a"] != "open" or key["firewall_b"] != "open":
        parts.append(f"firewalls {_known_str(key['firewall_a'])}/{_known_str(key['firewall_b'])}")
    return " · ".join(html.escape(p) for p in parts)


# ----------------------------------------------------------------------------- sections


def _header(frame: pd.DataFrame, title: str, t: Mapping[str, Any]) -> str:
    runs = ", ".join(t["run_ids"]) or "NA"
    started = frame["started_at"].dropna()
    span = (
        f" · {html.escape(min(started))} \u2013 {html.escape(max(started))}" if len(started) else ""
    )
    problems = t["mismatched_cells"] + t["lab_error_cells"] + t["flaky_cells"]
    if not t["trials"] and t["skipped"]:
        verdict = '<div class="verdict none">every cell skipped</div>'
    elif not t["trials"]:
        verdict = '<div class="verdict none">no results</div>'
    elif problems:
        verdict = f'<div class="verdict bad">{plural(problems, "cell")} need attention</div>'
    else:
        verdict = '<div class="verdict good">all cells as expected</div>'
    return (
        f'<header class="top"><div class="inner"><div><h1>{html.escape(title)}</h1>'
        f'<div class="sub">run {html.escape(runs)}{span}</div></div>{verdict}</div></header>'
    )


def _cards(t: Mapping[str, Any]) -> str:
    ci = t["pass_interval"]
    ci_text = f"95 % CI {interval(ci[0], ci[1])}" if ci else "no trials"

    def card(label: str, value: str, note: str = "", cls: str = "") -> str:
        return (
            f'<div class="card {cls}"><div class="label">{label}</div>'
            f'<div class="value">{value}</div><div class="note">{note}</div></div>'
        )

    rate_cls = "" if t["pass_rate"] is None else ("good" if t["pass_rate"] == 1 else "warn")
    return (
        '<div class="cards">'
        + "".join(
            [
                card(
                    "Mismatches",
                    str(t["mismatched_cells"]),
                    f"cells; {plural(t['mismatched_trials'], 'trial')}",
                    "bad" if t["mismatched_cells"] else "good",
                ),
                card(
                    "Pass rate",
                    pct(t["pass_rate"]),
                    f"{t['as_expected']} of {t['trials']} trials · {ci_text}",
                    rate_cls,
                ),
                card("Cells", str(t["cells"]), f"{t['cells_ok']} as expected"),
                card("Trials", str(t["trials"]), plural(len(t["relays"]), "relay")),
                card(
                    "Flaky",
                    str(t["flaky_cells"]),
                    "cells with mixed trials",
                    "warn" if t["flaky_cells"] else "",
                ),
                card(
                    "Lab errors",
                    str(t["lab_errors"]),
                    f"trials; {plural(t['lab_error_cells'], 'cell')} without a result",
                    "warn" if t["lab_errors"] else "",
                ),
                *(
                    [
                        card(
                            "Skipped",
                            str(t["skipped_cells"]),
                            "cells not run here (implementation not installed); not counted",
                            "muted",
                        )
                    ]
                    if t["skipped"]
                    else []
                ),
            ]
        )
        + "</div>"
    )


def _nav(items: Sequence[tuple[str, str]]) -> str:
    return "<nav>" + "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in items) + "</nav>"


@dataclass(frozen=True)
class _View:
    """What the whole table decides about how its parts are drawn."""

    show_pair: bool = False  # name implementation pairs (several, or not aioice x aioice)
    timelines: Mapping[tuple[Any, ...], str] = field(default_factory=dict)  # cell -> anchor
    skipped: bool = False  # some cells did not run here


def _timeline_link(view: _View, row: Mapping[str, Any], text: str = "timeline") -> str:
    anchor = view.timelines.get(_cell_id(row))
    return f' <a class="tl-link" href="#{anchor}">{text}</a>' if anchor else ""


def _attention(cells: pd.DataFrame, max_listed: int, view: _View = _View()) -> str:
    bad = problems_first(cells[cells["status"].isin(["mismatch", "lab-error", "flaky"])])
    if not len(bad):
        body = '<p class="empty">Every cell reached its expected outcome in every trial.</p>'
        return section_html("attention", "Needs attention", "", body)
    rows = []
    for _, row in bad.head(max_listed).iterrows():
        cls = "bad" if row["status"] == "mismatch" else "warn"
        error = row["error"]
        rows.append(
            row_html(
                [
                    badge(row["status"]),
                    esc(row["relay_impl"]),
                    esc(row["scenario"]),
                    html.escape(cell_label(row)) + _timeline_link(view, row),
                    chip(row["expected"]),
                    chip(row["observed"]),
                    f"{row['as_expected']}/{row['trials']}",
                    (
                        f'<span title="{attr(error)}">{html.escape(truncate(error, 140))}</span>'
                        if not is_na(error)
                        else "",
                        "err",
                    ),
                ],
                numeric=[6],
                cls=cls,
            )
        )
    more = (
        f'<p class="empty">… and {len(bad) - max_listed} more.</p>' if len(bad) > max_listed else ""
    )
    headers = [
        "status",
        "relay",
        "scenario",
        "cell",
        "expected",
        "observed",
        "as expected",
        "error",
    ]
    lead = (
        "Mismatch: the most frequent outcome differs from the expectation. Flaky: it agrees but "
        "some trials did not. Lab error: no traversal result (the lab failed, e.g. a NAT did not "
        "behave as declared)."
    )
    return section_html(
        "attention",
        f"Needs attention <span class='ver'>({len(bad)})</span>",
        lead,
        table_html(headers, rows, numeric=[6]) + more,
    )


def _legend(view: _View = _View()) -> str:
    items = [f'<span><span class="sw {outcome_class(o)}"></span>{o}</span>' for o in OUTCOMES]
    items.append('<span><span class="sw o-na"></span>no result (NA)</span>')
    items.append(
        '<span><span class="sw o-direct" style="border:3px solid var(--bad)"></span>'
        "mismatch (≠ marker)</span>"
    )
    items.append(
        '<span><span class="sw o-direct" style="border:2px dashed var(--warn)"></span>'
        "flaky (k/n trials as expected)</span>"
    )
    items.append(
        '<span><span class="sw" style="background:#f9fafb;border:1px dashed #d1d5db"></span>'
        "not run</span>"
    )
    if view.skipped:
        items.append(
            '<span><span class="sw skipped-sw"></span>skipped (implementation not installed '
            "here; not counted)</span>"
        )
    if view.timelines:
        items.append('<span><span class="tl-link">outcome underlined</span>: has a timeline</span>')
    return '<div class="legend">' + "".join(items) + "</div>"


def _tile(cell: Mapping[str, Any] | None, view: _View = _View()) -> str:
    if cell is None:
        return '<td class="tile nodata">not run</td>'
    status = cell["status"]
    if status == "skipped":
        tip = (
            f"{_known_str(cell['nat_a'])} \u00d7 {_known_str(cell['nat_b'])}: not run here, "
            f"{plural(int(cell['skipped']), 'row')} skipped — {truncate(cell['error'], 200)}"
        )
        return (
            f'<td class="tile skipped" data-status="skipped" '
            f'data-nat-a="{attr(cell["nat_a"])}" data-nat-b="{attr(cell["nat_b"])}" '
            f'title="{html.escape(tip, quote=True)}"><div class="obs">skipped</div>'
            f'<div class="exp">exp {esc(cell["expected"])}</div></td>'
        )
    observed = cell["observed"]
    classes = ["tile", outcome_class(observed)]
    if status in ("mismatch", "flaky", "lab-error"):
        classes.append(status)
    obs_text = "no result" if is_na(observed) else html.escape(observed)
    anchor = view.timelines.get(_cell_id(cell))
    if anchor:
        obs_text = f'<a class="tl-link" href="#{anchor}">{obs_text}</a>'
    expected = "NA" if is_na(cell["expected"]) else html.escape(cell["expected"])
    parts = [f'<div class="obs">{obs_text}</div>', f'<div class="exp">exp {expected}</div>']
    if cell["trials"] > 1 or status == "flaky":
        parts.append(f'<div class="n">{cell["as_expected"]}/{cell["trials"]} as exp.</div>')
    if status == "mismatch":
        parts.append('<span class="mark" title="mismatch">≠</span>')
    elif status == "flaky":
        parts.append('<span class="mark" title="flaky">~</span>')
    tip = (
        f"{_known_str(cell['nat_a'])} \u00d7 {_known_str(cell['nat_b'])}: observed "
        f"{_known_str(observed)} ({cell['outcomes']}), expected {_known_str(cell['expected'])}, "
        f"{STATUS_TEXT.get(status, status)}"
    )
    if cell["skipped"]:
        tip += f"; {plural(int(cell['skipped']), 'trial')} skipped"
    if not is_na(cell["error"]):
        tip += f" — {truncate(cell['error'], 200)}"
    return (
        f'<td class="{" ".join(classes)}" data-status="{status}" '
        f'data-nat-a="{attr(cell["nat_a"])}" data-nat-b="{attr(cell["nat_b"])}" '
        f'title="{html.escape(tip, quote=True)}">{"".join(parts)}</td>'
    )


def _heatmap(
    cells: pd.DataFrame, relay: str | None, group: Mapping[str, Any], view: _View = _View()
) -> str:
    nats_a = sorted({None if is_na(v) else v for v in cells["nat_a"]}, key=nat_sort_key)
    nats_b = sorted({None if is_na(v) else v for v in cells["nat_b"]}, key=nat_sort_key)
    lookup = {
        (None if is_na(r["nat_a"]) else r["nat_a"], None if is_na(r["nat_b"]) else r["nat_b"]): r
        for _, r in cells.iterrows()
    }
    head = '<th class="corner">A ↓ · B →</th>' + "".join(
        f'<th class="col">{esc(b)}</th>' for b in nats_b
    )
    body = []
    for a in nats_a:
        tiles = "".join(_tile(lookup.get((a, b)), view) for b in nats_b)
        body.append(f'<tr><th class="row">{esc(a)}</th>{tiles}</tr>')
    agents = (
        f'data-agent-a="{attr(group["agent_a_impl"])}" '
        f'data-agent-b="{attr(group["agent_b_impl"])}" '
        if view.show_pair
        else ""
    )
    return (
        f'<table class="heatmap" data-relay="{attr(relay)}" '
        f'data-scenario="{attr(group["scenario"])}" {agents}'
        f'data-turn="{attr(group["turn_transports"])}">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _matrix_blocks(grid: pd.DataFrame, relay: str | None, view: _View) -> str:
    blocks = []
    for key, group in grid.groupby(list(GROUP_KEY), dropna=False, sort=False):
        keyed = {k: (None if is_na(v) else v) for k, v in zip(GROUP_KEY, key, strict=True)}
        status = group["status"]
        stats = (
            f"{plural(len(group), 'cell')} · {int((status == 'ok').sum())} as expected · "
            f"{plural(int((status == 'mismatch').sum()), 'mismatch', 'mismatches')}"
        )
        if (status == "flaky").any():
            stats += f" · {int((status == 'flaky').sum())} flaky"
        if (status == "lab-error").any():
            stats += f" · {plural(int((status == 'lab-error').sum()), 'lab error')}"
        if (status == "skipped").any():
            stats += f" · {int((status == 'skipped').sum())} skipped"
        blocks.append(
            f'<div class="matrix"><h4>{_group_title(keyed, view.show_pair)}</h4>'
            f'<p class="stats">{stats}</p>'
            f"{_heatmap(group, relay, keyed, view)}</div>"
        )
    return '<div class="matrices">' + "".join(blocks) + "</div>"


def _versions(values: Iterable[Any]) -> str:
    return ", ".join(sorted({str(v) for v in values if not is_na(v)}))


def _pair_matrices(mine: pd.DataFrame, relay: str | None, view: _View) -> str:
    """One relay's matrices, one block per implementation pair, each with its anchor."""
    parts = []
    for impl_a, impl_b in agent_pairs(mine):
        same = (mine["agent_a_impl"].astype("object").where(mine["agent_a_impl"].notna(), None)
                == impl_a) & (
            mine["agent_b_impl"].astype("object").where(mine["agent_b_impl"].notna(), None)
            == impl_b
        )  # fmt: skip
        pair = mine[same.to_numpy(dtype=bool)]
        versions = [
            v for v in (_versions(pair["agent_a_version"]), _versions(pair["agent_b_version"])) if v
        ]
        ver = f'<span class="ver">{html.escape(" / ".join(versions))}</span>' if versions else ""
        parts.append(
            f'<div class="pair" id="{pair_anchor(relay, impl_a, impl_b)}">'
            f'<h4 class="pair-title">{html.escape(pair_label(impl_a, impl_b))}{ver}</h4>'
        )
        grid = pair[~_ladder_cells(pair)]
        skipped = pair[(pair["status"] == "skipped").to_numpy(dtype=bool)]
        if len(skipped) == len(pair):
            reason = truncate(skipped["error"].iloc[0], 200)
            parts.append(
                f'<p class="empty">All {plural(len(pair), "cell")} skipped: '
                f"{html.escape(reason)}</p></div>"
            )
            continue
        if not len(grid):
            parts.append(
                '<p class="empty">No open-firewall matrix rows (see the fallback ladder).</p></div>'
            )
            continue
        parts.append(_matrix_blocks(grid, relay, view) + "</div>")
    return "".join(parts)


def _matrices(cells: pd.DataFrame, relays: Sequence[str | None], view: _View = _View()) -> str:
    parts = [_legend(view)]
    for relay in relays:
        name = "unknown relay (NA)" if relay is None else relay
        mine = _rows_of(cells, relay)
        versions = sorted({str(v) for v in mine["relay_version"].dropna()})
        ver = f'<span class="ver">{html.escape(", ".join(versions))}</span>' if versions else ""
        parts.append(f'<h3 id="relay-{_slug(name)}">{html.escape(name)}{ver}</h3>')
        if not len(mine):
            parts.append('<p class="empty">No result rows for this relay.</p>')
            continue
        if view.show_pair:
            parts.append(_pair_matrices(mine, relay, view))
            continue
        grid = mine[~_ladder_cells(mine)]
        if not len(grid):
            parts.append(
                '<p class="empty">No open-firewall matrix rows (see the fallback ladder).</p>'
            )
            continue
        parts.append(_matrix_blocks(grid, relay, view))
    if not relays:
        parts.append('<p class="empty">No results.</p>')
    lead = (
        "Per relay, the outcome of each NAT pair (A rows, B columns), open firewalls. The colour "
        "is the observed outcome (most frequent over trials); the expected outcome from "
        "DESIGN.md is in small text. Red border and ≠: mismatch."
    )
    if view.show_pair:
        lead += " One set of matrices per ICE implementation pair (side A \u00d7 side B)."
    return section_html("matrix", "Outcome matrices", lead, "".join(parts))


def _share_style(share: float) -> str:
    """A background from red (none as expected) through amber to green (all)."""
    hue = round(8 + 132 * share)
    return f"background:hsl({hue} 62% 86%);color:hsl({hue} 70% 22%)"


def _cross_cell(row: Mapping[str, Any] | None, relay: str | None) -> str:
    if row is None:
        return '<td class="xcell nodata">not run</td>'
    run, ok, skipped = int(row["run"]), int(row["as_expected"]), int(row["skipped"])
    href = pair_anchor(relay, row["agent_a_impl"], row["agent_b_impl"])
    pair = pair_label(row["agent_a_impl"], row["agent_b_impl"])
    notes = [
        f"{int(row[c])} {word}"
        for c, word in (
            ("mismatch", "mismatch"),
            ("flaky", "flaky"),
            ("lab_error", "lab error"),
            ("unjudged", "unjudged"),
        )
        if int(row[c])
    ]
    if skipped:
        notes.append(f"{skipped} skipped")
    note = f'<div class="x-note">{html.escape(" · ".join(notes))}</div>' if notes else ""
    tip = (
        f"{pair}: {ok} of {run} cells that ran as expected "
        f"({row['trials_as_expected']} of {row['trials']} trials)"
        + (f"; {skipped} cells skipped (not run here)" if skipped else "")
    )
    if run:
        style = f' style="{_share_style(ok / run)}"'
        value = f"{ok}/{run}"
        cls = "xcell"
    else:
        style, value, cls = "", "skipped", "xcell skipped"
    return (
        f'<td class="{cls}"{style} data-pair="{attr(pair)}" data-run="{run}" data-ok="{ok}" '
        f'data-skipped="{skipped}" title="{html.escape(tip, quote=True)}">'
        f'<a href="#{href}"><div class="x-value">{value}</div>{note}</a></td>'
    )


def _behaviour_line(item: Mapping[str, Any], view: _View) -> str:
    cell, base = item["cell"], item["baseline"]
    where = " · ".join(_known_str(cell[k]) for k in ("relay_impl", "scenario"))
    side = f"side {item['side']}"
    return (
        f"<li><b>{html.escape(item['impl'])} behaviour</b> ({html.escape(side)}): "
        f"{html.escape(cell_label(cell))} ({html.escape(where)}) expected "
        f"{chip(cell['expected'])}, observed {chip(cell['observed'])} "
        f"({cell['mismatched']}/{cell['trials']} trials); aioice \u00d7 aioice as expected "
        f"({base['as_expected']}/{base['trials']}).{_timeline_link(view, cell)}</li>"
    )


def _cross_impl(cells: pd.DataFrame, relays: Sequence[str | None], view: _View) -> str:
    """Side A's implementation x side B's, per relay: cells as expected / cells run."""
    table = impl_matrix(cells)
    blocks = []
    for relay in relays:
        mine = records(_rows_of(table, relay))
        if not mine:
            continue
        rows_a = sorted({r["agent_a_impl"] for r in mine}, key=impl_sort_key)
        cols_b = sorted({r["agent_b_impl"] for r in mine}, key=impl_sort_key)
        lookup = {(r["agent_a_impl"], r["agent_b_impl"]): r for r in mine}
        head = '<th class="corner">A ↓ · B →</th>' + "".join(
            f'<th class="col">{esc(b)}</th>' for b in cols_b
        )
        body = "".join(
            f'<tr><th class="row">{esc(a)}</th>'
            + "".join(_cross_cell(lookup.get((a, b)), relay) for b in cols_b)
            + "</tr>"
            for a in rows_a
        )
        name = "unknown relay (NA)" if relay is None else relay
        blocks.append(
            f'<div class="matrix"><h4>{html.escape(name)}</h4>'
            f'<table class="cross" data-relay="{attr(relay)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>"
        )
    found = impl_behaviours(cells)
    if found:
        items = "".join(_behaviour_line(item, view) for item in found)
        notes = (
            "<h4>Implementation behaviour</h4><p class='lead'>Cells where every trial with "
            "this implementation differs from DESIGN.md's expected outcome while the same cell "
            "with aioice on both sides is as expected: the implementation's own behaviour, not "
            f"a lab failure.</p><ul class='behaviours'>{items}</ul>"
        )
    else:
        notes = (
            '<p class="empty">No implementation behaves differently from the expected outcome '
            "where aioice \u00d7 aioice is as expected.</p>"
        )
    lead = (
        "Rows: the ICE implementation on side A; columns: side B. Each cell: the cells (NAT "
        "pairs, scenarios) as expected / the cells that ran, coloured by that share; skipped "
        "cells (implementation not installed here) are not counted. Click for the pair's "
        "outcome matrices."
    )
    body = '<div class="matrices">' + "".join(blocks) + "</div>" + notes
    return section_html("impls", "Implementations", lead, body)


def _ladder_cells(cells: pd.DataFrame) -> pd.Series:
    return is_ladder_row(cells).to_numpy(dtype=bool)


def _ladder(cells: pd.DataFrame) -> str:
    ladder = cells[_ladder_cells(cells)]
    lead = (
        "Rows of the fallback-ladder scenario and every cell behind a non-open firewall, per "
        "firewall profile (A/B). Rungs from best to worst: direct UDP, relay over UDP, relay "
        "over TCP, relay over TLS 443, fail. Dashed: the expected rung; filled: observed."
    )
    if not len(ladder):
        return section_html(
            "ladder", "Fallback ladder", lead, '<p class="empty">No firewall cells in this run.</p>'
        )
    profiles: dict[tuple[Any, Any], list[Any]] = {}
    for _, row in ladder.iterrows():
        profiles.setdefault((row["firewall_a"], row["firewall_b"]), []).append(row)
    body = []
    headers = ["relay", "cell", "ICE", "TURN", *RUNGS, "verdict", "as expected"]
    for (fw_a, fw_b), rows in sorted(
        profiles.items(), key=lambda kv: (firewall_sort_key(kv[0][0]), firewall_sort_key(kv[0][1]))
    ):
        body.append(
            f'<tr class="group"><td colspan="{len(headers)}">firewall A {esc(fw_a)} · '
            f"firewall B {esc(fw_b)}</td></tr>"
        )
        for row in rows:
            expected, observed = row["expected"], row["observed"]
            rungs: list[str | tuple[str, str]] = []
            for rung in RUNGS:
                is_exp = not is_na(expected) and expected == rung
                is_obs = not is_na(observed) and observed == rung
                if is_obs:
                    extra = " both" if is_exp else ""
                    dot = f"{'✓ ' if is_exp else ''}{rung}"
                    rungs.append(
                        (
                            f'<span class="rung-dot {outcome_class(rung)}{extra}">{dot}</span>',
                            "rung",
                        )
                    )
                elif is_exp:
                    rungs.append((f'<span class="rung-dot expected">{rung}</span>', "rung"))
                else:
                    rungs.append(('<div class="rung-line"></div>', "rung"))
            if is_na(observed):
                verdict, cls = badge("lab-error") if row["status"] == "lab-error" else "NA", "warn"
            elif is_na(expected):
                verdict, cls = badge("unjudged"), ""
            elif LADDER[observed] < LADDER[expected]:
                verdict, cls = '<span class="badge s-mismatch">below expected rung</span>', "bad"
            elif LADDER[observed] > LADDER[expected]:
                verdict, cls = '<span class="badge s-mismatch">above expected rung</span>', "bad"
            else:
                verdict, cls = badge(row["status"]), "warn" if row["status"] == "flaky" else ""
            label = f"{_known_str(row['nat_a'])} \u00d7 {_known_str(row['nat_b'])}"
            if not is_na(row["scenario"]) and row["scenario"] != LADDER_SCENARIO:
                label += f" ({row['scenario']})"
            body.append(
                row_html(
                    [
                        esc(row["relay_impl"]),
                        (html.escape(label), "nowrap"),
                        esc(row["ice_policy"]),
                        esc(row["turn_transports"]),
                        *rungs,
                        verdict,
                        f"{row['as_expected']}/{row['trials']}",
                    ],
                    numeric=[len(headers) - 1],
                    cls=cls,
                )
            )
    return section_html(
        "ladder", "Fallback ladder", lead, table_html(headers, body, [len(headers) - 1])
    )


def _success(frame: pd.DataFrame, cells: pd.DataFrame) -> str:
    lead = (
        "Success = the agents connected (any outcome but fail); as expected = the outcome equals "
        "the expectation. Intervals are 95 % Wilson score intervals over trials."
    )
    if not len(cells):
        return section_html("success", "Success rates", lead, '<p class="empty">No trials.</p>')
    pooled = []
    for (relay, scenario), group in cells.groupby(["relay_impl", "scenario"], dropna=False):
        trials = int(group["trials"].sum())
        connected = int(group["connected"].sum())
        as_expected = int(group["as_expected"].sum())
        ci = wilson_interval(connected, trials)
        pi = wilson_interval(as_expected, trials)
        pooled.append(
            {
                "relay": _known_str(relay),
                "scenario": _known_str(scenario),
                "cells": len(group),
                "trials": trials,
                "connected": connected,
                "rate": connected / trials if trials else None,
                "low": ci[0] if ci else None,
                "high": ci[1] if ci else None,
                "as_expected": as_expected,
                "pass": as_expected / trials if trials else None,
                "pass_low": pi[0] if pi else None,
                "pass_high": pi[1] if pi else None,
            }
        )
    rows = [
        row_html(
            [
                html.escape(str(p["relay"])),
                html.escape(str(p["scenario"])),
                str(p["cells"]),
                f"{p['connected']}/{p['trials']}",
                pct(p["rate"]),
                interval(p["low"], p["high"]),
                f"{p['as_expected']}/{p['trials']}",
                pct(p["pass"]),
                interval(p["pass_low"], p["pass_high"]),
            ],
            numeric=range(2, 9),
        )
        for p in pooled
    ]
    headers = [
        "relay",
        "scenario",
        "cells",
        "connected",
        "rate",
        "95 % CI",
        "as expected",
        "rate",
        "95 % CI",
    ]
    table = table_html(headers, rows, numeric=range(2, 9))
    rates = pd.DataFrame(pooled)
    rates["label"] = rates["relay"] + " · " + rates["scenario"]
    image = plots.success_plot(rates)
    img = f'<img alt="success rates" src="{image}">' if image else ""
    per_cell = [
        row_html(
            [
                esc(row["relay_impl"]),
                esc(row["scenario"]),
                html.escape(cell_label(row)),
                str(row["trials"]),
                f"{row['connected']}/{row['trials']}",
                interval(row["success_low"], row["success_high"]),
                f"{row['as_expected']}/{row['trials']}",
                interval(row["pass_low"], row["pass_high"]),
                badge(row["status"]),
            ],
            numeric=range(3, 8),
        )
        for _, row in problems_first(cells).iterrows()
    ]
    details = (
        f"<details><summary>Per cell ({len(cells)})</summary>"
        + table_html(
            [
                "relay",
                "scenario",
                "cell",
                "trials",
                "connected",
                "95 % CI",
                "as expected",
                "95 % CI",
                "status",
            ],
            per_cell,
            numeric=range(3, 8),
        )
        + "</details>"
    )
    body = f'{table}<div class="plots" style="margin-top:14px">{img}</div>{details}'
    return section_html("success", "Success rates", lead, body)


def _distribution_table(
    frame: pd.DataFrame, column: str, by: pd.Series, unit: str, digits: int
) -> str:
    known = frame[column].notna().to_numpy(dtype=bool)
    rows = []
    relay = frame["relay_impl"].astype("object").where(frame["relay_impl"].notna(), "NA")
    data = pd.DataFrame(
        {"relay": relay[known], "by": by[known], "v": frame[column][known].astype(float)}
    )
    for (r, b), group in data.groupby(["relay", "by"], sort=True):
        v = group["v"]
        rows.append(
            row_html(
                [
                    html.escape(str(r)),
                    chip(b) if b in OUTCOMES else html.escape(str(b)),
                    str(len(v)),
                    num(v.median(), digits),
                    num(v.quantile(0.9), digits),
                    num(v.min(), digits),
                    num(v.max(), digits),
                ],
                numeric=range(2, 7),
            )
        )
    return table_html(
        ["relay", "", "n", f"median {unit}", f"p90 {unit}", f"min {unit}", f"max {unit}"],
        rows,
        numeric=range(2, 7),
    )


def _timing(frame: pd.DataFrame) -> str:
    lead = "Seconds from the start of ICE checks to the first connected pair, per outcome."
    image = plots.time_to_connect_plot(frame)
    if image is None:
        body = '<p class="empty">No time-to-connect values in this run.</p>'
    else:
        by = frame["outcome"].astype("object").where(frame["outcome"].notna(), "NA")
        table = _distribution_table(
            frame[frame["outcome"].notna()],
            "time_to_connect_s",
            by[frame["outcome"].notna()],
            "s",
            3,
        )
        body = (
            f'<div class="two"><div class="plots"><img alt="time to connect" src="{image}">'
            f"</div><div>{table}</div></div>"
        )
    return section_html("timing", "Time to connect", lead, body)


def _throughput(frame: pd.DataFrame) -> str:
    lead = "Goodput measured over the nominated pair: a direct path vs a relayed one."
    image = plots.throughput_plot(frame)
    if image is None:
        body = '<p class="empty">No throughput values in this run.</p>'
    else:
        kind = frame["outcome"].astype("object").map(plots.path_kind)
        keep = kind.notna().to_numpy(dtype=bool)
        table = _distribution_table(frame[keep], "throughput_mbps", kind[keep], "Mbit/s", 1)
        rtt = _distribution_table(frame[keep], "rtt_ms", kind[keep], "ms", 1)
        body = (
            f'<div class="two"><div class="plots"><img alt="throughput" src="{image}"></div>'
            f"<div>{table}<h4 style='margin-top:14px'>Round-trip time</h4>{rtt}</div></div>"
        )
    return section_html("throughput", "Throughput: direct vs relay", lead, body)


def _nat_classification(frame: pd.DataFrame) -> str:
    lead = (
        "Each NAT is probed (RFC 5780 behaviour discovery) before a cell runs; a NAT that does "
        "not behave as declared makes the cell a lab error. Counts over both sides of every trial."
    )
    counts: dict[tuple[Any, ...], int] = {}
    for side in ("a", "b"):
        columns = (f"nat_{side}", f"nat_{side}_declared", f"nat_{side}_observed")
        for values in zip(*(frame[c] for c in columns), strict=True):
            key = tuple(None if is_na(v) else v for v in values)
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return section_html("nat", "NAT classification", lead, '<p class="empty">No rows.</p>')
    rows = []
    for (nat, declared, observed), n in sorted(
        counts.items(), key=lambda kv: (nat_sort_key(kv[0][0]), _known_str(kv[0][2]))
    ):
        if observed is None:
            verdict, cls = '<span class="badge s-unjudged">not probed</span>', ""
        elif declared is None:
            verdict, cls = '<span class="badge s-unjudged">unknown preset</span>', ""
        elif observed == declared:
            verdict, cls = '<span class="badge s-ok">as declared</span>', ""
        else:
            verdict, cls = '<span class="badge s-mismatch">differs</span>', "bad"
        rows.append(
            row_html(
                [esc(nat), esc(declared), esc(observed), str(n), verdict], numeric=[3], cls=cls
            )
        )
    table = table_html(
        ["declared NAT", "expected mapping/filtering", "observed", "probes", "verdict"],
        rows,
        numeric=[3],
    )
    return section_html("nat", "NAT classification", lead, table)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            items += _flatten(value, f"{name} · ")
        elif isinstance(value, list | tuple):
            items.append((name, ", ".join(_known_str(v) for v in value) or None))
        else:
            items.append((name, value))
    return items


def _environment(frame: pd.DataFrame, environment: Mapping[str, Any] | None) -> str:
    groups: list[tuple[str, list[tuple[str, Any]]]] = []
    if environment:
        plain = [(k, v) for k, v in environment.items() if not isinstance(v, Mapping)]
        if plain:
            groups.append(("run", plain))
        for key, value in environment.items():
            if isinstance(value, Mapping):
                groups.append((str(key), _flatten(value)))
    table_relays = relay_versions(frame)
    if table_relays and not (environment and "relays" in environment):
        groups.append(("relay versions in the table", list(table_relays.items())))
    if not groups:
        body = '<p class="empty">No environment recorded.</p>'
    else:
        blocks = []
        for name, items in groups:
            entries = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{esc(v)}</dd>" for k, v in items)
            blocks.append(f'<div><h4>{html.escape(name)}</h4><dl class="env">{entries}</dl></div>')
        body = '<div class="envgrid">' + "".join(blocks) + "</div>"
    return section_html("environment", "Environment", "", body)


# ----------------------------------------------------------------------------- entry points


def page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def render_html(
    frame: pd.DataFrame,
    *,
    title: str = "natlab report",
    environment: Mapping[str, Any] | None = None,
    relays: Sequence[str] | None = None,
    max_listed: int = 200,
) -> str:
    """The whole report as one self-contained HTML document.

    ``relays`` names relays to show even without rows (and fixes their order); others found
    in the table follow. ``environment`` is shown as given (see ``collect_environment``).
    """
    frame = conform(frame)
    cells = cell_table(frame)
    t = totals(frame, cells)
    order = _relay_order(frame, relays)
    nav = _nav(
        [
            ("attention", "Needs attention"),
            ("matrix", "Outcome matrices"),
            ("ladder", "Fallback ladder"),
            ("success", "Success rates"),
            ("timing", "Time to connect"),
            ("throughput", "Throughput"),
            ("nat", "NAT classification"),
            ("environment", "Environment"),
        ]
    )
    sections = [
        _cards(t),
        nav,
        _attention(cells, max_listed),
        _matrices(cells, order),
        _ladder(cells),
        _success(frame, cells),
        _timing(frame),
        _throughput(frame),
        _nat_classification(frame),
        _environment(frame, environment),
        f"<footer>natlab reports · {len(COLUMNS)} schema columns · cells keyed by "
        f"relay, {', '.join(CELL_KEY)} · self-contained file</footer>",
    ]
    return page(title, _header(frame, title, t) + "<main>" + "".join(sections) + "</main>")


def write_html(frame: pd.DataFrame, path: str | Path, **kwargs: Any) -> Path:
    """Render with ``render_html(frame, **kwargs)`` and write UTF-8 to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(frame, **kwargs), encoding="utf-8")
    return path
