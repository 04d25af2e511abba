"""natprobe against natlab's relay on loopback (no NAT, no root): 127.0.0.1 and 127.0.0.2."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from conftest import StartRelay, require_relay_server
from relayproc import ROOT

from lab.agents.natclass import (
    ENDPOINT_INDEPENDENT,
    FILTERING_II,
    FILTERING_III,
    HAIRPIN,
    TEST_I,
    ProbeResult,
    transaction_timeout,
)
from lab.agents.natprobe import main, probe

PRIMARY_IP, OTHER_IP = "127.0.0.1", "127.0.0.2"
BOUND_S = transaction_timeout() + 1.0  # one unanswered test plus scheduling slack


def udp_ports_free(port: int) -> bool:
    """port and port + 1 free for UDP on both loopback addresses right now."""
    with contextlib.ExitStack() as stack:
        for ip in (PRIMARY_IP, OTHER_IP):
            for p in (port, port + 1):
                sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                try:
                    sock.bind((ip, p))
                except OSError:
                    return False
    return True


@pytest.fixture
def rfc5780_relay(start_relay: StartRelay) -> tuple[str, int]:
    """An in-process relay on 127.0.0.1/127.0.0.2 x P/P+1 with RFC 5780 on; its primary address."""
    rng = random.Random()
    last: Exception | None = None
    for _ in range(20):
        port = rng.randrange(20000, 32000)
        if not udp_ports_free(port):
            continue
        try:
            _, primary = start_relay(
                listening_ips=(PRIMARY_IP, OTHER_IP),
                listening_port=port,
                rfc5780=True,
                no_tcp=True,
                no_tls=True,
            )
        except OSError as err:  # lost a race for the port: try another
            last = err
            continue
        assert primary == (PRIMARY_IP, port)
        return primary
    raise RuntimeError(f"no free UDP port pair on {PRIMARY_IP} and {OTHER_IP}: {last}")


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A bound UDP socket that never answers (so no ICMP port unreachable either)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((PRIMARY_IP, 0))
        yield sock.getsockname()


def test_no_nat_is_endpoint_independent(rfc5780_relay: tuple[str, int]) -> None:
    result = asyncio.run(probe(rfc5780_relay, hairpin=True))
    assert result.status == "ok", result.errors
    assert result.exit_code == 0 and result.classified
    assert result.nat_present is False
    assert result.mapping == ENDPOINT_INDEPENDENT
    assert result.filtering == ENDPOINT_INDEPENDENT
    assert result.port_preserved is True
    assert result.hairpin is True
    assert result.errors == ()
    host, port = rfc5780_relay
    assert result.server == rfc5780_relay
    assert result.other_address == (OTHER_IP, port + 1)
    assert result.local is not None and result.local[0] == PRIMARY_IP
    assert result.mapped[TEST_I] == result.local
    # the changed answers really came from the other addresses (verified, not trusted)
    f2, f3 = result.step(FILTERING_II), result.step(FILTERING_III)
    assert f2 is not None and f2.answered and f2.source == (OTHER_IP, port + 1)
    assert f3 is not None and f3.answered and f3.source == (host, port + 1)
    assert [s.name for s in result.steps] == [
        TEST_I,
        FILTERING_II,
        FILTERING_III,
        "hairpin-binding",
        HAIRPIN,
    ]
    assert ProbeResult.from_json(result.to_json()) == result


def test_explicit_local_address(rfc5780_relay: tuple[str, int]) -> None:
    result = asyncio.run(probe(rfc5780_relay, local=(PRIMARY_IP, 0), rto=0.1, tries=3))
    assert result.status == "ok", result.errors
    assert result.nat_present is False and result.local == result.mapped[TEST_I]


def test_server_without_rfc5780(start_relay: StartRelay) -> None:
    _, primary = start_relay(no_tcp=True, no_tls=True)  # one address, rfc5780 off
    started = time.monotonic()
    result = asyncio.run(probe(primary))
    assert time.monotonic() - started < 1.0  # decided by the first answer, no waiting
    assert result.status == "no-rfc5780"
    assert result.exit_code == 2 and not result.classified
    assert result.mapping is None and result.filtering is None
    assert result.nat_present is False  # test I still tells this much
    assert "does not support RFC 5780" in result.errors[0]
    assert "OTHER-ADDRESS" in result.errors[0]


def test_cli_without_rfc5780_exits_2(
    start_relay: StartRelay, capsys: pytest.CaptureFixture[str]
) -> None:
    _, (host, port) = start_relay(no_tcp=True, no_tls=True)
    assert main([f"{host}:{port}"]) == 2
    out, err = capsys.readouterr()
    assert out.startswith("no RFC 5780 at server")
    assert "does not support RFC 5780" in err


def test_silent_server_times_out_in_bounded_time(silent_server: tuple[str, int]) -> None:
    started = time.monotonic()
    result = asyncio.run(probe(silent_server))
    elapsed = time.monotonic() - started
    assert result.status == "timeout" and result.exit_code == 3
    assert transaction_timeout() - 0.05 <= elapsed < BOUND_S
    assert elapsed < 2.5
    step = result.step(TEST_I)
    assert step is not None and not step.answered and step.sends == 4
    assert "no answer" in result.errors[0]


def test_cli_silent_server_exits_3(
    silent_server: tuple[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    host, port = silent_server
    assert main([f"{host}:{port}", "--json", "--rto", "0.05", "--tries", "2"]) == 3
    d = json.loads(capsys.readouterr().out)
    assert d["status"] == "timeout" and d["mapping"] is None


def test_cli_usage_error_is_not_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["127.0.0.1:notaport"])
    assert info.value.code == 64


def test_cli_subprocess_json(rfc5780_relay: tuple[str, int]) -> None:
    require_relay_server()
    host, port = rfc5780_relay
    proc = subprocess.run(
        [sys.executable, "-m", "lab.agents.natprobe", f"{host}:{port}", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    d = json.loads(lines[0])
    assert d["status"] == "ok"
    assert d["nat_present"] is False
    assert d["mapping"] == d["filtering"] == "endpoint-independent"
    assert d["port_preserved"] is True
    assert d["mapped"]["I"] == d["local"]
    assert ProbeResult.from_json(lines[0]).classified
