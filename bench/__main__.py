"""``python -m bench``: run every benchmark that can run here and print one table.

Figures are medians of several runs and are reported next to a baseline measured in the same
run, as ratios, so machines of different speed can be compared. The relay table
(bench/relay_bench.py) puts our relay next to coturn and the direct path (the load
generator's ceiling) and is written to ``<out>/relay.csv``, every trial to
``<out>/relay_trials.csv``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd

from bench.relay_bench import RelayBenchConfig, relay_unavailable_reason, run_relay_benchmarks
from bench.relay_stats import format_table
from reports.vocabulary import RelayImpl

PARTS = ("core", "lab", "agents", "matrix", "relay")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run every benchmark that can run here and print the tables: core codec "
        "figures, lab overheads, and the relay table (ours vs coturn vs the direct path).",
    )
    parser.add_argument("--out", default="reports/out/bench", help="directory for the CSV tables")
    parser.add_argument("--repeat", type=int, default=5, help="runs per core/lab figure (median)")
    parser.add_argument(
        "--only", type=_csv, default=PARTS, metavar="PARTS",
        help=f"comma-separated subset of {','.join(PARTS)} (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true",
        help="a smoke run: one round, short trials, one payload size, few allocations",
    )  # fmt: skip
    relay = parser.add_argument_group("relay benchmark")
    relay.add_argument(
        "--topology", choices=("netns", "loopback"), default=None,
        help="client -> relay -> peer over veth in lab namespaces (default when root), or "
        "all on 127.0.0.1",
    )  # fmt: skip
    relay.add_argument("--relays", type=_csv, default=None, help="inrepo,coturn (default: both)")
    relay.add_argument("--relay-repeat", type=int, help="rounds (median over them; default 3)")
    relay.add_argument("--duration", type=float, help="full-blast trial, seconds (default 1.0)")
    relay.add_argument("--search-duration", type=float, help="rate-search trial, seconds (0.5)")
    relay.add_argument("--search-steps", type=int, help="rate-search trials per case (3)")
    relay.add_argument("--sizes", type=_csv, help="payload sizes in bytes (default 100,1200)")
    relay.add_argument("--threads", type=_csv, help="relay thread settings: 1,all (default)")
    relay.add_argument("--alloc-clients", type=int, help="clients in the Allocate-rate run (2000)")
    relay.add_argument("--hold", type=int, help="allocations held open (default 10000)")
    relay.add_argument("--no-pin", action="store_true", help="do not pin relay/load to CPUs")
    relay.add_argument(
        "--datapath", choices=("auto", "c", "python"),
        help="our relay's packet loop (default auto: the C loop when built); python measures "
        "the loop it replaced",
    )  # fmt: skip
    return parser


def relay_config(args: argparse.Namespace) -> RelayBenchConfig:
    topology = args.topology
    if topology is None:
        from lab.nat.netns import netns_supported

        topology = "netns" if netns_supported() is None else "loopback"
    base = RelayBenchConfig.quick() if args.quick else RelayBenchConfig()
    overrides: dict[str, object] = {"topology": topology, "pin": not args.no_pin}
    for name, value in (
        ("relays", args.relays),
        ("repeat", args.relay_repeat),
        ("duration", args.duration),
        ("search_duration", args.search_duration),
        ("search_steps", args.search_steps),
        ("sizes", tuple(int(s) for s in args.sizes) if args.sizes else None),
        ("threads", args.threads),
        ("alloc_clients", args.alloc_clients),
        ("hold_allocations", args.hold),
        ("datapath", args.datapath),
    ):
        if value is not None:
            overrides[name] = value
    return replace(base, **overrides)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    unknown = set(args.only) - set(PARTS)
    if unknown:
        print(f"--only: unknown part(s) {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    repeat = 1 if args.quick else args.repeat
    tables: dict[str, pd.DataFrame] = {}
    if "core" in args.only:
        from bench.core import run_core_benchmarks

        tables["core"] = run_core_benchmarks(repeat=repeat)
        _emit("core", tables["core"], out)
    if "lab" in args.only:
        from bench.lab import run_lab_benchmarks

        lab_table = run_lab_benchmarks(repeat=repeat)
        if lab_table is not None:
            tables["lab"] = lab_table
            _emit("lab", lab_table, out)
    if "agents" in args.only:
        from bench.agents import run_agent_benchmarks

        agents_table = run_agent_benchmarks(repeat=min(repeat, 3))
        if agents_table is not None:
            tables["agents"] = agents_table
            _emit("agents", agents_table, out)
    if "matrix" in args.only and not args.quick:
        from bench.lab import run_matrix_benchmark

        matrix_table = run_matrix_benchmark(out)
        if matrix_table is not None:
            tables["matrix"] = matrix_table
            _emit("matrix", matrix_table, out)
    if "relay" in args.only:
        config = relay_config(args)
        if RelayImpl.COTURN in config.relays and shutil.which("turnserver") is None:
            print("relay benchmark: coturn's turnserver not installed; ours only", file=sys.stderr)
            config = replace(
                config, relays=tuple(r for r in config.relays if r != RelayImpl.COTURN)
            )
        reason = relay_unavailable_reason(config)
        if reason and config.topology == "netns":
            print(f"relay benchmark: {reason}; using loopback", file=sys.stderr)
            config = replace(config, topology="loopback")
            reason = relay_unavailable_reason(config)
        if reason:
            print(f"relay benchmark skipped: {reason}", file=sys.stderr)
        else:
            table, trials = run_relay_benchmarks(config, log=_progress)
            trials.to_csv(out / "relay_trials.csv", index=False)
            _emit("relay", table, out, text=format_table(table))
    return 0


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _emit(name: str, table: pd.DataFrame, out: Path, text: str | None = None) -> None:
    path = out / f"{name}.csv"
    table.to_csv(path, index=False)
    print(text if text is not None else table.to_string(index=False))
    print(f"written: {path}\n", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
