"""reports.schema on the golden result tables: reading, schema errors, shard merging."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from reports.schema import (
    COLUMNS,
    ROW_KEY,
    SchemaError,
    merge_shards,
    read_merged,
    read_results,
    write_results,
)

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"
GOLDEN = sorted(p for p in RESULTS.glob("*.csv") if p.name != "wrong_schema.csv")


def test_reports_schema_golden_tables_exist() -> None:
    names = {p.stem for p in GOLDEN}
    assert {"normal_two_relays", "empty_cells", "all_failed", "na_values", "trials_mixed"} <= names


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_reports_schema_golden_csv_header_is_exactly_columns(path: Path) -> None:
    header = path.read_text().splitlines()[0].split(",")
    assert header == list(COLUMNS)
    frame = read_results([str(path)])
    assert list(frame.columns) == list(COLUMNS)
    assert {c: str(t) for c, t in frame.dtypes.items()} == COLUMNS


def test_reports_schema_wrong_csv_names_missing_columns() -> None:
    with pytest.raises(SchemaError) as err:
        read_results([str(RESULTS / "wrong_schema.csv")])
    message = str(err.value)
    assert "wrong_schema.csv" in message
    assert "missing columns" in message
    assert "trial" in message and "outcome" in message


def test_reports_schema_na_values_stay_na() -> None:
    frame = read_results([str(RESULTS / "na_values.csv")])
    assert frame.iloc[0].isna().all()
    assert frame["outcome"].isna().sum() == 2
    assert frame["trial"].dtype == "Int64"


def test_reports_schema_roundtrip_parquet_and_csv(tmp_path: Path) -> None:
    frame = read_results([str(RESULTS / "na_values.csv")])
    parquet, csv = write_results(frame, str(tmp_path / "run"))
    for path in (parquet, csv):
        back = read_results([path])
        pd.testing.assert_frame_equal(back, frame)


def test_reports_schema_merge_shards_dedupes_by_row_key() -> None:
    frame = read_results([str(RESULTS / "trials_mixed.csv")])
    first, second = frame.iloc[:20], frame.iloc[15:].copy()
    second.loc[second.index[0], "outcome"] = "fail"  # the re-run copy of row 15 wins
    merged = merge_shards([first, second])
    assert len(merged) == len(frame)
    assert not merged[list(ROW_KEY)].astype(str).duplicated().any()
    row = merged[
        (merged["nat_a"] == frame.loc[15, "nat_a"])
        & (merged["nat_b"] == frame.loc[15, "nat_b"])
        & (merged["trial"] == frame.loc[15, "trial"])
    ]
    assert list(row["outcome"]) == ["fail"]
    assert len(merge_shards([first, second], dedupe=False)) == 20 + len(second)


def test_reports_schema_merge_shards_na_keys_and_empty() -> None:
    frame = read_results([str(RESULTS / "na_values.csv")])
    assert len(merge_shards([frame, frame])) == len(frame)
    assert list(merge_shards([]).columns) == list(COLUMNS)


def test_reports_schema_read_merged_files(tmp_path: Path) -> None:
    normal = str(RESULTS / "normal_two_relays.csv")
    merged = read_merged([normal, normal])
    assert len(merged) == len(read_results([normal]))
