"""``python -m lab.agents.chromium|firefox``: a browser agent as a process
(``lab.agents.agentproc``), the driver being ``call.Driver``."""

from __future__ import annotations

from collections.abc import Sequence

from lab.agents.agentproc import AgentProgram, run_agent
from lab.agents.browser.call import Driver
from lab.agents.browser.config import DriverConfig, build_parser, config_from_args
from lab.agents.browser.kind import BrowserKind


def program(kind: BrowserKind) -> AgentProgram[DriverConfig]:
    return AgentProgram[DriverConfig](
        impl=kind.name,
        parser=lambda: build_parser(kind),
        config=config_from_args,
        inputs=lambda cfg: cfg.inputs,
        make_call=lambda cfg, result, t0, events: Driver(cfg, kind, result, t0, events),
        version=kind.version,
        missing=kind.missing,
    )


def main(argv: Sequence[str] | None, kind: BrowserKind) -> int:
    return run_agent(program(kind), argv)
