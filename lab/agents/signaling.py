"""natlab's signaling server: rooms of two peers relaying newline-delimited JSON over TLS.

Seed 000 signals over HTTPS (TCP 443), which every firewall policy of the lab leaves open, so
the server speaks TLS on TCP 443 by default (``--plain`` for plain TCP, e.g. in tests).

Protocol (one JSON object per line, UTF-8, at most ``MAX_MESSAGE_BYTES`` per line):

- ``{"type":"join","room":R,"peer":P}`` -> ``{"type":"joined","room":R,"peer":P,"peers":[...]}``
  (``peers``: who is in the room now, including P). The other peer, if present, gets
  ``{"type":"peer-joined","peer":P}``. A third peer, a taken name or a second join gets
  ``{"type":"error","error":"room-full"|"peer-exists"|"already-joined",...}``.
- Every other message of a joined peer is forwarded verbatim (the same bytes) to the other
  peer; while the other peer is absent, up to ``MAX_PENDING`` messages wait for it.
- When a peer disconnects, the other gets ``{"type":"peer-left","peer":P}``.
- Errors: ``{"type":"error","error":<reason>,"detail":...}``; a message that is too large, not
  a JSON object or sent before joining is refused; too large also closes the connection.

The listening address must be a concrete IP (a lab address or 127.0.0.1), never a wildcard.

Bounds: messages of 64 KiB, 1024 rooms, 4096 connections, 120 s idle timeout, 10 s TLS handshake
and 10 s per write. Prints "ready HOST:PORT" on stderr once listening; SIGTERM/SIGINT exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import ssl
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.agents.messages import Error, Joined, Kind, Message, PeerJoined, PeerLeft

log = logging.getLogger("natlab.signaling")

DEFAULT_PORT = 443
MAX_MESSAGE_BYTES = 64 * 1024
MAX_ROOMS = 1024
MAX_CONNECTIONS = 4096
MAX_PENDING = 64
IDLE_TIMEOUT_S = 120.0
HANDSHAKE_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 10.0
MAX_NAME_CHARS = 128


def parse_hostport(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """ "IP:PORT", "[v6]:PORT" or a bare IP (default port)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"bad address {text!r}")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"bad address {text!r}")
    port = int(port_text) if port_text else default_port
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host, port


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One line to a JSON object with a string "type"; ValueError otherwise."""
    try:
        message = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"not JSON: {err}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ValueError('not a JSON object with a string "type"')
    return message


# --- server --------------------------------------------------------------------------------


@dataclass(eq=False)
class _Client:
    writer: asyncio.StreamWriter
    name: str
    room: str | None = None
    peer: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, data: bytes) -> bool:
        """Write one line; False (and the connection closed) if the peer is gone or too slow."""
        if self.writer.is_closing():
            return False
        async with self.lock:
            try:
                self.writer.write(data)
                await asyncio.wait_for(self.writer.drain(), WRITE_TIMEOUT_S)
                return True
            except (TimeoutError, OSError, RuntimeError) as err:
                log.info("%s: write failed (%s), closing", self.name, err)
                self.writer.close()
                return False


@dataclass
class _Room:
    name: str
    peers: dict[str, _Client] = field(default_factory=dict)
    # messages waiting for the other peer: (sender name, line)
    pending: deque[tuple[str, bytes]] = field(default_factory=lambda: deque())


class SignalingServer:
    """Rooms of two peers; every limit is a constructor argument so tests can shrink it."""

    def __init__(
        self,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_rooms: int = MAX_ROOMS,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT_S,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.max_rooms = max_rooms
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.rooms: dict[str, _Room] = {}
        self.clients: set[_Client] = set()
        self.server: asyncio.Server | None = None
        self.counters: dict[str, int] = {}

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    async def start(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None
    ) -> tuple[str, int]:
        self.server = await asyncio.start_server(
            self._handle,
            host,
            port,
            ssl=ssl_context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if ssl_context else None,
            limit=self.max_message_bytes + 1,
            reuse_address=True,
            backlog=256,
        )
        name = self.server.sockets[0].getsockname()
        return name[0], name[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for client in list(self.clients):
            client.writer.close()
        if self.server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 5.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        client = _Client(writer, name=f"{peername[0]}:{peername[1]}" if peername else "?")
        if len(self.clients) >= self.max_connections:
            self._count("refused_connections")
            await client.send(encode(_error("too-many-connections")))
            writer.close()
            return
        self.clients.add(client)
        self._count("connections")
        log.info("%s: connected", client.name)
        try:
            await self._serve(client, reader)
        except (OSError, ssl.SSLError) as err:
            log.info("%s: connection error %s", client.name, err)
        finally:
            self.clients.discard(client)
            await self._leave(client)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2.0)
            log.info("%s: disconnected", client.name)

    async def _serve(self, client: _Client, reader: asyncio.StreamReader) -> None:
        while not client.writer.is_closing():
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), self.idle_timeout)
            except TimeoutError:
                self._count("idle_closed")
                log.info("%s: idle for %.0f s, closing", client.name, self.idle_timeout)
                await client.send(encode(_error("idle-timeout")))
                return
            except asyncio.IncompleteReadError:
                return  # EOF (a partial last line is dropped)
            except asyncio.LimitOverrunError:
                self._count("too_large")
                await client.send(encode(_error("message-too-large")))
                return
            if len(line) > self.max_message_bytes:
                self._count("too_large")
                await client.send(encode(_error("message-too-large")))
                return
            if not line.strip():
                continue
            try:
                message = decode(line)
            except ValueError as err:
                self._count("bad_messages")
                await client.send(encode(_error("bad-message", str(err))))
                continue
            if message["type"] == Kind.JOIN:
                await self._join(client, message)
            else:
                await self._forward(client, line)

    async def _join(self, client: _Client, message: dict[str, Any]) -> None:
        room_name, peer = message.get("room"), message.get("peer")
        if client.room is not None:
            await client.send(encode(_error("already-joined", client.room)))
            return
        if not _valid_name(room_name) or not _valid_name(peer):
            await client.send(encode(_error("bad-join", "room and peer must be short strings")))
            return
        assert isinstance(room_name, str) and isinstance(peer, str)
        room = self.rooms.get(room_name)
        if room is None:
            if len(self.rooms) >= self.max_rooms:
                self._count("refused_rooms")
                await client.send(encode(_error("too-many-rooms")))
                return
            room = self.rooms[room_name] = _Room(room_name)
        if len(room.peers) >= 2:
            self._count("room_full")
            await client.send(encode(_error("room-full", room_name)))
            return
        if peer in room.peers:
            await client.send(encode(_error("peer-exists", peer)))
            return
        room.peers[peer] = client
        client.room, client.peer = room_name, peer
        log.info("%s: joined room %r as %r", client.name, room_name, peer)
        await client.send(
            encode(Joined(type="joined", room=room_name, peer=peer, peers=list(room.peers)))
        )
        for other_name, other in list(room.peers.items()):
            if other is not client:
                await other.send(encode(PeerJoined(type="peer-joined", peer=peer)))
                log.info("room %r: %r and %r present", room_name, other_name, peer)
        # deliver what the other peer sent while this one was absent
        while room.pending and room.peers.get(peer) is client:
            sender, line = room.pending.popleft()
            if sender != peer:
                await client.send(line)

    async def _forward(self, client: _Client, line: bytes) -> None:
        if client.room is None or client.peer is None:
            await client.send(encode(_error("not-joined")))
            return
        room = self.rooms.get(client.room)
        if room is None:  # cannot happen while the client is in it
            return
        others = [c for c in room.peers.values() if c is not client]
        if others:
            self._count("forwarded")
            await others[0].send(line)
        elif len(room.pending) < MAX_PENDING:
            room.pending.append((client.peer, line))
        else:
            await client.send(encode(_error("pending-full")))

    async def _leave(self, client: _Client) -> None:
        if client.room is None or client.peer is None:
            return
        room = self.rooms.get(client.room)
        client_room, client_peer = client.room, client.peer
        client.room = client.peer = None
        if room is None or room.peers.get(client_peer) is not client:
            return
        del room.peers[client_peer]
        # what this peer sent and nobody received is dropped with it
        room.pending = deque(p for p in room.pending if p[0] != client_peer)
        if not room.peers:
            del self.rooms[client_room]
            return
        for other in list(room.peers.values()):
            await other.send(encode(PeerLeft(type="peer-left", peer=client_peer)))
        log.info("room %r: %r left", client_room, client_peer)


def _error(reason: str, detail: str | None = None) -> Error:
    message = Error(type="error", error=reason)
    if detail is not None:
        message["detail"] = detail
    return message


def _valid_name(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME_CHARS


# --- client (used by the ICE agent) -------------------------------------------------------


class SignalingError(Exception):
    pass


class SignalingClient:
    """One connection to the signaling server; received messages land in ``messages``.

    The reader puts ``{"type":"_closed"}`` on the queue when the connection ends.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(
        cls,
        addr: tuple[str, int],
        ssl_context: ssl.SSLContext | None,
        *,
        server_hostname: str | None = None,
        timeout: float = 5.0,
    ) -> SignalingClient:
        kwargs: dict[str, Any] = {"limit": MAX_MESSAGE_BYTES + 1}
        if ssl_context is not None:
            kwargs["ssl"] = ssl_context
            kwargs["server_hostname"] = server_hostname or addr[0]
            kwargs["ssl_handshake_timeout"] = timeout
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(addr[0], addr[1], **kwargs), timeout
        )
        return cls(reader, writer)

    async def _read(self) -> None:
        try:
            while True:
                line = await self._reader.readuntil(b"\n")
                try:
                    self.messages.put_nowait(decode(line))
                except ValueError as err:
                    log.warning("signaling: ignoring bad message: %s", err)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as err:
            log.debug("signaling: reader ended: %r", err)
        finally:
            self.messages.put_nowait({"type": Kind.CLOSED})

    async def send(self, message: Message | Mapping[str, Any], timeout: float = 5.0) -> None:
        data = encode(message)
        if len(data) > MAX_MESSAGE_BYTES:
            raise SignalingError(f"message of {len(data)} bytes is too large")
        if self._writer.is_closing():
            raise SignalingError("connection closed")
        try:
            self._writer.write(data)
            await asyncio.wait_for(self._writer.drain(), timeout)
        except (TimeoutError, OSError, RuntimeError) as err:
            raise SignalingError(f"send failed: {err!r}") from err

    async def close(self, timeout: float = 1.0) -> None:
        self._task.cancel()
        self._writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), timeout)


# --- command line --------------------------------------------------------------------------


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lab.agents.signaling",
        description="natlab signaling server: rooms of two peers, newline-delimited JSON over TLS",
    )
    p.add_argument("--listen", required=True, metavar="IP:PORT", help="default port 443")
    p.add_argument("--cert", help="certificate chain (PEM); required unless --plain")
    p.add_argument("--key", help="private key (PEM); required unless --plain")
    p.add_argument("--plain", action="store_true", help="plain TCP, no TLS")
    p.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT_S, metavar="S")
    p.add_argument("--max-rooms", type=int, default=MAX_ROOMS)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


async def _serve_until_signal(
    host: str, port: int, ctx: ssl.SSLContext | None, args: argparse.Namespace
) -> int:
    server = SignalingServer(idle_timeout=args.idle_timeout, max_rooms=args.max_rooms)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        bound = await server.start(host, port, ctx)
    except OSError as err:
        log.error("cannot listen on %s:%d: %s", host, port, err)
        return 1
    mode = "plain" if ctx is None else "tls"
    print(f"ready {bound[0]}:{bound[1]} {mode}", file=sys.stderr, flush=True)
    await stop.wait()
    log.info("stopping")
    await server.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s.%(msecs)03d signaling %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.Formatter.converter = time.gmtime
    try:
        host, port = parse_hostport(args.listen)
        if ipaddress.ip_address(host).is_unspecified:
            raise ValueError("a wildcard address would listen on the host's uplink too")
    except ValueError as err:
        print(f"error: --listen: {err}", file=sys.stderr)
        return 2
    ctx: ssl.SSLContext | None = None
    if not args.plain:
        if not args.cert or not args.key:
            print("error: --cert and --key are required unless --plain", file=sys.stderr)
            return 2
        try:
            ctx = server_ssl_context(args.cert, args.key)
        except (OSError, ssl.SSLError) as err:
            print(f"error: cannot load certificate: {err}", file=sys.stderr)
            return 2
    return asyncio.run(_serve_until_signal(host, port, ctx, args))


if __name__ == "__main__":
    sys.exit(main())
