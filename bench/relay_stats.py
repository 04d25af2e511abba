"""Pure parts of the relay benchmark: loss, the zero-loss rate search, ratios, the load-bound
flag and the table. No sockets, no processes: unit tested on their own."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from reports.vocabulary import RELAY_IMPLS

ZERO_LOSS = 0.001  # "zero loss": under 0.1 % of the datagrams sent
LOAD_BOUND_FRACTION = 0.9  # a relay figure within 10 % of the ceiling says little about the relay
TARGETS = (*RELAY_IMPLS, "direct")  # the relays, and the path without one
NA = math.nan


def loss(sent: int, received: int) -> float:
    """1 - received/sent, clipped to [0, 1]; NaN when nothing was sent."""
    if sent <= 0:
        return NA
    return min(1.0, max(0.0, 1.0 - received / sent))


@dataclass
class RateSearch:
    """Find the highest offered rate (datagrams/s) with loss under ``threshold``.

    Seeded by the rate the receiver saw at full blast (``max_received``): the first probe is
    ``start_fraction`` of it. A failing probe lowers the next one (by ``backoff`` until one has
    passed, then bisecting); a passing probe raises it (bisecting towards the lowest failure, or
    by ``step_up`` if none failed yet and it stays under ``max_offered``). It stops after
    ``max_steps`` probes or when passing and failing rates are within ``resolution`` of each
    other. ``ceiling`` is the highest rate that passed, NaN if none did.
    """

    max_received: float
    max_offered: float = math.inf
    max_steps: int = 3
    threshold: float = ZERO_LOSS
    start_fraction: float = 0.9
    backoff: float = 0.6
    step_up: float = 1.15
    resolution: float = 0.1
    history: list[tuple[float, float]] = field(default_factory=list)

    @property
    def passed(self) -> list[float]:
        return [rate for rate, lost in self.history if lost < self.threshold]

    @property
    def failed(self) -> list[float]:
        return [rate for rate, lost in self.history if not lost < self.threshold]

    @property
    def ceiling(self) -> float:
        return max(self.passed, default=NA)

    def record(self, offered: float, lost: float) -> None:
        self.history.append((offered, lost))

    def next_rate(self) -> float | None:
        if len(self.history) >= self.max_steps or self.max_received <= 0:
            return None
        if not self.history:
            return max(1.0, self.max_received * self.start_fraction)
        best = max(self.passed, default=None)
        lowest_fail = min((r for r in self.failed if best is None or r > best), default=None)
        if best is None:
            assert lowest_fail is not None
            return max(1.0, lowest_fail * self.backoff)
        if lowest_fail is None:
            proposal = best * self.step_up
            if proposal > self.max_offered:
                return None  # already at what the generator can offer
            return proposal
        if (lowest_fail - best) / best <= self.resolution:
            return None
        return (best + lowest_fail) / 2


def ratio(numerator: float, denominator: float) -> float:
    if any(math.isnan(x) for x in (numerator, denominator)) or denominator == 0:
        return NA
    return numerator / denominator


def median(values: Iterable[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else NA


def load_bound(value: float, ceiling: float, fraction: float = LOAD_BOUND_FRACTION) -> bool:
    """True when ``value`` reaches ``fraction`` of the load generator's ceiling."""
    if math.isnan(value) or math.isnan(ceiling) or ceiling <= 0:
        return False
    return value >= fraction * ceiling


@dataclass(frozen=True)
class Figure:
    """One row of the relay table: how a figure is named, and whether a ceiling applies."""

    key: str
    label: str
    unit: str
    flag_ceiling: bool = True  # compare ours/coturn to the direct column (load-bound flag)
    ratio_direct: bool = True  # print ours/direct
    ratio_coturn: bool = True  # print ours/coturn (not for loss: a ratio of fractions misleads)


@dataclass
class Measurements:
    """Figure values by (figure key, target, round): the table is built from these."""

    values: dict[tuple[str, str, int], float] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, key: str, target: str, round_: int, value: float) -> None:
        self.values[(key, target, round_)] = float(value)

    def note(self, key: str, text: str) -> None:
        if text not in self.notes[key]:
            self.notes[key].append(text)

    def series(self, key: str, target: str) -> dict[int, float]:
        return {r: v for (k, t, r), v in self.values.items() if k == key and t == target}


def _ratio_median(a: dict[int, float], b: dict[int, float]) -> float:
    """Median over rounds of a/b, each ratio taken within one round (same machine state)."""
    return median(ratio(a[r], b[r]) for r in sorted(a.keys() & b.keys()))


def build_table(figures: Sequence[Figure], data: Measurements) -> pd.DataFrame:
    """One row per figure: medians of ours, coturn and direct, and median per-round ratios.

    ``note`` says which side reached the load generator's ceiling (LOAD_BOUND_FRACTION of
    the direct column measured in the same rounds): such a figure is load-bound, a lower bound
    on the relay rather than a measurement of it.
    """
    rows = []
    for fig in figures:
        series = {t: data.series(fig.key, t) for t in TARGETS}
        if not any(series.values()):
            continue
        med = {t: median(series[t].values()) for t in TARGETS}
        notes = list(data.notes.get(fig.key, []))
        if fig.flag_ceiling:
            for target in RELAY_IMPLS:
                if load_bound(med[target], med["direct"]):
                    notes.append(f"{target} load-bound")
        rows.append(
            {
                "figure": fig.label,
                "unit": fig.unit,
                "inrepo": med["inrepo"],
                "coturn": med["coturn"],
                "direct": med["direct"],
                "inrepo/coturn": (
                    _ratio_median(series["inrepo"], series["coturn"]) if fig.ratio_coturn else NA
                ),
                "inrepo/direct": (
                    _ratio_median(series["inrepo"], series["direct"]) if fig.ratio_direct else NA
                ),
                "runs": max((len(s) for s in series.values()), default=0),
                "note": "; ".join(notes),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "figure", "unit", "inrepo", "coturn", "direct", "inrepo/coturn", "inrepo/direct",
            "runs", "note",
        ],
    )  # fmt: skip


def format_table(table: pd.DataFrame) -> str:
    """Human-readable: 3 significant digits, NA for missing values."""

    def fmt(x: object) -> str:
        if isinstance(x, float):
            if math.isnan(x):
                return "NA"
            if abs(x) >= 100:
                return f"{x:,.0f}"
            return f"{x:.3g}"
        return str(x)

    return str(
        table.to_string(index=False, na_rep="NA", formatters={c: fmt for c in table.columns})
    )
