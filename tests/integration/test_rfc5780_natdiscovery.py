"""RFC 5780 behaviour discovery: coturn's turnutils_natdiscovery against our relay, with coturn's
turnserver as the control, across two lab namespaces and no NAT.

Topology (both namespaces made here, named nl-<runid>-<node> as lab/cleanup.py documents, and
always deleted): server namespace with 198.18.0.2/24 and 198.18.0.3/24 on one veth end, client
namespace with 198.18.0.10/24 on the other. The veth pair is created inside the server namespace,
so nothing touches the root namespace and there is no route outside 198.18.0.0/24.

With no NAT in between, natdiscovery must report endpoint-independent mapping and filtering
(its wording, observed with coturn 4.6.1: "NAT with Endpoint Independent Mapping!" and
"NAT with Endpoint Independent Filtering!"), and the CHANGE-REQUEST answer must come from the
other address and port.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_relay_server, require_tool
from relayproc import ROOT, ManagedProcess, managed_process

from lab.nat.netns import ifname, netns_name, new_run_id

pytestmark = [pytest.mark.lab, pytest.mark.interop]

PRIMARY, SECONDARY, CLIENT = "198.18.0.2", "198.18.0.3", "198.18.0.10"
PORT, ALT_PORT = 3478, 3479
COMMAND_TIMEOUT_S = 30
READY_TIMEOUT_S = 15.0
EIM = "NAT with Endpoint Independent Mapping!"
EIF = "NAT with Endpoint Independent Filtering!"

PROBE = """
import os, socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
tid = os.urandom(12)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
try:
    s.sendto(struct.pack("!HHI", 1, 0, 0x2112A442) + tid, (host, port))
    sys.exit(0 if s.recv(2048)[8:20] == tid else 1)
except OSError:
    sys.exit(1)
"""


def _ip(*args: str) -> None:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    """(server namespace, client namespace), joined by one veth pair; deleted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 `ip` not installed")
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10, check=False)
    if probe.returncode != 0:
        pytest.skip(f"`ip netns` not usable: {probe.stderr.decode(errors='replace').strip()}")
    run_id = new_run_id()
    server_ns, client_ns = netns_name(run_id, "srv"), netns_name(run_id, "cli")
    server_if, client_if = ifname(run_id, "s"), ifname(run_id, "c")
    created: list[str] = []
    try:
        for ns in (server_ns, client_ns):
            _ip("netns", "add", ns)
            created.append(ns)
        _ip("-n", server_ns, "link", "add", server_if, "type", "veth", "peer", "name", client_if,
            "netns", client_ns)  # fmt: skip
        for address in (PRIMARY, SECONDARY):
            _ip("-n", server_ns, "addr", "add", f"{address}/24", "dev", server_if)
        _ip("-n", client_ns, "addr", "add", f"{CLIENT}/24", "dev", client_if)
        for ns, dev in ((server_ns, server_if), (client_ns, client_if)):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", dev, "up")
        yield server_ns, client_ns
    finally:
        errors = []
        for ns in reversed(created):
            try:
                _ip("netns", "del", ns)
            except (RuntimeError, subprocess.TimeoutExpired) as err:
                errors.append(str(err))
        assert not errors, errors


def _stun_ready(client_ns: str, host: str, port: int) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        result = subprocess.run(
            ["ip", "netns", "exec", client_ns, sys.executable, "-c", PROBE, host, str(port)],
            capture_output=True, timeout=10, check=False,
        )  # fmt: skip
        if result.returncode == 0:
            return True
        time.sleep(0.2)
    return False


@contextlib.contextmanager
def discovery_server(
    kind: str, server_ns: str, client_ns: str, tmp: Path
) -> Iterator[ManagedProcess]:
    """Our relay or coturn's turnserver in server_ns on both addresses, RFC 5780 on."""
    listen = ("-L", PRIMARY, "-L", SECONDARY, "-p", str(PORT))
    if kind in ("natlab", "natlab-no-rfc5780"):
        require_relay_server()
        discovery = ("--rfc5780",) if kind == "natlab" else ()
        server = [sys.executable, "-m", "relay", "-n", *listen, *discovery, "--no-tcp",
                  "--no-tls"]  # fmt: skip
    else:
        server = [
            require_tool("turnserver"), "-n", *listen, "--no-tls", "--no-dtls", "--no-cli",
            "--log-file", "stdout", "--simple-log", "--pidfile", str(tmp / "coturn.pid"),
        ]  # fmt: skip
    argv = ["ip", "netns", "exec", server_ns, *server]  # ip execs the server: same PID
    ready = lambda p: _stun_ready(client_ns, PRIMARY, PORT)  # noqa: E731
    with managed_process(argv, ready=ready, cwd=ROOT) as proc:
        yield proc


def run_natdiscovery(client_ns: str) -> str:
    binary = require_tool("turnutils_natdiscovery")
    argv = ["ip", "netns", "exec", client_ns, binary, "-m", "-f", "-p", str(PORT), PRIMARY]
    result = subprocess.run(
        argv, capture_output=True, text=True, errors="replace", timeout=COMMAND_TIMEOUT_S,
        check=False,
    )  # fmt: skip
    return f"$ {' '.join(argv)}\n(exit {result.returncode})\n{result.stdout}{result.stderr}"


ORIGIN = re.compile(r"RFC 5780 response (\d+)\n(.*?)(?=\n=+\n)", re.S)


def responses(output: str) -> dict[int, str]:
    return {int(n): body for n, body in ORIGIN.findall(output)}


@pytest.mark.parametrize("kind", ["coturn", "natlab"])
def test_rfc5780_natdiscovery_no_nat_eim_eif(
    namespaces: tuple[str, str], tmp_path: Path, kind: str
) -> None:
    server_ns, client_ns = namespaces
    require_tool("turnutils_natdiscovery")
    with discovery_server(kind, server_ns, client_ns, tmp_path) as server:
        output = run_natdiscovery(client_ns)
        alive = server.proc.poll() is None
    context = f"{output}\n--- {kind} server log (last lines) ---\n" + "\n".join(
        list(server.lines)[-40:]
    )
    assert alive, f"{kind} died\n{context}"
    assert "(exit 0)" in output, context
    assert EIM in output and EIF in output, context
    assert "error" not in output.lower(), context
    found = responses(output)
    assert set(found) == {1, 2, 3, 4}, context
    # 1: plain Binding to the primary address; OTHER-ADDRESS names the second one (RFC 5780 §7.3)
    assert f"Response origin: : {PRIMARY}:{PORT}" in found[1], context
    assert f"Other addr: : {SECONDARY}:{ALT_PORT}" in found[1], context
    # 2: mapping test II, to the other address and the primary port
    assert f"Response origin: : {SECONDARY}:{PORT}" in found[2], context
    # 4: filtering test II, CHANGE-REQUEST change IP and port (RFC 5780 §4.4)
    assert f"Response origin: : {SECONDARY}:{ALT_PORT}" in found[4], context
    # no NAT: every response maps the client to its own address
    for body in found.values():
        assert f"UDP reflexive addr: {CLIENT}:" in body, context
        assert "No ALG: Mapped == XOR-Mapped" in body, context


def test_rfc5780_natdiscovery_without_rfc5780_no_verdict(
    namespaces: tuple[str, str], tmp_path: Path
) -> None:
    # control for the test above: without --rfc5780 there is no OTHER-ADDRESS and no verdict
    server_ns, client_ns = namespaces
    require_tool("turnutils_natdiscovery")
    with discovery_server("natlab-no-rfc5780", server_ns, client_ns, tmp_path) as server:
        output = run_natdiscovery(client_ns)
    context = f"{output}\n--- server log ---\n" + "\n".join(list(server.lines)[-40:])
    assert EIM not in output and EIF not in output, context
    assert "Other addr" not in output, context
    assert f"UDP reflexive addr: {CLIENT}:" in output, context
