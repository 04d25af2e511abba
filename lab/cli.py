"""The ``natlab`` command (also ``python -m lab``).

natlab matrix [--relay inrepo|coturn|both] [--nat N ...] [--firewall F ...] [--trials N]
              [--seed S] [--shard i/n] [--jobs N] [--out DIR]
natlab run KEY=VALUE ...            one cell, e.g. nat_a=symmetric nat_b=symmetric
natlab nat-check [--nat N ...]      declared vs observed NAT behaviour
natlab report RESULTS... [--html FILE]
natlab relay -c turnserver.conf     our TURN server (same flags as python -m relay)
natlab clean                        remove what killed runs left behind
natlab doctor                       what this machine has and lacks
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reports.vocabulary import AGENT_IMPLS, RELAY_IMPLS, SKIPPED, AgentImpl, RelayImpl

if TYPE_CHECKING:
    from reports.schema import ResultRow

DEFAULT_OUT = Path("reports/out")


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


def _need_lab() -> None:
    from lab.session import lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason:
        raise UsageError(f"the lab cannot run here: {reason}")


def _check_names(kind: str, names: list[str], valid: Sequence[str]) -> None:
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise UsageError(f"unknown {kind} {', '.join(unknown)}; valid: {', '.join(valid)}")


# ---------------------------------------------------------------------- matrix


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard wants i/n (e.g. 1/4), got {text!r}") from None
    if not 1 <= i <= n:
        raise UsageError(f"--shard {text}: need 1 <= i <= n")
    return i, n


class ProgressLine:
    """A live progress bar on a terminal; one line per finished cell otherwise."""

    def __init__(self, stream: Any = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()

    def __call__(self, progress: Any, row: ResultRow | None) -> None:
        eta = progress.eta_s()
        eta_text = f"ETA {int(eta // 60)}:{int(eta % 60):02d}" if eta is not None else "ETA --:--"
        width = 30
        filled = int(width * progress.done / max(progress.total, 1))
        bar = "#" * filled + "." * (width - filled)
        status = (
            f"[{bar}] {progress.done}/{progress.total} done, {progress.running} running, "
            f"{progress.failed} unexpected, {eta_text}"
        )
        if self.tty:
            self.stream.write("\r\033[K" + status)
            if row is not None and row.outcome != row.expected:
                self.stream.write(f"\r\033[K  unexpected: {_row_line(row)}\n{status}")
            self.stream.flush()
        elif row is not None:
            mark = "ok" if row.outcome == row.expected else "UNEXPECTED"
            self.stream.write(f"{progress.done}/{progress.total} {mark} {_row_line(row)}\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def _row_line(row: ResultRow) -> str:
    fw = ""
    if (row.firewall_a, row.firewall_b) != ("open", "open"):
        fw = f" fw {row.firewall_a}/{row.firewall_b}"
    text = (
        f"{row.relay_impl} {row.scenario} {row.nat_a} x {row.nat_b}{fw}: "
        f"expected {row.expected}, observed {row.outcome}"
    )
    return text + (f" ({row.error})" if row.error else "")


def _agent_pairs(text: str | None) -> list[tuple[str, str]]:
    """``chromium,aioice`` -> every ordered pair of them (both sides of each, and each with
    itself); names are checked, and a missing implementation is named before anything runs."""
    from lab.agents.registry import skip_reason

    names = list(dict.fromkeys((text or AgentImpl.AIOICE).split(",")))
    _check_names("agent implementation", names, list(AGENT_IMPLS))
    reason = skip_reason(tuple(names))
    if reason:
        print(f"natlab matrix: cells with these agents are skipped: {reason}", file=sys.stderr)
    return [(a, b) for a in names for b in names]


def _cmd_matrix(args: argparse.Namespace) -> int:
    from lab.matrix import MATRIX_NATS, MatrixRunner, default_matrix
    from lab.nat.behavior import PRESETS
    from lab.nat.firewall import POLICIES as FIREWALL_POLICIES

    relays = list(RELAY_IMPLS) if args.relay == "both" else [args.relay]
    nats = args.nat or list(MATRIX_NATS)
    _check_names("NAT preset", nats, list(PRESETS))
    firewalls = args.firewall or ["open"]
    _check_names("firewall policy", firewalls, list(FIREWALL_POLICIES))
    if RelayImpl.COTURN in relays and shutil.which("turnserver") is None:
        raise UsageError("coturn is not installed (apt-get install coturn), or use --relay inrepo")
    if args.trials < 1:
        raise UsageError("--trials must be at least 1")
    shard = _parse_shard(args.shard)
    agent_pairs = _agent_pairs(args.agents)
    _need_lab()
    run_id = args.run_id or (
        dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(2)
    )
    cells = []
    for firewall in firewalls:
        for cell in default_matrix(
            relays, nats, args.modes.split(","), args.trials, args.seed, run_id, agent_pairs
        ):
            cells.append(replace(cell, intent=replace(cell.intent, firewall_a=firewall)))
    if shard:
        i, n = shard
        cells = cells[i - 1 :: n]
    out = Path(args.out) / run_id
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"natlab matrix: {len(cells)} cells, {args.jobs} at a time, results in {out}",
        file=sys.stderr,
    )
    runner = MatrixRunner(out / "cells", jobs=args.jobs)
    progress = ProgressLine()
    interrupted = False

    def on_sigint(*_: object) -> None:
        nonlocal interrupted
        interrupted = True
        print("\nstopping: tearing down running cells, keeping completed rows", file=sys.stderr)
        runner.stop()

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        rows = runner.run(cells, progress)
    finally:
        signal.signal(signal.SIGINT, old)
        progress.close()
    return _write_outputs(rows, out, run_id, interrupted)


def _write_outputs(rows: list[ResultRow], out: Path, run_id: str, interrupted: bool) -> int:
    from reports.schema import to_frame, write_results

    frame = to_frame(rows)
    suffix = f"-shard{os.environ.get('NATLAB_SHARD', '')}" if os.environ.get("NATLAB_SHARD") else ""
    parquet, csv = write_results(frame, str(out / f"results{suffix}"))
    print(f"results: {parquet}\n         {csv}")
    html = _render_report(frame, out / "report.html", f"natlab matrix {run_id}")
    summary = _markdown(frame)
    if summary:
        print(summary)
    if html:
        print(f"report: {html.resolve()}")
    skipped = frame["error"].fillna("").str.startswith(f"{SKIPPED}:")
    differs = frame["outcome"].fillna("NA") != frame["expected"].fillna("NA")
    unexpected = int((differs & ~skipped).sum())
    if skipped.any():
        print(f"{int(skipped.sum())} cells skipped (implementation not installed here)")
    if interrupted:
        return 130
    return 0 if unexpected == 0 else 1


def _render_report(frame: Any, path: Path, title: str) -> Path | None:
    try:
        from reports.environment import collect_environment
        from reports.html import write_html
    except ImportError:
        return None
    write_html(frame, path, title=title, environment=collect_environment(frame))
    return path


def _markdown(frame: Any) -> str:
    try:
        from reports.aggregate import markdown_summary
    except ImportError:
        return ""
    return str(markdown_summary(frame))


# ---------------------------------------------------------------------- run


def _cmd_run(args: argparse.Namespace) -> int:
    from lab.run import SPEC_KEYS, spec_from_dict

    names = set(SPEC_KEYS)
    data: dict[str, Any] = {}
    for item in args.spec:
        key, sep, value = item.partition("=")
        key = key.replace("-", "_")
        if not sep or key not in names:
            raise UsageError(f"cell spec wants KEY=VALUE with KEY in: {', '.join(sorted(names))}")
        data[key] = (
            json.loads(value)
            if value[:1] in "[{0123456789" or value in ("true", "false", "null")
            else value
        )
    try:
        spec = spec_from_dict(data)
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from None
    _need_lab()
    out = Path(args.out) / "run"
    argv = [sys.executable, "-m", "lab.run", "--spec", json.dumps(data), "--workdir", str(out)]
    print(f"natlab run: {spec.name}", file=sys.stderr)
    proc = subprocess.run(argv, capture_output=True, text=True)
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        print(proc.stderr[-2000:], file=sys.stderr)
        return 1
    print(json.dumps(result["row"], indent=2))
    if result.get("artifacts"):
        print(f"artifacts: {result['artifacts']}", file=sys.stderr)
    row = result["row"]
    return 0 if row["outcome"] == row["expected"] else 1


# ---------------------------------------------------------------------- nat-check


def _cmd_nat_check(args: argparse.Namespace) -> int:
    from lab.nat.behavior import PRESETS
    from lab.natcheck import CLASSIFIERS, check_nat, format_table
    from lab.session import LabError

    names = args.nat or [n for n in PRESETS if n != "open"]
    _check_names("NAT preset", names, list(PRESETS))
    _need_lab()
    classifiers = tuple(args.classifier or CLASSIFIERS)
    rows = []
    for name in names:
        try:
            rows += check_nat(name, classifiers)
        except LabError as err:
            print(f"lab error for {name}: {err}\n{err.evidence}", file=sys.stderr)
            return 1
        if not args.json:
            print(f"checked {name}", file=sys.stderr)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        print(format_table(rows))
    return 0 if all(r.agrees for r in rows) else 1


# ---------------------------------------------------------------------- report


def _cmd_report(args: argparse.Namespace) -> int:
    from reports.schema import SchemaError, read_results

    try:
        frames = [read_results([p]) for p in args.results]
    except SchemaError as err:
        raise UsageError(str(err)) from None
    except OSError as err:
        raise UsageError(f"cannot read results: {err}") from None
    html_path = Path(args.html) if args.html else None
    if len(frames) == 2 and args.compare:
        try:
            from reports.compare import compare, render_compare_html
        except ImportError:
            raise UsageError("the comparison report is not available") from None
        diff = compare(frames[0], frames[1])
        print(diff.to_string(index=False))
        if html_path:
            html_path.write_text(
                render_compare_html(frames[0], frames[1], labels=tuple(args.results))
            )
            print(f"report: {html_path.resolve()}")
        return 0
    import pandas as pd

    frame = pd.concat(frames, ignore_index=True)
    summary = _markdown(frame)
    print(summary or frame.to_string(index=False))
    if html_path:
        if _render_report(frame, html_path, "natlab report") is None:
            raise UsageError("the HTML report is not available")
        print(f"report: {html_path.resolve()}")
    return 0


# ---------------------------------------------------------------------- relay, clean, doctor


def _cmd_relay(args: argparse.Namespace) -> int:
    from relay.server.cli import main as relay_main

    return int(relay_main(args.relay_args))


def _cmd_gather(args: argparse.Namespace) -> int:
    from lab.agents.browser.gather import main as gather_main

    return int(gather_main(args.gather_args))


def _cmd_clean(args: argparse.Namespace) -> int:
    from lab.cleanup import main as cleanup_main

    return cleanup_main(["--dry-run"] if args.dry_run else [])


def _cmd_doctor(args: argparse.Namespace) -> int:
    from lab.doctor import checks

    worst = 0
    for check in checks():
        mark = "ok " if check.ok else "-- "
        line = f"{mark}{check.name:<12} {check.detail}"
        if not check.ok and check.fix:
            line += f"  (install: {check.fix})"
        print(line)
        if not check.ok and check.required:
            worst = 1
    return worst


# ---------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="natlab",
        description="NAT traversal conformance lab: NAT x NAT matrices through real namespaces, "
        "our TURN relay and coturn, results as tables and an HTML report.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("matrix", help="run the NAT x NAT matrix (the main job)")
    p.add_argument("--relay", choices=[*RELAY_IMPLS, "both"], default=RelayImpl.INREPO.value)
    p.add_argument("--nat", action="append", metavar="PRESET", help="NAT preset (repeatable)")
    p.add_argument(
        "--firewall",
        action="append",
        metavar="POLICY",
        help="firewall policy in front of peer A (repeatable; default open)",
    )
    p.add_argument("--modes", default="stun,turn", help="stun, turn or stun,turn")
    p.add_argument(
        "--agents",
        metavar="IMPL,...",
        help=f"ICE implementations, every ordered pair runs ({', '.join(AGENT_IMPLS)}; "
        "default aioice)",
    )
    p.add_argument("--trials", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard", metavar="i/n", help="run every n-th cell starting at i")
    p.add_argument("--jobs", type=int, default=3, help="cells at a time")
    p.add_argument("--run-id", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(DEFAULT_OUT / "matrix"))
    p.set_defaults(func=_cmd_matrix)

    p = sub.add_parser("run", help="run one cell: natlab run nat_a=symmetric nat_b=full-cone")
    p.add_argument("spec", nargs="+", metavar="KEY=VALUE")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("nat-check", help="declared vs observed NAT behaviour of every preset")
    p.add_argument("--nat", action="append", metavar="PRESET")
    p.add_argument("--classifier", action="append", choices=["natprobe", "natdiscovery"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_nat_check)

    p = sub.add_parser("report", help="summarise result tables; --html writes the report")
    p.add_argument("results", nargs="+", metavar="RESULTS")
    p.add_argument("--html", metavar="FILE")
    p.add_argument("--compare", action="store_true", help="two tables: compare cell by cell")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("relay", help="run our TURN server (python -m relay flags)", add_help=False)
    p.add_argument("relay_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_relay)

    p = sub.add_parser(
        "gather",
        help="a headless browser gathers candidates from ICE servers (the Trickle-ICE test)",
        add_help=False,
    )
    p.add_argument("gather_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_gather)

    p = sub.add_parser("clean", help="remove what killed lab runs left behind")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=_cmd_clean)

    p = sub.add_parser("doctor", help="check what this machine has for the lab")
    p.set_defaults(func=_cmd_doctor)
    return parser


# subcommands whose words all go to a parser of their own -> the attribute that holds them
PASSTHROUGH = {"relay": "relay_args", "gather": "gather_args"}


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] and words[0] in PASSTHROUGH:
        # argparse.REMAINDER takes nothing when the first word left is an option
        # ("unrecognized arguments: -c"): the subcommand's own parser reads them all
        args = build_parser().parse_args(words[:1])
        setattr(args, PASSTHROUGH[words[0]], words[1:])
    else:
        args = build_parser().parse_args(words)
    started = time.monotonic()
    try:
        result: int = args.func(args)
    except UsageError as err:
        print(f"natlab {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nnatlab {args.command}: interrupted", file=sys.stderr)
        return 130
    if args.command == "matrix":
        print(f"elapsed {time.monotonic() - started:.0f} s", file=sys.stderr)
    return result
