"""The ``natlab`` command (also ``python -m lab``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _cmd_nat_check(args: argparse.Namespace) -> int:
    from lab.nat.behavior import PRESETS
    from lab.natcheck import CLASSIFIERS, check_nat, format_table
    from lab.session import LabError, lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason:
        print(f"natlab nat-check: {reason}", file=sys.stderr)
        return 2
    names = args.nat or [n for n in PRESETS if n != "open"]
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        print(f"unknown NAT preset(s) {unknown}; valid: {', '.join(PRESETS)}", file=sys.stderr)
        return 2
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


def _cmd_clean(args: argparse.Namespace) -> int:
    from lab.cleanup import main as cleanup_main

    return cleanup_main(["--dry-run"] if args.dry_run else [])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="natlab", description="NAT traversal conformance lab (see README.md)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("nat-check", help="declared vs observed NAT behaviour of every preset")
    p.add_argument("--nat", action="append", help="preset to check (repeatable; default all)")
    p.add_argument("--classifier", action="append", choices=["natprobe", "natdiscovery"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_nat_check)
    p = sub.add_parser("clean", help="remove what killed lab runs left behind")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=_cmd_clean)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
