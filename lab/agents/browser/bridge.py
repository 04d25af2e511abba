"""The local HTTP bridge between the driver and its page: stdlib asyncio, on 127.0.0.1 of the
host's namespace, one page, one browser.

The page (``page/agent.js``) loads from ``http://127.0.0.1:PORT/<token>/``, long-polls
``poll`` for the driver's commands, posts each command's outcome to ``reply`` and what the
browser does (ICE state changes, candidates, errors) to ``event``. Every path carries a random
token, so nothing else on the host can drive the page or feed the driver. Each request is one
connection (``Connection: close``): a handful per call, on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

log = logging.getLogger("natlab.browser.bridge")

POLL_HOLD_S = 5.0  # a poll without a command is answered "none" after this long
MAX_BODY = 1 << 20
MAX_HEADER_LINES = 64
READ_TIMEOUT_S = 5.0
PAGE_FILES = {"": "agent.html", "agent.html": "agent.html", "agent.js": "agent.js"}
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8"}

EventSink = Callable[[str, Any], None]


class PageError(Exception):
    """The page answered a command with an error (its message) or never answered."""


def page_files() -> dict[str, bytes]:
    """The page's files, shipped as package data beside this module."""
    folder = resources.files("lab.agents.browser").joinpath("page")
    return {name: folder.joinpath(name).read_bytes() for name in set(PAGE_FILES.values())}


class PageBridge:
    """Serves the page and carries commands to it and replies and events back."""

    def __init__(self, on_event: EventSink, files: Mapping[str, bytes] | None = None) -> None:
        self.on_event = on_event
        self.files = dict(files) if files is not None else page_files()
        self.token = secrets.token_hex(8)
        self.ready = asyncio.Event()  # the page's first poll arrived
        self._commands: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._waiters: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.token}/"

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=MAX_BODY)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.url

    async def close(self) -> None:
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(PageError("bridge closed"))
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def call(self, op: str, args: Mapping[str, Any] | None = None, *, timeout: float) -> Any:
        """Run one page command and return its result; PageError on an error or no answer."""
        command_id = next(self._ids)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[command_id] = waiter
        self._commands.put_nowait({"id": command_id, "op": op, "args": dict(args or {})})
        try:
            return await asyncio.wait_for(waiter, max(0.01, timeout))
        except TimeoutError:
            raise PageError(f"{op}: no answer from the page in {timeout:.1f} s") from None
        finally:
            self._waiters.pop(command_id, None)

    def send_nowait(self, op: str) -> None:
        """A command whose answer nobody waits for (``quit``)."""
        self._commands.put_nowait({"id": 0, "op": op, "args": {}})

    # --- HTTP -----------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, path, body = await asyncio.wait_for(_read_request(reader), READ_TIMEOUT_S)
            status, content_type, payload = await self._route(method, path, body)
        except (ValueError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            status, content_type, payload = 400, "text/plain", b"bad request"
        except (ConnectionError, OSError):
            writer.close()
            return
        head = (
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(payload)}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(head.encode() + payload)
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT_S)
        writer.close()

    async def _route(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        prefix = f"/{self.token}/"
        if not path.startswith(prefix):
            return 404, "text/plain", b"not found"
        name = path[len(prefix) :].split("?", 1)[0]
        if method == "GET" and name in PAGE_FILES:
            file = PAGE_FILES[name]
            return 200, CONTENT_TYPES[file[file.rfind(".") :]], self.files[file]
        if method != "POST":
            return 404, "text/plain", b"not found"
        if name == "poll":
            return 200, "application/json", json.dumps(await self._next_command()).encode()
        message = json.loads(body or b"{}")
        if not isinstance(message, dict):
            raise ValueError("not a JSON object")
        if name == "reply":
            self._reply(message)
        elif name == "event":
            self.on_event(str(message.get("kind")), message.get("detail"))
        else:
            return 404, "text/plain", b"not found"
        return 200, "application/json", b"{}"

    async def _next_command(self) -> dict[str, Any]:
        self.ready.set()
        try:
            return await asyncio.wait_for(self._commands.get(), POLL_HOLD_S)
        except TimeoutError:
            return {"op": "none"}

    def _reply(self, message: dict[str, Any]) -> None:
        waiter = self._waiters.get(int(message.get("id") or 0))
        if waiter is None or waiter.done():
            return
        if message.get("ok"):
            waiter.set_result(message.get("result"))
        else:
            waiter.set_exception(PageError(str(message.get("error"))))


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    """Method, path and body of one HTTP/1.1 request (Content-Length bodies only)."""
    request_line = (await reader.readuntil(b"\r\n")).decode("latin-1").strip()
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError(f"bad request line {request_line!r}")
    length = 0
    for _ in range(MAX_HEADER_LINES):
        line = (await reader.readuntil(b"\r\n")).decode("latin-1")
        if line in ("\r\n", "\n"):
            break
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-length":
            length = int(value.strip())
    else:
        raise ValueError("too many header lines")
    if not 0 <= length <= MAX_BODY:
        raise ValueError("body too large")
    body = await reader.readexactly(length) if length else b""
    return parts[0], parts[1], body
