"""``python -m bench``: run every benchmark that can run here and print one table.

Figures are medians of several runs and are reported next to a baseline measured in the same
run, as ratios, so machines of different speed can be compared.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.core import run_core_benchmarks
from bench.lab import run_lab_benchmarks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--out", default="reports/out/bench", help="directory for the CSV table")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (median)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tables = {"core": run_core_benchmarks(repeat=args.repeat)}
    lab_table = run_lab_benchmarks(repeat=args.repeat)
    if lab_table is not None:
        tables["lab"] = lab_table
    for name, table in tables.items():
        path = out / f"{name}.csv"
        table.to_csv(path, index=False)
        print(table.to_string(index=False))
        print(f"written: {path}\n", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
