"""Link impairments: rate (tc tbf), loss (nftables numgen), delay/jitter (tc netem, if present).

Loss is an nftables rule rather than netem so that it works on kernels without sch_netem;
delay and jitter have no such substitute, so asking for them there raises
`ImpairmentUnavailable` instead of silently running an unimpaired cell.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
from dataclasses import dataclass

from lab.nat.netns import namespaces, ns_run
from lab.nat.nftables import check_ifname, check_table, preamble

DEFAULT_LOSS_TABLE = "natlab_loss"
LOSS_SCALE = 1000  # loss resolution: 0.1 %


class ImpairmentUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Impairment:
    rate_mbit: float | None = None
    loss_pct: float = 0
    delay_ms: float = 0
    jitter_ms: float = 0

    def __post_init__(self) -> None:
        if self.rate_mbit is not None and not (
            math.isfinite(self.rate_mbit) and self.rate_mbit > 0
        ):
            raise ValueError(f"rate_mbit must be > 0 or None, got {self.rate_mbit!r}")
        if not 0 <= self.loss_pct <= 100:
            raise ValueError(f"loss_pct must be within 0..100, got {self.loss_pct!r}")
        for name in ("delay_ms", "jitter_ms"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be >= 0, got {v!r}")
        if self.jitter_ms and not self.delay_ms:
            raise ValueError("jitter_ms needs a delay_ms (netem varies the delay around it)")

    @property
    def needs_netem(self) -> bool:
        return bool(self.delay_ms or self.jitter_ms)


def _num(v: float) -> str:
    return f"{v:g}"


def tc_commands(dev: str, impairment: Impairment) -> list[list[str]]:
    """tc argv lists for `dev` (run them inside its namespace); loss is `render_loss`'s job."""
    check_ifname("dev", dev)
    cmds: list[list[str]] = [["tc", "qdisc", "del", "dev", dev, "root"]]  # may fail: no qdisc
    if impairment.needs_netem:
        netem = [
            "tc",
            "qdisc",
            "add",
            "dev",
            dev,
            "root",
            "handle",
            "1:",
            "netem",
            "delay",
            f"{_num(impairment.delay_ms)}ms",
        ]
        if impairment.jitter_ms:
            netem.append(f"{_num(impairment.jitter_ms)}ms")
        if impairment.rate_mbit is not None:
            netem += ["rate", f"{_num(impairment.rate_mbit)}mbit"]
        cmds.append(netem)
    elif impairment.rate_mbit is not None:
        rate_bps = impairment.rate_mbit * 1e6
        # burst >= rate/HZ (250) and >= one MTU, else tbf cannot reach its rate
        burst = max(1600, int(rate_bps / 8 / 250))
        cmds.append(
            [
                "tc",
                "qdisc",
                "add",
                "dev",
                dev,
                "root",
                "handle",
                "1:",
                "tbf",
                "rate",
                f"{_num(impairment.rate_mbit)}mbit",
                "burst",
                str(burst),
                "latency",
                "50ms",
            ]
        )
    return cmds


def render_loss(dev: str, loss_pct: float, *, table: str = DEFAULT_LOSS_TABLE) -> str:
    """An idempotent `nft -f` script dropping `loss_pct` % of packets leaving `dev`."""
    check_ifname("dev", dev)
    check_table(table)
    if not 0 <= loss_pct <= 100:
        raise ValueError(f"loss_pct must be within 0..100, got {loss_pct!r}")
    n = round(loss_pct * LOSS_SCALE / 100)
    sample = "" if n >= LOSS_SCALE else f"numgen random mod {LOSS_SCALE} < {n} "
    rule = (
        f'\t\toifname "{dev}" {sample}counter drop comment "loss {_num(loss_pct)}%"\n' if n else ""
    )
    return (
        preamble(table, "inet") + f"table inet {table} {{\n\tchain egress {{\n"
        # after NAT (srcnat 100) so a dropped first packet leaves the mapping already chosen
        "\t\ttype filter hook postrouting priority 300; policy accept;\n"
        f"{rule}\t}}\n}}\n"
    )


@functools.cache
def netem_available() -> bool:
    """Can `tc ... netem` be used?  Probed once in a throwaway namespace, then cached."""
    if os.geteuid() != 0 or shutil.which("tc") is None or shutil.which("ip") is None:
        return False
    try:
        with namespaces("netem") as ns:
            r = ns_run(
                ns["netem"],
                ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                check=False,
            )
            return r.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def require_delay_support(impairment: Impairment) -> None:
    if impairment.needs_netem and not netem_available():
        raise ImpairmentUnavailable(
            "sch_netem missing: delay/jitter cannot be emulated on this kernel"
        )
