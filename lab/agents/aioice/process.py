"""The aioice agent as a process (``python -m lab.agents.aioice``), on ``lab.agents.agentproc``.

    python -m lab.agents.aioice --peer a --controlling --room R --signaling HOST:PORT \\
        --cafile CA.pem [--stun HOST:PORT] [--turn-udp HOST:PORT] [--turn-tcp HOST:PORT] \\
        [--turn-tls HOST:PORT] --turn-secret S --policy all|relay --timeout 30 \\
        [--exchange 10] [--throughput-mbps X --throughput-seconds T] [--events FILE] \\
        [aioice only: --host-ip IP ... --gather-timeout S --nomination-wait S --ipv6 -v
         --signaling-plain]

Prints exactly one JSON line (``lab.agents.agent_result.AgentResult``) on stdout and exits
within ``--timeout`` seconds; logs go to stderr.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from lab.agents.agentproc import AgentProgram, run_agent
from lab.agents.aioice import IMPLEMENTATION
from lab.agents.aioice.agent import IMPL, Agent
from lab.agents.aioice.config import AgentConfig, build_parser, config_from_args


def _quiet(verbose: bool) -> None:
    logging.getLogger("aioice").setLevel(logging.INFO if verbose else logging.WARNING)


PROGRAM = AgentProgram[AgentConfig](
    impl=IMPL,
    parser=build_parser,
    config=config_from_args,
    inputs=lambda cfg: cfg.inputs,
    make_call=Agent,
    version=IMPLEMENTATION.version,
    quiet_loggers=_quiet,
)


def main(argv: Sequence[str] | None = None) -> int:
    return run_agent(PROGRAM, argv)
