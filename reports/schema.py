"""The result table schema (DESIGN.md "One result row"): column names, dtypes and vocabulary,
shared by the writer (``lab.run``) and every reader (the HTML report, comparisons).

Unknown values are NA, never a made-up value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

OUTCOMES = ("direct", "relay-udp", "relay-tcp", "relay-tls", "fail")
# The fallback ladder (DESIGN.md): a lower rung is worse; "fail" is below all.
LADDER = {"direct": 4, "relay-udp": 3, "relay-tcp": 2, "relay-tls": 1, "fail": 0}
CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")
RELAY_PROTOCOLS = ("udp", "tcp", "tls")

# column -> pandas dtype (nullable dtypes, so NA is representable everywhere)
COLUMNS: dict[str, str] = {
    "run_id": "string",
    "scenario": "string",
    "topology": "string",
    "nat_a": "string",
    "nat_b": "string",
    "firewall_a": "string",
    "firewall_b": "string",
    "relay_impl": "string",
    "relay_version": "string",
    "ice_policy": "string",
    "turn_transports": "string",
    "trial": "Int64",
    "seed": "Int64",
    "expected": "string",
    "outcome": "string",
    "path": "string",
    "local_type": "string",
    "remote_type": "string",
    "relay_protocol": "string",
    "time_to_connect_s": "Float64",
    "checks_sent": "Int64",
    "rtt_ms": "Float64",
    "throughput_mbps": "Float64",
    "nat_a_observed": "string",
    "nat_b_observed": "string",
    "error": "string",
    "started_at": "string",
    "duration_s": "Float64",
}


class SchemaError(ValueError):
    """A results table that does not follow the schema; names what is wrong."""


def empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in COLUMNS.items()})


def to_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows (dicts) -> a table with exactly the schema's columns, in order, typed."""
    rows = list(rows)
    for i, row in enumerate(rows):
        extra = set(row) - set(COLUMNS)
        if extra:
            raise SchemaError(f"row {i}: unknown columns {sorted(extra)}")
    frame = pd.DataFrame(rows, columns=list(COLUMNS)) if rows else empty_table()
    return conform(frame)


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """Check columns and vocabulary, and cast to the schema's dtypes."""
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
