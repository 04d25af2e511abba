"""A browser agent's command line: the contract's flags (``lab.agents.contract``) plus the
flags only the browser drivers take."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from lab.agents.browser.kind import BrowserKind
from lab.agents.contract import AgentInputs, add_arguments, inputs_from_args

GATHER_TIMEOUT_S = 5.0
MAX_GATHER_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DriverConfig:
    inputs: AgentInputs
    gather_timeout: float = GATHER_TIMEOUT_S
    keep_profile: bool = False
    verbose: bool = False


def build_parser(kind: BrowserKind) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m lab.agents.{kind.name}",
        description=f"natlab ICE agent ({kind.name}): prints one JSON result line on stdout",
    )
    add_arguments(p)
    extra = p.add_argument_group(f"{kind.name} only")
    extra.add_argument(
        "--gather-timeout",
        type=float,
        default=GATHER_TIMEOUT_S,
        metavar="S",
        help="longest wait for ICE gathering to complete",
    )
    extra.add_argument("--keep-profile", action="store_true", help="keep the browser's profile")
    extra.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> DriverConfig:
    """Validate the command line; ValueError with the reason otherwise."""
    inputs = inputs_from_args(args)
    if not inputs.cafile:
        raise ValueError("--cafile is needed for TLS signaling")
    if not 0 < args.gather_timeout <= MAX_GATHER_TIMEOUT_S:
        raise ValueError(f"--gather-timeout must be within (0, {MAX_GATHER_TIMEOUT_S:g}]")
    return DriverConfig(
        inputs=inputs,
        gather_timeout=args.gather_timeout,
        keep_profile=args.keep_profile,
        verbose=args.verbose,
    )
