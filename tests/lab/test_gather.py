"""``natlab gather`` for real: the seed's Trickle-ICE test with a headless browser in a lab
namespace, against our relay.

    cli 198.18.9.2 (default route: the relay) -- rly 198.18.0.2 (our relay: 3478 UDP/TCP, 443 TLS)

Browsers gather only on non-loopback interfaces, so the command runs inside ``cli``, with
``turn.lab.test`` in an /etc/hosts of its own (``lab.agents.launch``); the relay has the lab CA's
certificate, which ``--cafile`` makes the browser trust. The command is ``python -m lab gather``
as a user types it, so its JSON, exit status and the processes it leaves behind are what is
checked. Chromium gathers TURN over TCP and TLS from two sockets (its IPv4 and IPv6 "any"
networks both reach the IPv4 relay), so a URL may give more than one relay candidate: each must
have come over that URL's transport.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab.agents.browser.kind import BrowserKind
from lab.agents.chromium.browser import CHROMIUM
from lab.agents.firefox.browser import FIREFOX
from lab.agents.launch import hosts_file, with_hosts
from lab.certs import LabCerts, lab_certs
from lab.nat.netns import add_veth, apply_sysctls, ifname, namespaces, ns_run
from lab.topologies.addressing import RELAY_IPS, RELAY_NAME

pytestmark = [pytest.mark.lab, pytest.mark.browser, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
RELAY_IP = RELAY_IPS[0]
CLIENT_IP = "198.18.9.2"
SECRET = "natlab-gather-secret"
RELAY_READY_S = 15.0
GATHER_TIMEOUT_S = 8  # the command's --timeout
RUN_LIMIT_S = 60.0  # the whole command, browser start included
# The browser's PID namespace dies with the command, but the kernel reaps the last of it a
# moment later (measured: Firefox's crashhelper, ~50 ms after the command's exit)
GONE_WITHIN_S = 2.0
# URL -> the relay protocol its relay candidates must have come over
URLS = {
    f"turn:{RELAY_NAME}:3478?transport=udp": "udp",
    f"turn:{RELAY_NAME}:3478?transport=tcp": "tcp",
    f"turns:{RELAY_NAME}:443?transport=tcp": "tls",
}
BROWSERS = [
    pytest.param(CHROMIUM, id="chromium"),
    pytest.param(FIREFOX, id="firefox"),
]


@dataclass(frozen=True)
class GatherLab:
    client_ns: str
    hosts: Path
    certs: LabCerts
    relay_log: Path


@dataclass(frozen=True)
class Gathered:
    status: int
    data: dict[str, Any]
    stderr: str
    left: list[str]  # PIDs still in the client namespace after the command ended
    workdir: Path

    def server(self, url: str) -> dict[str, Any]:
        found = [s for s in self.data.get("servers", []) if s["url"] == url]
        assert len(found) == 1, f"{url} not in the output\n{self.explain()}"
        server: dict[str, Any] = found[0]
        return server

    def explain(self) -> str:
        log = self.workdir / "browser.log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no browser log)"
        return (
            f"exit {self.status}\n{json.dumps(self.data, indent=1)}\n--- stderr\n"
            f"{self.stderr[-3000:]}\n--- browser log\n{tail}"
        )


def _wait_ready(relay: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + RELAY_READY_S
    while time.monotonic() < deadline and relay.poll() is None:
        if "ready:" in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the relay did not come up:\n{log.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatherLab]:
    base = tmp_path_factory.mktemp("gather")
    certs = lab_certs(base / "certs")
    hosts = hosts_file(base / "hosts", {RELAY_NAME: RELAY_IP})
    relay_log = base / "relay.log"
    with namespaces("rly", "cli") as ns:
        run_id = ns["rly"].split("-")[1]
        relay_if, client_if = ifname(run_id, "r0"), ifname(run_id, "c0")
        add_veth(ns["rly"], relay_if, ns["cli"], client_if)
        ns_run(ns["rly"], ["ip", "addr", "add", f"{RELAY_IP}/15", "dev", relay_if])
        ns_run(ns["cli"], ["ip", "addr", "add", f"{CLIENT_IP}/15", "dev", client_if])
        # Firefox finds its address through the default route; it ends at the relay, inside
        # the lab (the relay namespace forwards nothing)
        ns_run(ns["cli"], ["ip", "route", "add", "default", "via", RELAY_IP])
        apply_sysctls(ns["rly"], {"net.ipv4.ip_forward": "0"})
        argv = [
            "ip", "netns", "exec", ns["rly"], sys.executable, "-m", "relay", "-n",
            "-L", RELAY_IP, "-p", "3478", "--tls-listening-port", "443",
            "--cert", str(certs.cert), "--pkey", str(certs.key),
            "--static-auth-secret", SECRET, "-r", "natlab", "--fingerprint",
            "--min-port", "49152", "--max-port", "65535",
        ]  # fmt: skip
        with relay_log.open("wb") as log:
            relay = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
        try:
            _wait_ready(relay, relay_log)
            yield GatherLab(ns["cli"], hosts, certs, relay_log)
        finally:
            relay.terminate()
            try:
                relay.wait(5)
            except subprocess.TimeoutExpired:
                relay.kill()
                relay.wait(5)


def _need(kind: BrowserKind) -> None:
    why = kind.missing()
    if why:
        pytest.skip(f"{kind.name} is not installed here: {why}")


def _gather(lab: GatherLab, kind: BrowserKind, workdir: Path, *args: str) -> Gathered:
    command = [
        sys.executable, "-m", "lab", "gather", "--browser", kind.name, "--json",
        "--cafile", str(lab.certs.ca), "--timeout", str(GATHER_TIMEOUT_S),
        "--workdir", str(workdir), *args,
    ]  # fmt: skip
    argv = ["ip", "netns", "exec", lab.client_ns, *with_hosts(command, lab.hosts)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_LIMIT_S, cwd=ROOT)
    left = _left_after(lab.client_ns, GONE_WITHIN_S)
    data: dict[str, Any] = {}
    with contextlib.suppress(ValueError):
        data = json.loads(done.stdout)
    return Gathered(done.returncode, data, done.stderr, left, workdir)


def _left_after(ns: str, seconds: float) -> list[str]:
    """The PIDs still in ``ns`` after waiting up to ``seconds`` for it to empty."""
    deadline = time.monotonic() + seconds
    while True:
        pids = subprocess.run(
            ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
        ).stdout.split()
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


def _urls(secret: str) -> list[str]:
    return ["--secret", secret, *(word for url in URLS for word in ("--ice-server", url))]


@pytest.mark.parametrize("kind", BROWSERS)
def test_gather_relay_candidates_over_udp_tcp_and_tls(
    lab: GatherLab, kind: BrowserKind, tmp_path: Path
) -> None:
    _need(kind)
    got = _gather(lab, kind, tmp_path, *_urls(SECRET))
    why = got.explain()
    assert got.status == 0, why
    assert got.data["ok"] is True and got.data["browser"] == kind.name, why
    for url, protocol in URLS.items():
        server = got.server(url)
        relays = [c for c in server["candidates"] if c["type"] == "relay"]
        assert relays, f"{url}: no relay candidate\n{why}"
        assert {c["relay_protocol"] for c in relays} == {protocol}, f"{url}\n{why}"
        assert {c["address"] for c in relays} == {RELAY_IP}, f"{url}\n{why}"
        assert server["ok"] is True and server["complete"] is True, f"{url}\n{why}"
        assert server["summary"].startswith(f"{url}: {len(relays)} relay candidate"), why
    assert got.left == [], f"processes left in the client namespace: {got.left}\n{why}"


@pytest.mark.parametrize("kind", BROWSERS)
def test_gather_wrong_secret_gives_401_and_no_relay_candidate(
    lab: GatherLab, kind: BrowserKind, tmp_path: Path
) -> None:
    _need(kind)
    got = _gather(lab, kind, tmp_path, *_urls("not-the-secret"))
    why = got.explain()
    assert got.status == 1, why
    assert got.data["ok"] is False, why
    for url in URLS:
        server = got.server(url)
        assert not [c for c in server["candidates"] if c["type"] == "relay"], f"{url}\n{why}"
        assert 401 in {e["code"] for e in server["errors"]}, f"{url}: no 401\n{why}"
        assert server["ok"] is False and "no relay candidate: 401" in server["summary"], why
    assert got.left == [], f"processes left in the client namespace: {got.left}\n{why}"
