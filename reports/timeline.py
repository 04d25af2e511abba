"""Per-cell timelines: both sides' events (the row's ``timeline`` column) on one time axis, as
inline SVG for the HTML report (no scripts: hover text is each marker's SVG ``<title>``).

A row's timeline is JSON, ``[[seconds since the cell's first event, side, event, detail], ...]``
with side ``"a"`` or ``"b"`` and the events of the agent contract (``EVENT_KINDS``, the words of
``lab/agents/contract.py`` ``EventKind``; ``reports/`` does not import ``lab/``). Side A is drawn
above the axis and side B below. Where a cell stalled is marked: each side's last event (a
larger marker, labelled with its time), the gap before it (a shaded band) and the silence
after it (a dashed line). Long stretches without any event are drawn as axis breaks labelled
with their length, so a 30 s timeout does not squash the first second of a call.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reports.aggregate import is_na, is_skipped, truncate

SIDES = ("a", "b")
# The agent contract's events (lab/agents/contract.py EventKind), in call order, with the
# colour class of each: setup, gathering, signaling, checks, success, failure.
EVENT_KINDS: dict[str, str] = {
    "start": "k-setup",
    "joined": "k-setup",
    "gathered": "k-gather",
    "gathering-done": "k-gather",
    "description-sent": "k-signal",
    "description-received": "k-signal",
    "check-sent": "k-check",
    "check-answered": "k-check",
    "nominated": "k-ok",
    "connected": "k-ok",
    "peer-connected": "k-ok",
    "exchanged": "k-ok",
    "failed": "k-fail",
    "done": "k-setup",
}
# Labels placed first (they win a free label slot over routine events).
KEY_EVENTS = ("failed", "connected", "nominated", "peer-connected", "done")

WIDTH = 1000.0  # SVG user units; the report scales the drawing to the column width
LEFT, RIGHT = 34.0, 14.0  # margins: the lane letters on the left
BREAK_W = 44.0  # an axis break (a long stretch without events)
MAX_BREAKS = 3
MIN_BREAK_S = 1.0  # a stretch is a break when longer than this and than BREAK_SHARE of the span
BREAK_SHARE = 0.2
CLUSTER_PAD = 10.0  # room after each axis segment, so a point in time has a visible place
LEVEL_H = 13.0  # one row of labels
MAX_LEVELS = 3  # label rows per lane; a label that fits in none is left to its marker's title
CHAR_W = 5.7  # approximate width of one label character at the label font size
RUN_KEEP = 6  # a run of one event longer than this keeps its first 3 and last 2 markers
DETAIL_WIDTH = 300  # characters of a detail shown on hover
TICK_SPACING = 80.0  # at most one tick label per this many units
NICE_STEPS = tuple(m * 10.0**e for e in range(-3, 4) for m in (1, 2, 5))


@dataclass(frozen=True)
class TimelineEvent:
    t: float  # seconds since the cell's first event
    side: str  # "a" | "b"
    event: str  # EVENT_KINDS (an unknown word is kept and drawn neutral)
    detail: str | None = None


@dataclass(frozen=True)
class SideEnd:
    """Where one side's events stop: its last event, the gap before it and the silence
    after it (until the timeline's last event, of either side)."""

    side: str
    events: int
    last: TimelineEvent
    previous: TimelineEvent | None
    gap_s: float
    silent_s: float


def parse_timeline(text: Any) -> list[TimelineEvent] | None:
    """The events of a row's ``timeline`` column, sorted by time; ``None`` when there is no
    timeline (NA, empty, or not the JSON the schema describes). Malformed entries are
    skipped, never guessed."""
    if is_na(text) or not str(text).strip():
        return None
    try:
        data = json.loads(str(text))
    except ValueError:
        return None
    if not isinstance(data, list):
        return None
    events = []
    for item in data:
        if not isinstance(item, list) or len(item) < 3:
            continue
        t, side, event = item[0], item[1], item[2]
        detail = item[3] if len(item) > 3 else None
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
            continue
        if side not in SIDES or not isinstance(event, str):
            continue
        events.append(TimelineEvent(float(t), side, event, None if detail is None else str(detail)))
    events.sort(key=lambda e: e.t)
    return events or None


def side_ends(events: Sequence[TimelineEvent]) -> dict[str, SideEnd]:
    """Per side with events: its last event, the gap before it, the silence after it."""
    if not events:
        return {}
    end = max(e.t for e in events)
    ends = {}
    for side in SIDES:
        mine = [e for e in events if e.side == side]
        if not mine:
            continue
        last = mine[-1]
        previous = mine[-2] if len(mine) > 1 else None
        ends[side] = SideEnd(
            side=side,
            events=len(mine),
            last=last,
            previous=previous,
            gap_s=last.t - previous.t if previous else 0.0,
            silent_s=end - last.t,
        )
    return ends


def fmt_s(seconds: float) -> str:
    """Seconds for a label: 3 decimals below 1 s, 2 below 10 s, else 1."""
    digits = 3 if abs(seconds) < 1 else 2 if abs(seconds) < 10 else 1
    return f"{seconds:.{digits}f}\u202fs"


def side_summary(events: Sequence[TimelineEvent], impls: Mapping[str, Any]) -> list[str]:
    """One sentence per side (plain text): how many events, the last one and its time, the
    gap before it, the silence after it."""
    ends = side_ends(events)
    lines = []
    for side in SIDES:
        impl = impls.get(side)
        name = side.upper() + ("" if is_na(impl) else f" ({impl})")
        end = ends.get(side)
        if end is None:
            lines.append(f"{name}: no events.")
            continue
        text = f"{name}: {end.events} events, last {end.last.event} at {fmt_s(end.last.t)}"
        if end.previous is not None:
            text += f", {fmt_s(end.gap_s)} after {end.previous.event}"
        if end.silent_s > 0:
            text += f"; then silent for {fmt_s(end.silent_s)}"
        lines.append(text + ".")
    return lines


# ----------------------------------------------------------------------------- the time axis


@dataclass(frozen=True)
class _Segment:
    t0: float
    t1: float
    x0: float
    x1: float  # the segment's drawn end; CLUSTER_PAD follows it

    def x(self, t: float) -> float:
        if self.t1 <= self.t0:
            return self.x0
        return self.x0 + (t - self.t0) / (self.t1 - self.t0) * (self.x1 - self.x0)


class _Axis:
    """Time -> x, linear within segments, with a fixed-width break between segments where a
    long stretch has no event at all."""

    def __init__(self, times: Sequence[float]) -> None:
        ts = sorted(set(times))
        span = ts[-1] - ts[0]
        threshold = max(MIN_BREAK_S, BREAK_SHARE * span)
        gaps = sorted(
            ((ts[i + 1] - ts[i], i) for i in range(len(ts) - 1) if ts[i + 1] - ts[i] > threshold),
            reverse=True,
        )[:MAX_BREAKS]
        cuts = sorted(i for _, i in gaps)
        bounds, start = [], 0
        for i in cuts:
            bounds.append((ts[start], ts[i]))
            start = i + 1
        bounds.append((ts[start], ts[-1]))
        usable = WIDTH - LEFT - RIGHT - BREAK_W * len(cuts) - CLUSTER_PAD * len(bounds)
        total = sum(t1 - t0 for t0, t1 in bounds)
        self.segments: list[_Segment] = []
        x = LEFT
        for t0, t1 in bounds:
            width = usable * (t1 - t0) / total if total > 0 else usable / len(bounds)
            if total > 0 and t1 <= t0:
                width = 0.0
            self.segments.append(_Segment(t0, t1, x, x + width))
            x += width + CLUSTER_PAD + BREAK_W
        self.breaks = [
            (a.t1, b.t0, a.x1 + CLUSTER_PAD / 2, b.x0 - CLUSTER_PAD / 2)
            for a, b in zip(self.segments, self.segments[1:], strict=False)
        ]

    def segment_of(self, t: float) -> int:
        for i, seg in enumerate(self.segments):
            if t <= seg.t1:
                return i
        return len(self.segments) - 1

    def x(self, t: float) -> float:
        return self.segments[self.segment_of(t)].x(t)

    def ticks(self) -> list[tuple[float, str]]:
        out: list[tuple[float, str]] = []
        for seg in self.segments:
            duration, width = seg.t1 - seg.t0, seg.x1 - seg.x0
            marks = [seg.t0]
            if duration > 0 and width >= TICK_SPACING:
                most = max(1, int(width // TICK_SPACING))
                step = next((s for s in NICE_STEPS if duration / s <= most), NICE_STEPS[-1])
                k = math.ceil(seg.t0 / step - 1e-9)
                while k * step <= seg.t1 + 1e-9:
                    t = k * step
                    if seg.x(t) - seg.x(seg.t0) >= TICK_SPACING * 0.6:
                        marks.append(t)
                    k += 1
            for t in marks:
                x = seg.x(t)
                if not out or x - out[-1][0] >= TICK_SPACING * 0.6:
                    out.append((x, fmt_s(t)))
        return out


# ----------------------------------------------------------------------------- drawing


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _title(text: str) -> str:
    return f"<title>{html.escape(text)}</title>"


def _hover(e: TimelineEvent) -> str:
    text = f"{e.side.upper()} · {e.event} · {fmt_s(e.t)}"
    if e.detail:
        text += f" · {truncate(e.detail, DETAIL_WIDTH)}"
    return text


def _runs(events: Sequence[TimelineEvent], axis: _Axis) -> list[list[TimelineEvent]]:
    """Consecutive events of one side with the same name, within one axis segment."""
    runs: list[list[TimelineEvent]] = []
    for e in events:
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and last.event == e.event
            and axis.segment_of(last.t) == axis.segment_of(e.t)
        ):
            runs[-1].append(e)
        else:
            runs.append([e])
    return runs


class _Labels:
    """Greedy label rows: a label takes the lowest row where it overlaps no other label."""

    def __init__(self) -> None:
        self.rows: list[list[tuple[float, float]]] = [[] for _ in range(MAX_LEVELS)]

    def place(self, x: float, text: str) -> tuple[int, float, str] | None:
        width = CHAR_W * len(text) + 4
        x0, anchor = (x - 3, "start") if x - 3 + width <= WIDTH - 2 else (x + 3 - width, "end")
        x0 = max(x0, 2.0)
        for level, row in enumerate(self.rows):
            if all(x0 + width <= a or x0 >= b for a, b in row):
                row.append((x0, x0 + width))
                return level, x0 if anchor == "start" else x0 + width, anchor
        return None

    @property
    def used(self) -> int:
        return max([i + 1 for i, row in enumerate(self.rows) if row] or [1])


def timeline_svg(events: Sequence[TimelineEvent], impls: Mapping[str, Any] | None = None) -> str:
    """Both sides on one time axis as an inline ``<svg>`` (side A above, side B below); every
    event a marker whose hover text (``<title>``) gives its side, name, time and detail."""
    impls = impls or {}
    if not events:
        return '<p class="empty">No events.</p>'
    axis = _Axis([e.t for e in events])
    ends = side_ends(events)
    by_side = {s: [e for e in events if e.side == s] for s in SIDES}
    runs = {s: _runs(by_side[s], axis) for s in SIDES}

    # labels: the last event of each side first, then key events, then the rest in time order
    labels: dict[str, list[tuple[TimelineEvent, int, float, str, str]]] = {}
    levels = {}
    for side in SIDES:
        placer = _Labels()
        wanted = []
        for run in runs[side]:
            first = run[0]
            text = first.event if len(run) == 1 else f"{first.event} \u00d7{len(run)}"
            end = ends.get(side)
            if end is not None and run[-1] is end.last:
                if len(run) > 1:
                    wanted.append((0, end.last, f"{text}, last {fmt_s(end.last.t)}"))
                    continue
                text = f"last: {first.event} {fmt_s(first.t)}"
                wanted.append((0, first, text))
                continue
            wanted.append((1 if first.event in KEY_EVENTS else 2, first, text))
        placed = []
        for _, event, text in sorted(wanted, key=lambda w: (w[0], w[1].t)):
            spot = placer.place(axis.x(event.t), text)
            if spot is not None:
                placed.append((event, *spot, text))
        labels[side] = placed
        levels[side] = placer.used

    top = 4 + levels["a"] * LEVEL_H
    y_a = top + 8  # side A's markers
    y_axis = y_a + 16
    y_b = y_axis + 26  # side B's markers
    height = y_b + 10 + levels["b"] * LEVEL_H + 2

    out = [
        f'<svg class="tl-svg" viewBox="0 0 {_f(WIDTH)} {_f(height)}" '
        f'xmlns="http://www.w3.org/2000/svg" role="img">'
    ]
    # lanes
    out.append(
        f'<rect class="lane lane-a" x="{_f(LEFT - 6)}" y="0" '
        f'width="{_f(WIDTH - LEFT - RIGHT + 12)}" height="{_f(y_axis - 2)}"/>'
        f'<rect class="lane lane-b" x="{_f(LEFT - 6)}" y="{_f(y_axis + 2)}" '
        f'width="{_f(WIDTH - LEFT - RIGHT + 12)}" height="{_f(height - y_axis - 2)}"/>'
    )
    for side, y in (("a", y_a), ("b", y_b)):
        impl = impls.get(side)
        name = f"side {side.upper()}" + ("" if is_na(impl) else f": {impl}")
        out.append(
            f'<text class="lane-name" x="4" y="{_f(y + 4)}">{side.upper()}{_title(name)}</text>'
        )
    # axis breaks: stretches with no event on either side
    for t0, t1, x0, x1 in axis.breaks:
        out.append(
            f'<rect class="brk" x="{_f(x0)}" y="0" width="{_f(x1 - x0)}" height="{_f(height)}">'
            f"{_title(f'{fmt_s(t1 - t0)} without events ({fmt_s(t0)} to {fmt_s(t1)})')}</rect>"
            f'<text class="brk-text" x="{_f((x0 + x1) / 2)}" y="{_f(y_axis + 12)}" '
            f'text-anchor="middle">+{fmt_s(t1 - t0)}</text>'
        )
    # the axis, one line per segment, and its ticks
    for seg in axis.segments:
        out.append(
            f'<line class="axis" x1="{_f(seg.x0 - 4)}" y1="{_f(y_axis)}" '
            f'x2="{_f(seg.x1 + 4)}" y2="{_f(y_axis)}"/>'
        )
    for x, text in axis.ticks():
        out.append(
            f'<line class="tick" x1="{_f(x)}" y1="{_f(y_axis - 3)}" x2="{_f(x)}" '
            f'y2="{_f(y_axis + 3)}"/><text class="tick-text" x="{_f(x)}" '
            f'y="{_f(y_axis + 12)}" text-anchor="middle">{html.escape(text)}</text>'
        )
    end_x = axis.x(max(e.t for e in events))
    for side, y in (("a", y_a), ("b", y_b)):
        end = ends.get(side)
        if end is None:
            out.append(f'<text class="lbl none" x="{_f(LEFT)}" y="{_f(y + 4)}">no events</text>')
            continue
        # the gap before the last event, and the silence after it
        if end.previous is not None and end.gap_s > 0:
            x0, x1 = axis.x(end.previous.t), axis.x(end.last.t)
            tip = (
                f"{side.upper()}: {fmt_s(end.gap_s)} between {end.previous.event} and its "
                f"last event, {end.last.event}"
            )
            out.append(
                f'<rect class="gap" x="{_f(x0)}" y="{_f(y - 7)}" width="{_f(max(x1 - x0, 1))}" '
                f'height="14">{_title(tip)}</rect>'
            )
            if x1 - x0 > CHAR_W * 9:
                out.append(
                    f'<text class="gap-text" x="{_f((x0 + x1) / 2)}" y="{_f(y + 3.5)}" '
                    f'text-anchor="middle">{html.escape(fmt_s(end.gap_s))}</text>'
                )
        if end.silent_s > 0:
            x0 = axis.x(end.last.t)
            tip = f"{side.upper()}: no event for the last {fmt_s(end.silent_s)}"
            out.append(
                f'<line class="silent" x1="{_f(x0)}" y1="{_f(y)}" x2="{_f(end_x)}" '
                f'y2="{_f(y)}">{_title(tip)}</line>'
            )
        # markers
        for run in runs[side]:
            kept = run if len(run) <= RUN_KEEP else [*run[:3], *run[-2:]]
            if len(run) > RUN_KEEP:
                x0, x1 = axis.x(run[2].t), axis.x(run[-2].t)
                hidden = len(run) - 5
                tip = (
                    f"{side.upper()} · {hidden} more {run[0].event} between "
                    f"{fmt_s(run[3].t)} and {fmt_s(run[-3].t)}"
                )
                out.append(
                    f'<rect class="run {EVENT_KINDS.get(run[0].event, "k-other")}" '
                    f'x="{_f(x0)}" y="{_f(y - 2)}" width="{_f(max(x1 - x0, 1))}" height="4">'
                    f"{_title(tip)}</rect>"
                )
            for e in kept:
                kind = EVENT_KINDS.get(e.event, "k-other")
                is_last = e is end.last
                r = 6 if is_last else 4 if e is run[0] else 3
                cls = f"mk {kind}" + (" last" if is_last else "")
                out.append(
                    f'<circle class="{cls}" cx="{_f(axis.x(e.t))}" cy="{_f(y)}" r="{r}">'
                    f"{_title(_hover(e))}</circle>"
                )
        # labels, with a leader line when not on the first row
        for event, level, x, anchor, text in labels[side]:
            mx = axis.x(event.t)
            if side == "a":
                ly = y - 9 - level * LEVEL_H
                lead_y0, lead_y1 = y - 5, ly + 2
            else:
                ly = y + 17 + level * LEVEL_H
                lead_y0, lead_y1 = y + 5, ly - 9
            if level:
                out.append(
                    f'<line class="leader" x1="{_f(mx)}" y1="{_f(lead_y0)}" x2="{_f(mx)}" '
                    f'y2="{_f(lead_y1)}"/>'
                )
            cls = "lbl last" if event is end.last else "lbl"
            out.append(
                f'<text class="{cls}" x="{_f(x)}" y="{_f(ly)}" text-anchor="{anchor}">'
                f"{html.escape(text)}{_title(_hover(event))}</text>"
            )
    out.append("</svg>")
    return "".join(out)


# ----------------------------------------------------------------------------- selection


def _unexpected(row: Mapping[str, Any]) -> bool:
    outcome, expected = row["outcome"], row["expected"]
    return is_na(outcome) or (not is_na(expected) and outcome != expected)


def pick_trial(rows: Iterable[Mapping[str, Any]]) -> tuple[Mapping[str, Any], int] | None:
    """The trial of one cell whose timeline a report shows: the first unexpected trial
    (mismatch or lab error) that has one, else the first trial that has one; with the number
    of the cell's trials that have a timeline. Skipped rows have none; ``None`` without any."""
    with_timeline = [
        r for r in rows if not is_skipped(r["error"]) and parse_timeline(r["timeline"])
    ]
    if not with_timeline:
        return None
    chosen = next((r for r in with_timeline if _unexpected(r)), with_timeline[0])
    return chosen, len(with_timeline)
