"""The datagram data plane (``lab.agents.contract.DataPlane.DATAGRAM``) over a connected aioice
Connection, through its public ``send``/``recv`` only.

Layout, byte for byte as every datagram-plane agent speaks it: a ping is PING, a 4-byte
big-endian sequence number and zero padding to PING_SIZE bytes; its answer is PONG followed by
the ping's bytes after the prefix; a bulk datagram is BULK, a 4-byte big-endian sequence
number and zero padding to DATAGRAM_SIZE bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time

import aioice

from lab.agents.contract import BULK, DATAGRAM_SIZE, PING, PING_SIZE, PONG

BULK_OVERRUN_S = 1.0  # a slow sender stops this long after the planned duration
BULK_TICK_S = 0.001


class DataPlane:
    """Receives everything from the ICE connection: echoes pings, matches pongs, counts bulk."""

    def __init__(self, conn: aioice.Connection) -> None:
        self.conn = conn
        self.pending: dict[int, asyncio.Future[float]] = {}
        self.bulk_bytes = 0
        self.bulk_packets = 0
        self.last_bulk = 0.0
        self.lost = False
        self._task = asyncio.get_running_loop().create_task(self._receive())

    async def _receive(self) -> None:
        while True:
            try:
                data = await self.conn.recv()
            except ConnectionError:
                self.lost = True
                return
            kind = data[:3]
            if kind == PING:
                with contextlib.suppress(ConnectionError):
                    await self.conn.send(PONG + data[3:])
            elif kind == PONG and len(data) >= 7:
                (seq,) = struct.unpack("!I", data[3:7])
                waiter = self.pending.pop(seq, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(time.monotonic())
            elif kind == BULK:
                self.bulk_bytes += len(data)
                self.bulk_packets += 1
                self.last_bulk = time.monotonic()

    async def ping(self, seq: int, timeout: float) -> float | None:
        """One round trip in seconds, or None if no answer within timeout."""
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.pending[seq] = waiter
        payload = PING + struct.pack("!I", seq)
        sent_at = time.monotonic()
        try:
            await self.conn.send(payload + bytes(PING_SIZE - len(payload)))
            return await asyncio.wait_for(waiter, timeout) - sent_at
        except (TimeoutError, ConnectionError):
            return None
        finally:
            self.pending.pop(seq, None)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self._task, 0.5)


def bulk_count(mbps: float, seconds: float) -> int:
    """How many DATAGRAM_SIZE datagrams make ``mbps`` for ``seconds`` (at least one)."""
    return max(1, int(mbps * 1e6 / 8 / DATAGRAM_SIZE * seconds))


async def send_bulk(conn: aioice.Connection, mbps: float, seconds: float) -> tuple[int, float]:
    """Send BULK datagrams paced at ``mbps`` for ``seconds``; (datagrams sent, seconds taken).
    ConnectionError if the connection is lost."""
    per_second = mbps * 1e6 / 8 / DATAGRAM_SIZE
    total = bulk_count(mbps, seconds)
    packet = bytearray(DATAGRAM_SIZE)
    packet[:3] = BULK
    sent, started = 0, time.monotonic()
    stop_at = started + seconds + BULK_OVERRUN_S
    while sent < total and time.monotonic() < stop_at:
        due = min(total, int((time.monotonic() - started) * per_second) + 1)
        while sent < due:
            struct.pack_into("!I", packet, 3, sent)
            await conn.send(bytes(packet))
            sent += 1
        await asyncio.sleep(BULK_TICK_S)
    return sent, time.monotonic() - started
