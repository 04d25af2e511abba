"""Relay throughput and scale: our relay and coturn side by side, with the direct path as the
ceiling, all measured in the same rounds.

Topology ``netns`` (needs root): three lab namespaces ``nl-<id>-cli``, ``nl-<id>-rly`` and
``nl-<id>-peer`` joined by two veth pairs, addresses in 198.18.0.0/15 only, no route out:

    client 198.18.101.2 -- 198.18.101.1 relay 198.18.102.1 -- 198.18.102.2 peer

The relay host forwards between its two links, which is the direct path (client -> peer, no
TURN). Topology ``loopback``: everything on 127.0.0.1 in the current namespace.

Processes, each started and ended by PID: the sink (bench/sink.py) in the peer namespace, the
load generators (bench/loadgen.py, one TURN client each) in the client namespace, and one relay
at a time in the relay namespace, with the same flags for both implementations (REST secret,
relay ports 20000-60000, the same number of relay threads: coturn ``-m N``, ours ``-m N``).
With two or more CPUs and one relay thread, the relay is pinned to the last CPU and the load
generator and sink to the others, so the relay has a core of its own.

A round measures, for every case: the direct path, ours and coturn. A case is a full-blast
trial (max received rate, loss, Mbit/s) then a zero-loss rate search (RateSearch) whose first
probe, at 80 % of the full-blast rate, is also reported as its own loss figure. A relay
that loses nothing at full blast took all the generator could send: that full-blast figure is
noted as generator-bound (a lower bound), like one near the direct ceiling. Figures are
medians over rounds; ratios are medians of per-round ratios. ``--datapath python`` runs our
relay with its pure Python packet loop, to measure what the C loop changed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from bench.relay_stats import ZERO_LOSS, Figure, Measurements, RateSearch, build_table, loss
from reports.vocabulary import RELAY_IMPLS, RelayImpl

SECRET = "bench-rest-secret"
REALM = "bench"
MIN_PORT, MAX_PORT = 20000, 60000
RELAY_PORT = 3478
SINK_PORT = 5000
READY_TIMEOUT_S = 15.0
REPLY_TIMEOUT_S = 120.0
DRAIN_S = 0.15  # after a trial, before the sink's snapshot: let queues empty
NOFILE = 65536  # RLIMIT_NOFILE for the relays and the load generator (10,000 allocations)
REPO = Path(__file__).resolve().parents[1]  # children run `python -m bench.sink` from here
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

CLIENT_NET = ("198.18.101.2", "198.18.101.1")  # (client, relay side)
PEER_NET = ("198.18.102.2", "198.18.102.1")  # (peer, relay side)
LOSS_CHECK_FRACTION = 0.8  # issue target: zero loss below 80 % of the measured ceiling
KIND_LABEL = {"channel": "ChannelData", "send": "Send indication"}


class BenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class RelayBenchConfig:
    topology: str = "netns"  # or "loopback"
    relays: tuple[str, ...] = RELAY_IMPLS
    repeat: int = 3
    duration: float = 1.0  # full-blast trial, seconds
    search_duration: float = 0.5  # each rate-search trial
    search_steps: int = 4
    sizes: tuple[int, ...] = (100, 1200)
    kinds: tuple[str, ...] = ("channel", "send")
    threads: tuple[str, ...] = ("1", "all")  # relay threads/workers: 1, and all cores
    all_cores_kinds: tuple[str, ...] = ("channel",)  # cases measured with all cores
    alloc_clients: int = 2000  # Allocate rate: clients per run
    alloc_window: int = 64  # Allocate transactions in flight
    hold_allocations: int = 10_000
    hold_repeat: int = 1  # runs of the 10,000-allocation figure (each costs seconds)
    pin: bool = True
    datapath: str = "auto"  # our relay's packet loop (--datapath): auto, c or python
    workdir: Path = Path("/tmp/natlab/bench")

    @classmethod
    def quick(cls, **overrides: Any) -> RelayBenchConfig:
        """A smoke run: one round, short trials, one size, small allocation counts."""
        base = cls(
            repeat=1,
            duration=0.4,
            search_duration=0.3,
            search_steps=1,
            sizes=(1200,),
            threads=("1",),
            alloc_clients=100,
            hold_allocations=300,
        )
        return replace(base, **overrides)

    def thread_count(self, threads: str) -> int:
        return (os.cpu_count() or 1) if threads == "all" else int(threads)

    def senders(self, threads: str) -> int:
        """One load generator per relay thread: each is one 5-tuple, so one thread's work."""
        return self.thread_count(threads)


# ---------------------------------------------------------------------- processes


class LineProcess:
    """A child speaking JSON lines on stdin/stdout, read with a timeout (no blocking forever)."""

    def __init__(self, argv: Sequence[str], name: str, log: Path, cpus: set[int] | None = None):
        self.name = name
        self.log = log
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("wb"),
            preexec_fn=_child_setup(cpus),
            cwd=REPO,
        )
        self.buffer = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def readline(self, timeout: float = REPLY_TIMEOUT_S) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{self.name}: no reply within {timeout}s{self._tail()}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise BenchError(f"{self.name} exited{self._tail()}")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return dict(json.loads(line))

    def call(self, obj: dict[str, Any], timeout: float = REPLY_TIMEOUT_S) -> dict[str, Any]:
        self.send(obj)
        reply = self.readline(timeout)
        if reply.get("ok") is False:
            raise BenchError(f"{self.name} {obj.get('cmd')}: {reply.get('error')}")
        return reply

    def _tail(self) -> str:
        try:
            return "; stderr: " + self.log.read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    def stop(self) -> None:
        _stop(self.proc)


def _child_setup(cpus: set[int] | None) -> Any:
    def setup() -> None:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
        if cpus:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, cpus)

    return setup


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End one child we started, by its PID: SIGTERM, then SIGKILL after 3 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=3)


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (a relay with worker processes counts as one relay)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of the processes (all their threads), from /proc/PID/stat."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # fields 14, 15 of stat(5)
    return total / CLK_TCK


def rss_kib(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def fd_count(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{pid}/fd"))
    return total


# ---------------------------------------------------------------------- hosts


@dataclass
class Hosts:
    """Where each role runs and its addresses: lab namespaces, or loopback."""

    namespaces: dict[str, str] = field(default_factory=dict)  # role -> netns name
    relay_listen: str = "127.0.0.1"
    relay_ip: str = "127.0.0.1"
    peer_ip: str = "127.0.0.1"
    relay_port: int = RELAY_PORT
    sink_port: int = SINK_PORT

    def argv(self, role: str, argv: Sequence[str]) -> list[str]:
        ns = self.namespaces.get(role)
        # `ip netns exec` execs the command: the child's PID is the command's PID
        return ["ip", "netns", "exec", ns, *argv] if ns else list(argv)

    @property
    def loopback(self) -> bool:
        return not self.namespaces


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def make_hosts(topology: str) -> Iterator[Hosts]:
    if topology == "loopback":
        yield Hosts(relay_port=_free_udp_port(), sink_port=_free_udp_port())
        return
    if topology != "netns":
        raise ValueError(f"unknown topology {topology!r}")
    from lab.nat.netns import add_veth, apply_sysctls, namespaces, ns_run

    with namespaces("cli", "rly", "peer") as ns:
        add_veth(ns["cli"], "c0", ns["rly"], "r0")
        add_veth(ns["rly"], "r1", ns["peer"], "p0")
        ns_run(ns["cli"], ["ip", "addr", "add", f"{CLIENT_NET[0]}/24", "dev", "c0"])
        ns_run(ns["rly"], ["ip", "addr", "add", f"{CLIENT_NET[1]}/24", "dev", "r0"])
        ns_run(ns["rly"], ["ip", "addr", "add", f"{PEER_NET[1]}/24", "dev", "r1"])
        ns_run(ns["peer"], ["ip", "addr", "add", f"{PEER_NET[0]}/24", "dev", "p0"])
        # default routes stay inside the lab (the relay host); the relay host has none
        ns_run(ns["cli"], ["ip", "route", "add", "default", "via", CLIENT_NET[1]])
        ns_run(ns["peer"], ["ip", "route", "add", "default", "via", PEER_NET[1]])
        apply_sysctls(ns["rly"], {"net.ipv4.ip_forward": "1"})
        yield Hosts(
            namespaces={"client": ns["cli"], "relay": ns["rly"], "peer": ns["peer"]},
            relay_listen=CLIENT_NET[1],
            relay_ip=PEER_NET[1],
            peer_ip=PEER_NET[0],
        )


def relay_argv(
    impl: str, hosts: Hosts, threads: int, log: Path, datapath: str = "auto"
) -> list[str]:
    """The same settings for both relays (coturn's flags; ours takes them unchanged, plus
    its packet loop choice)."""
    common = [
        "-n",
        "-L", hosts.relay_listen,
        "-E", hosts.relay_ip,
        "-p", str(hosts.relay_port),
        "--min-port", str(MIN_PORT),
        "--max-port", str(MAX_PORT),
        "-r", REALM,
        "--use-auth-secret",
        "--static-auth-secret", SECRET,
        "-m", str(threads),
        "--no-tcp",
        "--no-tls",
        "--log-file", str(log),
        "--no-stdout-log",
    ]  # fmt: skip
    if hosts.loopback:
        common.append("--allow-loopback-peers")
    if impl == RelayImpl.INREPO:
        return [sys.executable, "-m", "relay", "--datapath", datapath, *common]
    if impl == RelayImpl.COTURN:
        binary = shutil.which("turnserver") or "turnserver"
        return [
            binary, *common, "--no-dtls", "--no-cli", "--simple-log",
            "--no-rfc5780", "--pidfile", str(log.with_suffix(".pid")),
        ]  # fmt: skip
    raise ValueError(f"unknown relay {impl!r}")


# ---------------------------------------------------------------------- the harness


@dataclass
class Trial:
    offered_pps: float
    sent: int
    received: int
    elapsed: float
    payload: int
    relay_cpu: float  # NaN on the direct path
    sink_drops: int

    @property
    def loss(self) -> float:
        return loss(self.sent, self.received)

    @property
    def rx_pps(self) -> float:
        return self.received / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def tx_pps(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def mbps(self) -> float:
        return self.rx_pps * self.payload * 8 / 1e6

    @property
    def cpu_ms_per_mbit(self) -> float:
        mbit = self.received * self.payload * 8 / 1e6
        return self.relay_cpu * 1000 / mbit if mbit > 0 else math.nan


class Harness:
    def __init__(self, config: RelayBenchConfig, hosts: Hosts, log=print) -> None:  # type: ignore[no-untyped-def]
        self.config = config
        self.hosts = hosts
        self.log = log
        self.workdir = config.workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        ncpu = os.cpu_count() or 1
        self.pinned = config.pin and ncpu >= 2
        self.relay_cpus = {ncpu - 1}
        self.load_cpus = set(range(ncpu - 1)) or {0}
        self.all_cpus = set(range(ncpu))
        self.sink: LineProcess | None = None
        self.gens: list[LineProcess] = []
        self.relays: dict[str, subprocess.Popen[bytes]] = {}  # impl -> process
        self.relay_pids: dict[str, list[int]] = {}  # impl -> its process tree
        self.ports: dict[str, int] = {}  # impl -> listening port
        self.data = Measurements()
        self.trials: list[dict[str, Any]] = []

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> Harness:
        argv = [sys.executable, "-m", "bench.sink"]
        argv += ["--bind", f"{self.hosts.peer_ip}:{self.hosts.sink_port}", "--max-seconds", "1800"]
        self.sink = LineProcess(
            self.hosts.argv("peer", argv), "sink", self.workdir / "sink.err", self.load_cpus
        )
        self.sink.readline(READY_TIMEOUT_S)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_relays()
        for gen in self.gens:
            gen.stop()
        self.gens.clear()
        if self.sink is not None:
            self.sink.stop()

    def generators(self, n: int) -> list[LineProcess]:
        while len(self.gens) < n:
            i = len(self.gens)
            argv = self.hosts.argv("client", [sys.executable, "-m", "bench.loadgen"])
            gen = LineProcess(argv, f"loadgen{i}", self.workdir / f"loadgen{i}.err")
            gen.readline(READY_TIMEOUT_S)
            self.gens.append(gen)
        return self.gens[:n]

    def pin_load(self, pinned: bool) -> None:
        cpus = self.load_cpus if pinned and self.pinned else self.all_cpus
        for proc in [*self.gens, *([self.sink] if self.sink else [])]:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(proc.pid, cpus)

    def start_relays(self, impls: Sequence[str], threads: int) -> None:
        """Start the relays side by side (one listening port each), so that a case can be
        measured on each back to back; an idle relay costs the other nothing."""
        self.stop_relays()
        for i, impl in enumerate(impls):
            port = self.hosts.relay_port + i if not self.hosts.loopback else _free_udp_port()
            self.ports[impl] = port
            log = self.workdir / f"relay-{impl}.log"
            with contextlib.suppress(OSError):
                log.unlink()
            hosts = replace(self.hosts, relay_port=port)
            argv = self.hosts.argv(
                "relay", relay_argv(impl, hosts, threads, log, self.config.datapath)
            )
            cpus = self.relay_cpus if self.pinned and threads == 1 else None
            err = (self.workdir / f"relay-{impl}.err").open("wb")
            self.relays[impl] = subprocess.Popen(
                argv,
                stdout=subprocess.DEVNULL,
                stderr=err,
                preexec_fn=_child_setup(cpus),
                cwd=REPO,
            )
        self.pin_load(threads == 1)
        gen = self.generators(1)[0]
        for impl, proc in self.relays.items():
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    raise BenchError(f"{impl} exited at start: {_argv_text(proc.args)}")
                try:
                    gen.call({"cmd": "ping", "server": self._server(impl)}, timeout=5)
                    break
                except BenchError:
                    if time.monotonic() > deadline:
                        raise
        time.sleep(0.2)  # let worker processes (if any) appear
        self.relay_pids = {impl: process_tree(p.pid) for impl, p in self.relays.items()}

    def stop_relays(self) -> None:
        for proc in self.relays.values():
            _stop(proc)
        self.relays.clear()
        self.relay_pids.clear()

    def _server(self, impl: str) -> list[Any]:
        return [self.hosts.relay_listen, self.ports[impl]]

    def _peer(self) -> list[Any]:
        return [self.hosts.peer_ip, self.hosts.sink_port]

    # ------------------------------------------------------------ trials

    def snapshot(self) -> dict[str, Any]:
        assert self.sink is not None
        os.kill(self.sink.pid, signal.SIGUSR1)
        return self.sink.readline(10)

    def trial(
        self, gens: list[LineProcess], size: int, rate: float, duration: float, target: str
    ) -> Trial:
        pids = self.relay_pids.get(target, [])
        before = self.snapshot()
        cpu0 = cpu_seconds(pids) if pids else math.nan
        per_gen = rate / len(gens) if rate > 0 else 0
        for gen in gens:
            gen.send({"cmd": "blast", "size": size, "rate": per_gen, "duration": duration})
        replies = [gen.readline() for gen in gens]
        time.sleep(DRAIN_S)
        cpu1 = cpu_seconds(pids) if pids else math.nan
        after = self.snapshot()
        for reply in replies:
            if reply.get("ok") is False:
                raise BenchError(f"blast: {reply.get('error')}")
        drops = after["rcvbuf_errors"] - before["rcvbuf_errors"]
        return Trial(
            offered_pps=rate,
            sent=sum(int(r["sent"]) for r in replies),
            received=after["packets"] - before["packets"],
            elapsed=max(float(r["elapsed"]) for r in replies),
            payload=size,
            relay_cpu=cpu1 - cpu0,
            sink_drops=drops if not self.hosts.loopback else -1,
        )

    def case(
        self, target: str, mode: str, size: int, senders: int, round_: int, label: str
    ) -> None:
        """Full blast, then the zero-loss search; records the figures of one case."""
        gens = self.generators(senders)
        for gen in gens:
            gen.call(
                {
                    "cmd": "setup",
                    "mode": mode,
                    "server": None if target == "direct" else self._server(target),
                    "peer": self._peer(),
                    "secret": SECRET,
                }
            )
        full = self.trial(gens, size, 0, self.config.duration, target)
        self._record_trial(target, label, round_, "max", full)
        # the first probe is the target's check: zero loss at 80 % of the full-blast rate
        search = RateSearch(
            max_received=full.rx_pps,
            max_offered=full.tx_pps,
            max_steps=self.config.search_steps,
            start_fraction=LOSS_CHECK_FRACTION,
        )
        best: Trial | None = None
        while (rate := search.next_rate()) is not None:
            t = self.trial(gens, size, rate, self.config.search_duration, target)
            self._record_trial(target, label, round_, "search", t)
            search.record(rate, t.loss)
            if t.loss < search.threshold and (best is None or rate > best.offered_pps):
                best = t
        efficiency = best or full
        data = self.data
        data.add(f"{label}|max_pps", target, round_, full.rx_pps)
        data.add(f"{label}|mbps", target, round_, full.mbps)
        data.add(f"{label}|loss", target, round_, full.loss)
        data.add(f"{label}|zero_loss_pps", target, round_, search.ceiling)
        if search.history:
            data.add(f"{label}|loss80", target, round_, search.history[0][1])
        if target != "direct":
            data.add(f"{label}|cpu", target, round_, efficiency.cpu_ms_per_mbit)
        if target != "direct" and full.loss < ZERO_LOSS:
            # the relay took all the generator could send: a lower bound, as near the ceiling
            data.note(f"{label}|max_pps", f"{target} lossless at full blast (generator-bound)")
        if full.sink_drops > 0.001 * max(full.sent, 1):
            data.note(f"{label}|max_pps", f"sink dropped {full.sink_drops} ({target})")
        self.log(
            f"  {target:6} {label}: max {full.rx_pps:,.0f} pps ({full.mbps:,.0f} Mbit/s, "
            f"sent {full.tx_pps:,.0f}/s, loss {full.loss:.1%}), zero-loss "
            f"{search.ceiling:,.0f} pps"
        )

    def _record_trial(self, target: str, label: str, round_: int, phase: str, t: Trial) -> None:
        self.trials.append(
            {
                "round": round_, "target": target, "case": label, "phase": phase,
                "offered_pps": t.offered_pps, "sent": t.sent, "received": t.received,
                "elapsed_s": t.elapsed, "loss": t.loss, "rx_pps": t.rx_pps, "mbps": t.mbps,
                "relay_cpu_s": t.relay_cpu, "sink_drops": t.sink_drops,
            }
        )  # fmt: skip

    # ------------------------------------------------------------ allocations

    def allocate_rate(self, impl: str, round_: int) -> None:
        self.start_relays([impl], 1)
        try:
            gen = self.generators(1)[0]
            r = gen.call(
                {
                    "cmd": "allocate",
                    "server": self._server(impl),
                    "secret": SECRET,
                    "count": self.config.alloc_clients,
                    "window": self.config.alloc_window,
                    "hold": False,
                    "timeout": 60,
                }
            )
        finally:
            self.stop_relays()
        rate = r["ok"] / r["elapsed"] if r["elapsed"] > 0 else math.nan
        # the generator's own ceiling: allocations per second of its CPU time
        ceiling = r["ok"] / r["cpu"] if r["cpu"] > 0 else math.nan
        self.data.add("alloc|rate", impl, round_, rate)
        self.data.add("alloc|rate", "direct", round_, ceiling)
        if r["failed"]:
            self.data.note("alloc|rate", f"{impl}: {r['failed']} failed")
        self.log(
            f"  {impl:6} Allocate: {rate:,.0f}/s ({r['ok']} ok, {r['failed']} failed; "
            f"generator ceiling {ceiling:,.0f}/s)"
        )

    def hold(self, impl: str, round_: int) -> None:
        n = self.config.hold_allocations
        self.start_relays([impl], 1)
        try:
            gen = self.generators(1)[0]
            pids = self.relay_pids[impl]
            rss0, fds0 = rss_kib(pids), fd_count(pids)
            r = gen.call(
                {
                    "cmd": "allocate",
                    "server": self._server(impl),
                    "secret": SECRET,
                    "count": n,
                    "window": self.config.alloc_window,
                    "hold": True,
                    "timeout": 120,
                },
                timeout=180,
            )
            time.sleep(0.3)
            pids = process_tree(pids[0])
            rss1, fds1 = rss_kib(pids), fd_count(pids)
            gen.call({"cmd": "release"})
        finally:
            self.stop_relays()
        ok = int(r["ok"])
        self.data.add("hold|ok", impl, round_, ok)
        if ok:
            self.data.add("hold|rss", impl, round_, (rss1 - rss0) / ok)
            self.data.add("hold|fds", impl, round_, (fds1 - fds0) / ok)
            self.data.add("hold|rss_total", impl, round_, rss1 / 1024)
        self.log(
            f"  {impl:6} {ok} allocations held: RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB, "
            f"fds {fds0} -> {fds1}"
        )

    # ------------------------------------------------------------ the whole run

    def run(self) -> None:
        cfg = self.config
        for round_ in range(cfg.repeat):
            self.log(f"relay bench round {round_ + 1}/{cfg.repeat} ({cfg.topology})")
            for threads in cfg.threads:
                n = cfg.thread_count(threads)
                senders = cfg.senders(threads)
                kinds = cfg.kinds if threads == "1" else cfg.all_cores_kinds
                # alternate who goes first, so neither relay always follows the other
                impls = cfg.relays if round_ % 2 == 0 else tuple(reversed(cfg.relays))
                self.start_relays(impls, n)
                try:
                    for size in cfg.sizes:
                        self.case("direct", "direct", size, senders, round_, f"{threads}|{size}|")
                        for kind in kinds:
                            for impl in impls:
                                label = f"{threads}|{size}|{kind}"
                                self.case(impl, kind, size, senders, round_, label)
                finally:
                    self.stop_relays()
            self.pin_load(True)
            for impl in cfg.relays:
                self.allocate_rate(impl, round_)
            if round_ < cfg.hold_repeat:
                for impl in cfg.relays:
                    self.hold(impl, round_)

    def figures(self) -> list[Figure]:
        cfg = self.config
        figs: list[Figure] = []
        for threads in cfg.threads:
            n = cfg.thread_count(threads)
            kinds = cfg.kinds if threads == "1" else cfg.all_cores_kinds
            for kind in kinds:
                for size in cfg.sizes:
                    label = f"{threads}|{size}|{kind}"
                    name = f"{KIND_LABEL[kind]} {size} B, {n} thread{'s' if n > 1 else ''}"
                    figs += [
                        Figure(f"{label}|max_pps", f"{name}: relayed pps (full blast)", "pkt/s"),
                        Figure(f"{label}|mbps", f"{name}: relayed payload", "Mbit/s"),
                        Figure(
                            f"{label}|loss",
                            f"{name}: loss at full blast",
                            "fraction",
                            flag_ceiling=False,
                            ratio_direct=False,
                            ratio_coturn=False,
                        ),
                        Figure(
                            f"{label}|zero_loss_pps", f"{name}: zero-loss rate (<0.1%)", "pkt/s"
                        ),
                        Figure(
                            f"{label}|loss80",
                            f"{name}: loss at 80% of its full-blast rate",
                            "fraction",
                            flag_ceiling=False,
                            ratio_direct=False,
                            ratio_coturn=False,
                        ),
                        Figure(
                            f"{label}|cpu",
                            f"{name}: relay CPU per Mbit",
                            "CPU ms/Mbit",
                            flag_ceiling=False,
                            ratio_direct=False,
                        ),
                    ]
        figs += [
            Figure(
                "alloc|rate",
                "Allocate (401 + authenticated), 1 thread; direct = generator ceiling",
                "alloc/s",
            ),
            Figure(
                "hold|ok",
                f"{cfg.hold_allocations} allocations held: succeeded",
                "count",
                flag_ceiling=False,
                ratio_direct=False,
            ),
            Figure(
                "hold|rss",
                "held allocations: RSS per allocation",
                "KiB",
                flag_ceiling=False,
                ratio_direct=False,
            ),
            Figure(
                "hold|fds",
                "held allocations: file descriptors per allocation",
                "fds",
                flag_ceiling=False,
                ratio_direct=False,
            ),
            Figure(
                "hold|rss_total",
                "held allocations: relay RSS in total",
                "MiB",
                flag_ceiling=False,
                ratio_direct=False,
            ),
        ]
        return figs

    def table(self) -> pd.DataFrame:
        # the direct path is one figure per (threads, size): copy it under each kind's key
        for (key, target, round_), value in list(self.data.values.items()):
            if target != "direct" or key.count("|") != 3:
                continue
            threads, size, kind, what = key.split("|")
            if kind:
                continue
            for k in self.config.kinds:
                self.data.add(f"{threads}|{size}|{k}|{what}", "direct", round_, value)
        return build_table(self.figures(), self.data)


def relay_unavailable_reason(config: RelayBenchConfig) -> str | None:
    if config.topology == "netns":
        from lab.nat.netns import netns_supported

        reason = netns_supported()
        if reason:
            return reason
    if not config.relays:
        return "no relay to measure"
    return None


def run_relay_benchmarks(config: RelayBenchConfig, log=print) -> tuple[pd.DataFrame, pd.DataFrame]:  # type: ignore[no-untyped-def]
    """(figure table, every trial) for the configured relays, direct path included."""
    started = time.monotonic()
    with make_hosts(config.topology) as hosts, Harness(config, hosts, log) as harness:
        harness.run()
        table = harness.table()
        trials = pd.DataFrame(harness.trials)
    log(f"relay bench: {time.monotonic() - started:.0f} s")
    return table, trials


def _argv_text(args: Any) -> str:
    """A Popen's argv as one line, for an error message."""
    return " ".join(map(str, args)) if isinstance(args, list | tuple) else str(args)
