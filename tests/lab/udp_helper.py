"""A tiny socket agent run inside a lab namespace, driven over stdin/stdout (JSON lines).

`python udp_helper.py agent` inside `ip netns exec NS`; the test side uses `Agent(ns)`.
Commands (one JSON object per line, one JSON reply per line):
  {"op": "udp", "id": "a", "addr": [ip, port], "echo": false}   bind a UDP socket
  {"op": "send", "id": "a", "to": [ip, port], "data": "x"}
  {"op": "recv", "id": "a", "wait": 0.5, "count": 1}   datagrams received so far (drained)
  {"op": "close", "id": "a"}
  {"op": "tcp_listen", "addr": [ip, port]}             accept and close, forever
  {"op": "tcp_connect", "to": [ip, port], "timeout": 0.5}   -> "connected"|"refused"|"timeout"
  {"op": "udp_error", "to": [ip, port], "wait": 0.5}   connected UDP send: "refused" when an
                                                      ICMP port-unreachable came back
Echo sockets answer every datagram with {"observed": [ip, port]} from the same socket,
which is how an RFC 5780 server reports the mapped address.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from typing import Any

Addr = tuple[str, int]
CALL_TIMEOUT_S = 10.0


class _UdpSock:
    def __init__(self, addr: Addr, echo: bool) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(addr)
        self.sock.settimeout(0.05)
        self.echo = echo
        self.got: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.closed = False
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while not self.closed:
            try:
                data, src = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                continue  # ICMP errors on unconnected sockets, or closed
            if self.echo:
                reply = json.dumps({"observed": list(src), "data": data.decode(errors="replace")})
                with contextlib.suppress(OSError):
                    self.sock.sendto(reply.encode(), src)
            with self.cond:
                self.got.append({"from": list(src), "data": data.decode(errors="replace")})
                self.cond.notify_all()

    def recv(self, wait: float, count: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + wait
        with self.cond:
            while len(self.got) < count and (left := deadline - time.monotonic()) > 0:
                self.cond.wait(left)
            got, self.got = self.got, []
        return got


def _tcp_serve(addr: Addr) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(addr)
    srv.listen(16)

    def loop() -> None:
        while True:
            conn, _ = srv.accept()
            conn.close()

    threading.Thread(target=loop, daemon=True).start()


def _tcp_connect(to: Addr, timeout: float) -> str:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(to)
        return "connected"
    except ConnectionRefusedError:
        return "refused"
    except (TimeoutError, OSError):
        return "timeout"
    finally:
        s.close()


def _udp_error(to: Addr, wait: float) -> str:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(wait)
    try:
        s.connect(to)
        s.send(b"x")
        s.recv(100)
        return "reply"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    finally:
        s.close()


def agent_main() -> None:
    socks: dict[str, _UdpSock] = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        out: dict[str, Any] = {"ok": True}
        try:
            if op == "udp":
                s = socks[cmd["id"]] = _UdpSock(tuple(cmd["addr"]), cmd.get("echo", False))
                out["addr"] = list(s.sock.getsockname())
            elif op == "send":
                socks[cmd["id"]].sock.sendto(cmd.get("data", "x").encode(), tuple(cmd["to"]))
            elif op == "recv":
                out["got"] = socks[cmd["id"]].recv(cmd.get("wait", 0.5), cmd.get("count", 1))
            elif op == "close":
                s = socks.pop(cmd["id"])
                s.closed = True
                s.sock.close()
            elif op == "tcp_listen":
                _tcp_serve(tuple(cmd["addr"]))
            elif op == "tcp_connect":
                out["result"] = _tcp_connect(tuple(cmd["to"]), cmd.get("timeout", 0.5))
            elif op == "udp_error":
                out["result"] = _udp_error(tuple(cmd["to"]), cmd.get("wait", 0.5))
            elif op != "ping":
                raise ValueError(f"unknown op {op!r}")
        except Exception as e:  # reported to the test, which fails with it
            out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


class Agent:
    """Test-side handle of one agent process inside namespace `ns`."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__), "agent"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._n = 0
        self.call(op="ping")

    def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], CALL_TIMEOUT_S)
        if not ready:
            raise TimeoutError(f"agent in {self.ns} did not answer {cmd}")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"agent in {self.ns} exited (rc {self.proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"agent in {self.ns}: {cmd}: {reply.get('error')}")
        return reply

    def udp(self, ip: str, port: int, *, echo: bool = False) -> str:
        self._n += 1
        sid = f"s{self._n}"
        self.call(op="udp", id=sid, addr=[ip, port], echo=echo)
        return sid

    def send(self, sid: str, to: Addr, data: str = "x") -> None:
        self.call(op="send", id=sid, to=list(to), data=data)

    def recv(self, sid: str, wait: float = 0.5, count: int = 1) -> list[dict[str, Any]]:
        return list(self.call(op="recv", id=sid, wait=wait, count=count)["got"])

    def observed(self, sid: str, to: Addr, wait: float = 1.0) -> Addr | None:
        """Send to an echo socket; return the source address it saw (None: no answer)."""
        self.recv(sid, wait=0, count=0)  # drop stale datagrams
        self.send(sid, to, "probe")
        for d in self.recv(sid, wait=wait):
            if tuple(d["from"]) == tuple(to):
                ip, port = json.loads(d["data"])["observed"]
                return (ip, int(port))
        return None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)


if __name__ == "__main__":
    if sys.argv[1:] == ["agent"]:
        agent_main()
    else:
        sys.exit("usage: udp_helper.py agent")
