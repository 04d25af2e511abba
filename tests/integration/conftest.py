"""Fixtures for loopback integration tests of the relay (no Mininet, no root needed)."""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from relayproc import relay_in_thread

if TYPE_CHECKING:
    from relay.server.app import RelayServer

StartRelay = Callable[..., "tuple[RelayServer, tuple[str, int]]"]


def require_relay_server() -> None:
    """Skip (with the reason) while relay/server is not written yet; any other error fails."""
    for module in ("relay.server.app", "relay.server.options", "relay.__main__"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} does not exist yet")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian package coturn)")
    return path


@pytest.fixture
def start_relay() -> Iterator[StartRelay]:
    """start_relay(**ServerOptions fields) -> (server, (host, port)); all closed at teardown."""
    require_relay_server()
    with contextlib.ExitStack() as stack:

        def start(**options: Any) -> tuple[RelayServer, tuple[str, int]]:
            return stack.enter_context(relay_in_thread(**options))

        yield start
