"""The signaling server on loopback: rooms of two, verbatim forwarding, errors and bounds.

The server runs in-process (plain TCP on 127.0.0.1, ephemeral port) or as a TLS subprocess;
every read is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from relayproc import ManagedProcess, free_port, managed_process
from streamutil import client_context, make_cert

from lab.agents.signaling import SignalingServer

LOOPBACK = "127.0.0.1"
READ_TIMEOUT_S = 3.0


class Peer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Peer:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(LOOPBACK, port, limit=1 << 20), READ_TIMEOUT_S
        )
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_raw(json.dumps(message).encode() + b"\n")

    async def line(self) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), READ_TIMEOUT_S)

    async def recv(self) -> dict[str, Any]:
        line = await self.line()
        assert line, "connection closed"
        return dict(json.loads(line))

    async def join(self, room: str, peer: str) -> dict[str, Any]:
        await self.send({"type": "join", "room": room, "peer": peer})
        return await self.recv()

    def close(self) -> None:
        self.writer.close()


async def _with_server(test: Any, **limits: Any) -> None:
    server = SignalingServer(**limits)
    _, port = await server.start(LOOPBACK, 0, None)
    try:
        await asyncio.wait_for(test(server, port), 20)
    finally:
        await server.close()


def test_agents_signaling_room_join_forward_and_leave() -> None:
    async def test(server: SignalingServer, port: int) -> None:
        a, b, c = await Peer.open(port), await Peer.open(port), await Peer.open(port)
        assert await a.join("r", "a") == {
            "type": "joined",
            "room": "r",
            "peer": "a",
            "peers": ["a"],
        }
        # sent before b joins: waits for b
        await a.send({"type": "offer", "ufrag": "x"})
        joined = await b.join("r", "b")
        assert joined["peers"] == ["a", "b"]
        assert await b.recv() == {"type": "offer", "ufrag": "x"}
        assert await a.recv() == {"type": "peer-joined", "peer": "b"}
        # verbatim, unknown types and odd spacing included
        raw = b'{"type":"answer",  "candidates":["1 1 udp 5 1.2.3.4 5 typ host"], "z":null}\n'
        await b.send_raw(raw)
        assert await a.line() == raw
        # a third peer is refused
        assert (await c.join("r", "c"))["error"] == "room-full"
        # b leaves: a is told
        b.close()
        assert await a.recv() == {"type": "peer-left", "peer": "b"}
        # the room has a free seat again
        assert (await c.join("r", "c"))["type"] == "joined"
        assert await a.recv() == {"type": "peer-joined", "peer": "c"}
        a.close()
        c.close()

    asyncio.run(_with_server(test))


def test_agents_signaling_errors() -> None:
    async def test(server: SignalingServer, port: int) -> None:
        p = await Peer.open(port)
        await p.send({"type": "offer"})
        assert (await p.recv())["error"] == "not-joined"
        await p.send_raw(b"not json\n")
        assert (await p.recv())["error"] == "bad-message"
        assert (await p.join("r", ""))["error"] == "bad-join"
        assert (await p.join("r", "a"))["type"] == "joined"
        assert (await p.join("r2", "a"))["error"] == "already-joined"
        q = await Peer.open(port)
        assert (await q.join("r", "a"))["error"] == "peer-exists"
        r = await Peer.open(port)
        assert (await r.join("other", "a"))["error"] == "too-many-rooms"  # max_rooms=1
        for peer in (p, q, r):
            peer.close()

    asyncio.run(_with_server(test, max_rooms=1))


def test_agents_signaling_too_large_message_closes() -> None:
    async def test(server: SignalingServer, port: int) -> None:
        p = await Peer.open(port)
        assert (await p.join("r", "a"))["type"] == "joined"
        await p.send_raw(b'{"type":"offer","pad":"' + b"x" * 2000 + b'"}\n')
        assert (await p.recv())["error"] == "message-too-large"
        assert await p.line() == b""  # closed
        assert server.rooms == {}

    asyncio.run(_with_server(test, max_message_bytes=1024))


def test_agents_signaling_idle_connection_closed() -> None:
    async def test(server: SignalingServer, port: int) -> None:
        p = await Peer.open(port)
        assert (await p.recv())["error"] == "idle-timeout"
        assert await p.line() == b""
        assert server.counters.get("idle_closed") == 1

    asyncio.run(_with_server(test, idle_timeout=0.3))


@pytest.fixture(scope="module")
def sig_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("sigcert"))


def _ready(p: ManagedProcess) -> bool:
    return p.wait_for_line(lambda line: line.startswith("[err] ready"), 15.0)


def test_agents_signaling_subprocess_tls_and_sigterm(sig_cert: tuple[Path, Path]) -> None:
    cert, key = sig_cert
    port = free_port()
    argv = [
        sys.executable, "-m", "lab.agents.signaling", "--listen", f"{LOOPBACK}:{port}",
        "--cert", str(cert), "--key", str(key),
    ]  # fmt: skip

    async def talk() -> dict[str, Any]:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(LOOPBACK, port, ssl=client_context(cert)), READ_TIMEOUT_S
        )
        writer.write(b'{"type":"join","room":"r","peer":"a"}\n')
        line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)
        writer.close()
        return dict(json.loads(line))

    with managed_process(argv, ready=_ready, port=port) as proc:
        assert f"ready {LOOPBACK}:{port} tls" in proc.log
        assert asyncio.run(talk())["type"] == "joined"
    assert proc.proc.returncode == 0, proc.log


def test_agents_signaling_refuses_wildcard_address() -> None:
    import subprocess

    argv = [sys.executable, "-m", "lab.agents.signaling", "--listen", "0.0.0.0:1", "--plain"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "wildcard" in done.stderr
