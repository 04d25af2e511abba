"""The result table schema (DESIGN.md "One result row"): column names, dtypes and vocabulary,
shared by the writer (``lab.run``) and every reader (the HTML report, comparisons).

Unknown values are NA, never a made-up value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, get_type_hints

import pandas as pd

from reports.vocabulary import OUTCOMES


@dataclass(frozen=True, kw_only=True)
class ResultRow:
    """One trial of one cell; the only place the result columns are named. ``None`` is NA.

    Built by ``lab.run.build_row`` alone; the table's column order is this field order.
    """

    run_id: str | None = None
    scenario: str | None = None
    topology: str | None = None
    nat_a: str | None = None
    nat_b: str | None = None
    firewall_a: str | None = None
    firewall_b: str | None = None
    relay_impl: str | None = None
    relay_version: str | None = None
    ice_policy: str | None = None
    turn_transports: str | None = None  # "udp+tcp+tls", or "none" for STUN only
    trial: int | None = None
    seed: int | None = None
    expected: str | None = None  # OUTCOMES
    outcome: str | None = None  # OUTCOMES; NA for a lab error
    path: str | None = None  # "<local type>-><remote type>" of the nominated pair
    local_type: str | None = None
    remote_type: str | None = None
    relay_protocol: str | None = None  # the weaker side's client-to-TURN transport
    time_to_connect_s: float | None = None
    checks_sent: int | None = None
    rtt_ms: float | None = None
    throughput_mbps: float | None = None
    nat_a_observed: str | None = None  # "EIM/APDF": what the RFC 5780 probe measured
    nat_b_observed: str | None = None
    error: str | None = None
    started_at: str | None = None
    duration_s: float | None = None
    nat_a_declared: str | None = None  # "EIM/APDF": what the preset says the probe must see
    nat_b_declared: str | None = None
    agent_a_impl: str | None = None  # vocabulary.AGENT_IMPLS
    agent_a_version: str | None = None
    agent_b_impl: str | None = None
    agent_b_version: str | None = None
    # both sides' events, JSON: [[seconds since the cell's first event, side, event, detail]]
    timeline: str | None = None

    def __post_init__(self) -> None:
        for column in ("expected", "outcome"):
            value = getattr(self, column)
            if value is not None and value not in OUTCOMES:
                raise SchemaError(f"column {column}: {value!r} is not one of {OUTCOMES}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResultRow:
        """A row read back (a cell process's JSON line); unknown columns are an error."""
        unknown = set(data) - set(COLUMNS)
        if unknown:
            raise SchemaError(f"unknown columns {sorted(unknown)}")
        return cls(**dict(data))


_DTYPES = {str: "string", int: "Int64", float: "Float64"}


def _dtype(annotation: Any) -> str:
    (base,) = [t for t in annotation.__args__ if t is not type(None)]
    return _DTYPES[base]


_HINTS = get_type_hints(ResultRow)
# column -> pandas dtype (nullable dtypes, so NA is representable everywhere)
COLUMNS: dict[str, str] = {f.name: _dtype(_HINTS[f.name]) for f in fields(ResultRow)}
# Columns added after round 1: a results file written before them reads them as NA.
ADDED_COLUMNS = (
    "nat_a_declared", "nat_b_declared", "agent_a_impl", "agent_a_version", "agent_b_impl",
    "agent_b_version", "timeline",
)  # fmt: skip


class SchemaError(ValueError):
    """A results table that does not follow the schema; names what is wrong."""


def empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in COLUMNS.items()})


def to_frame(rows: Iterable[ResultRow]) -> pd.DataFrame:
    """Rows -> a table with exactly the schema's columns, in order, typed."""
    records = [row.as_dict() for row in rows]
    frame = pd.DataFrame(records, columns=list(COLUMNS)) if records else empty_table()
    return conform(frame)


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """Check columns and vocabulary, and cast to the schema's dtypes."""
    absent = [c for c in ADDED_COLUMNS if c not in frame.columns]
    if absent:
        frame = frame.assign(**{c: pd.NA for c in absent})
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise SchemaError(f"missing columns: {', '.join(missing)}")
    frame = frame[list(COLUMNS)].copy()
    for column, dtype in COLUMNS.items():
        try:
            frame[column] = frame[column].astype(dtype)
        except (TypeError, ValueError) as err:
            raise SchemaError(f"column {column}: cannot be read as {dtype}: {err}") from None
    for column in ("expected", "outcome"):
        bad = set(frame[column].dropna()) - set(OUTCOMES)
        if bad:
            raise SchemaError(f"column {column}: values outside {OUTCOMES}: {sorted(bad)}")
    return frame


def read_results(paths: Iterable[str]) -> pd.DataFrame:
    """Read and merge result files (Parquet or CSV; shards of one run or several runs)."""
    frames = []
    for path in paths:
        if str(path).endswith(".parquet"):
            frame = pd.read_parquet(path)
        elif str(path).endswith(".csv"):
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        else:
            raise SchemaError(f"{path}: expected a .parquet or .csv results file")
        try:
            frames.append(conform(frame))
        except SchemaError as err:
            raise SchemaError(f"{path}: {err}") from None
    return pd.concat(frames, ignore_index=True) if frames else empty_table()


def write_results(frame: pd.DataFrame, stem: str) -> tuple[str, str]:
    """Write ``<stem>.parquet`` and ``<stem>.csv``; returns both paths."""
    frame = conform(frame)
    parquet, csv = f"{stem}.parquet", f"{stem}.csv"
    frame.to_parquet(parquet, index=False)
    frame.to_csv(csv, index=False)
    return parquet, csv


# One trial of one cell is identified by these columns; shards of one run (or a re-run of a
# shard) may repeat a row, and merging keeps the last copy of each.
ROW_KEY = (
    "run_id",
    "scenario",
    "topology",
    "nat_a",
    "nat_b",
    "firewall_a",
    "firewall_b",
    "relay_impl",
    "ice_policy",
    "turn_transports",
    "agent_a_impl",
    "agent_b_impl",
    "trial",
)
# One cell (all its trials), independent of the relay: what two runs or two relays compare on.
CELL_KEY = (
    "scenario",
    "topology",
    "nat_a",
    "nat_b",
    "firewall_a",
    "firewall_b",
    "ice_policy",
    "turn_transports",
    "agent_a_impl",
    "agent_b_impl",
)


def merge_shards(frames: Iterable[pd.DataFrame], *, dedupe: bool = True) -> pd.DataFrame:
    """Merge result tables (shards) into one; with ``dedupe`` a row repeated under the same
    ``ROW_KEY`` keeps its last copy (a re-run shard replaces the earlier one). NA key values
    compare equal to each other."""
    parts = [conform(frame) for frame in frames]
    if not parts:
        return empty_table()
    merged = pd.concat(parts, ignore_index=True)
    if dedupe and len(merged):
        keys = merged[list(ROW_KEY)].astype("object").where(merged[list(ROW_KEY)].notna(), None)
        duplicated = keys.astype(str).duplicated(keep="last")
        merged = merged[~duplicated.to_numpy()].reset_index(drop=True)
    return merged


def read_merged(paths: Iterable[str], *, dedupe: bool = True) -> pd.DataFrame:
    """``read_results`` for every path, merged with ``merge_shards``."""
    return merge_shards([read_results([path]) for path in paths], dedupe=dedupe)
