"""matplotlib figures for the HTML report (Agg backend), embedded as base64 PNG data URIs so
the report needs no external resource."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter

from reports.vocabulary import OUTCOMES, Outcome

# Outcome colours, shared with the HTML tiles (strong variants for plots).
OUTCOME_COLORS = {
    Outcome.DIRECT: "#1f9d55",
    Outcome.RELAY_UDP: "#2f6fd6",
    Outcome.RELAY_TCP: "#6b4fcf",
    Outcome.RELAY_TLS: "#b0479a",
    Outcome.FAIL: "#d64531",
}
RELAY_PALETTE = ("#2f6fd6", "#e08a00", "#1f9d55", "#b0479a", "#6b7280", "#0e9aa7")
RELAY_OUTCOMES = (Outcome.RELAY_UDP, Outcome.RELAY_TCP, Outcome.RELAY_TLS)
INK = "#1f2933"
MUTED = "#6b7280"
GRID = "#e5e7eb"
DPI = 110


def path_kind(outcome: Any) -> str | None:
    """ "direct" or "relay" for a connected outcome; None for fail and NA."""
    if not isinstance(outcome, str):
        return None
    return "direct" if outcome == Outcome.DIRECT else "relay" if outcome in RELAY_OUTCOMES else None


def relay_colors(relays: Sequence[str]) -> dict[str, str]:
    return {r: RELAY_PALETTE[i % len(RELAY_PALETTE)] for i, r in enumerate(relays)}


def _figure(width: float, height: float) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), dpi=DPI)
    ax = fig.add_subplot()
    ax.set_facecolor("white")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#9ca3af")
    ax.tick_params(colors=INK, labelsize=9)
    ax.grid(True, axis="y", color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    return fig, ax


def to_data_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", facecolor="white")
    plt.close(fig)  # harmless for a bare Figure; keeps pyplot's registry empty
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _relay_names(frame: pd.DataFrame) -> list[str]:
    return sorted({"NA" if pd.isna(r) else str(r) for r in frame["relay_impl"]})


def _grouped_boxes(
    ax: Any,
    groups: list[str],
    relays: list[str],
    values: dict[tuple[str, str], np.ndarray],
    colors: dict[str, str],
) -> None:
    """Side-by-side box plots (one per relay inside each group) with the trials as dots."""
    width = min(0.8 / max(1, len(relays)), 0.32)
    rng = np.random.default_rng(0)
    for r, relay in enumerate(relays):
        for g, group in enumerate(groups):
            data = values.get((group, relay))
            if data is None or not len(data):
                continue
            x = g + width * (r - (len(relays) - 1) / 2)
            ax.boxplot(
                [data],
                positions=[x],
                widths=width * 0.7,
                patch_artist=True,
                showfliers=False,
                medianprops={"color": INK, "linewidth": 1.4},
                boxprops={"facecolor": colors[relay] + "33", "edgecolor": colors[relay]},
                whiskerprops={"color": colors[relay]},
                capprops={"color": colors[relay]},
            )
            jitter = rng.uniform(-width * 0.22, width * 0.22, len(data))
            ax.scatter(
                x + jitter, data, s=12, color=colors[relay], alpha=0.75, zorder=3, linewidths=0
            )
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    handles = [Patch(facecolor=colors[r] + "55", edgecolor=colors[r], label=r) for r in relays]
    ax.legend(
        handles=handles,
        frameon=False,
        fontsize=9,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        ncol=max(1, len(relays)),
        title=None,
    )


def time_to_connect_plot(frame: pd.DataFrame) -> str | None:
    """Distribution of time to connect per observed outcome and relay; None without data."""
    known = frame[frame["time_to_connect_s"].notna() & frame["outcome"].notna()]
    if not len(known):
        return None
    groups = [o for o in OUTCOMES if (known["outcome"] == o).any()]
    relays = _relay_names(frame)
    colors = relay_colors(relays)
    values: dict[tuple[str, str], np.ndarray] = {}
    relay_of = known["relay_impl"].astype("object").where(known["relay_impl"].notna(), "NA")
    for group in groups:
        for relay in relays:
            mask = ((known["outcome"] == group) & (relay_of == relay)).to_numpy(dtype=bool)
            values[(group, relay)] = known.loc[mask, "time_to_connect_s"].to_numpy(dtype=float)
    fig, ax = _figure(7.2, 3.4)
    _grouped_boxes(ax, groups, relays, values, colors)
    ax.set_ylabel("time to connect (s)", color=INK, fontsize=9)
    ax.set_xlabel("observed outcome", color=MUTED, fontsize=9)
    ax.set_ylim(bottom=0)
    return to_data_uri(fig)


def throughput_plot(frame: pd.DataFrame) -> str | None:
    """Throughput over a direct path vs over a relay, per relay implementation."""
    known = frame[frame["throughput_mbps"].notna() & frame["outcome"].notna()]
    kind = known["outcome"].astype("object").map(path_kind)
    known = known[kind.notna().to_numpy(dtype=bool)]
    kind = kind[kind.notna()]
    if not len(known):
        return None
    groups = [g for g in ("direct", "relay") if (kind == g).any()]
    relays = _relay_names(frame)
    colors = relay_colors(relays)
    relay_of = known["relay_impl"].astype("object").where(known["relay_impl"].notna(), "NA")
    values: dict[tuple[str, str], np.ndarray] = {}
    for group in groups:
        for relay in relays:
            mask = ((kind == group) & (relay_of == relay)).to_numpy(dtype=bool)
            values[(group, relay)] = known.loc[mask, "throughput_mbps"].to_numpy(dtype=float)
    fig, ax = _figure(5.6, 3.4)
    _grouped_boxes(ax, groups, relays, values, colors)
    ax.set_ylabel("throughput (Mbit/s)", color=INK, fontsize=9)
    ax.set_xlabel("path", color=MUTED, fontsize=9)
    ax.set_ylim(bottom=0)
    return to_data_uri(fig)


def success_plot(rates: pd.DataFrame) -> str | None:
    """Horizontal bars of the success rate per row of ``rates`` (columns label, relay, rate,
    low, high) with the Wilson interval as error bars."""
    rates = rates[rates["rate"].notna()]
    if not len(rates):
        return None
    relays = sorted({str(r) for r in rates["relay"]})
    colors = relay_colors(relays)
    n = len(rates)
    fig, ax = _figure(7.2, 1.0 + 0.3 * n)
    ax.grid(True, axis="x", color=GRID, linewidth=0.8)
    ax.grid(False, axis="y")
    y = np.arange(n)[::-1]
    rate = rates["rate"].to_numpy(dtype=float)
    low = rates["low"].to_numpy(dtype=float, na_value=np.nan)
    high = rates["high"].to_numpy(dtype=float, na_value=np.nan)
    bar_colors = [colors[str(r)] for r in rates["relay"]]
    ax.barh(y, rate, color=[c + "aa" for c in bar_colors], height=0.6, edgecolor=bar_colors)
    ax.set_ylim(-0.7, n - 0.3)
    errors = np.clip(np.vstack([np.nan_to_num(rate - low), np.nan_to_num(high - rate)]), 0, None)
    ax.errorbar(rate, y, xerr=errors, fmt="none", ecolor=INK, elinewidth=1.1, capsize=3)
    ax.set_yticks(y)
    ax.set_yticklabels(list(rates["label"]), fontsize=8.5)
    ax.set_xlim(0, 1.0)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("success rate (connected trials), 95 % Wilson interval", color=MUTED, fontsize=9)
    return to_data_uri(fig)
