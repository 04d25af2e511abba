"""coturn's turnutils_uclient and turnserver as outside parties in the interop tests: the
credentials both sides use, the summary parser, and the command lines."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from conftest import require_tool
from relayproc import LOOPBACK

USER, PASSWORD, REALM = "user", "pass", "natlab"
REST_SECRET = "natlab-rest-secret"
AUTH_SERVER_FLAGS = {
    "long-term": ("-a", "-u", f"{USER}:{PASSWORD}"),
    "rest": ("-a", "--use-auth-secret", f"--static-auth-secret={REST_SECRET}"),
}
AUTH_CLIENT_FLAGS = {
    "long-term": ("-u", USER, "-w", PASSWORD),
    "rest": ("-u", "alice", "-W", REST_SECRET),  # username becomes "<expiry ts>:alice"
}

SUMMARY_MSGS = re.compile(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")
SUMMARY_LOST = re.compile(r"Total lost packets (\d+) \([\d.]+%\), total send dropped (\d+)")


@dataclass(frozen=True)
class UclientSummary:
    sent: int
    received: int
    lost: int
    send_dropped: int


def parse_uclient(output: str) -> UclientSummary | None:
    msgs, lost = SUMMARY_MSGS.findall(output), SUMMARY_LOST.findall(output)
    if not msgs or not lost:
        return None
    (sent, received), (lost_n, dropped) = msgs[-1], lost[-1]
    return UclientSummary(int(sent), int(received), int(lost_n), int(dropped))


def run_uclient(
    port: int, base: Sequence[str], *flags: str, timeout: float
) -> tuple[UclientSummary | None, str]:
    """turnutils_uclient against 127.0.0.1:port: its summary (None if it printed none) and
    the command with its whole output, for assertion messages."""
    binary = require_tool("turnutils_uclient")
    argv = [binary, *base, *flags, "-p", str(port), LOOPBACK]
    result = subprocess.run(
        argv, capture_output=True, text=True, errors="replace", timeout=timeout, check=False
    )
    output = f"$ {' '.join(argv)}\n(exit {result.returncode})\n{result.stdout}{result.stderr}"
    return parse_uclient(result.stdout + result.stderr), output


def coturn_argv(port: int, tmp: Path, *flags: str) -> list[str]:
    """coturn's turnserver on 127.0.0.1:port, no DTLS, no CLI, logging to stdout."""
    binary = require_tool("turnserver")
    return [
        binary, "-L", LOOPBACK, "-E", LOOPBACK, "-p", str(port), "--no-cli", "--no-dtls",
        "--log-file", "stdout", "--simple-log", "--pidfile", str(tmp / "coturn.pid"),
        "--no-rfc5780", *flags,
    ]  # fmt: skip
