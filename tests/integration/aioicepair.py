"""Two relay-only aioice agents connected through a TURN server, exchanging data both ways:
the one aioice exchange the UDP, TCP and TLS relay tests share."""

from __future__ import annotations

import asyncio
import os
import ssl

from aioice import Connection, TransportPolicy

AIOICE_MESSAGES = 20  # ping/pong rounds, each a datagram relayed both ways

SelectedPair = tuple[str, str, tuple[str, int], tuple[str, int]]


async def relay_pair_exchange(
    server: tuple[str, int],
    username: str,
    password: str,
    *,
    transport: str = "udp",
    turn_ssl: bool | ssl.SSLContext = False,
) -> list[SelectedPair]:
    """Connect two relay-only agents through ``server`` and exchange AIOICE_MESSAGES rounds.

    Returns, per agent, (local type, remote type, local addr, remote addr) of the selected pair.
    """

    def new_agent(controlling: bool) -> Connection:
        return Connection(
            ice_controlling=controlling,
            turn_server=server,
            turn_username=username,
            turn_password=password,
            turn_ssl=turn_ssl,  # aioice hands this to loop.create_connection(ssl=...)
            turn_transport=transport,
            transport_policy=TransportPolicy.RELAY,
            use_ipv6=False,
        )

    a, b = new_agent(True), new_agent(False)
    try:
        await asyncio.wait_for(asyncio.gather(a.gather_candidates(), b.gather_candidates()), 15)
        for agent in (a, b):
            types = [c.type for c in agent.local_candidates]
            assert types == ["relay"], f"gathered {agent.local_candidates}: no TURN allocation"
        for local, remote in ((a, b), (b, a)):
            for candidate in remote.local_candidates:
                await local.add_remote_candidate(candidate)
            await local.add_remote_candidate(None)
            local.remote_username = remote.local_username
            local.remote_password = remote.local_password
        await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), 20)
        for i in range(AIOICE_MESSAGES):
            ping, pong = b"ping %d " % i + os.urandom(i * 50), b"pong %d " % i + os.urandom(i * 7)
            await a.send(ping)
            assert await asyncio.wait_for(b.recv(), 5) == ping
            await b.send(pong)
            assert await asyncio.wait_for(a.recv(), 5) == pong
        pairs = []
        for agent in (a, b):
            # aioice 0.13 has no public accessor for the selected pair of a component.
            pair = agent._nominated[1]
            pairs.append(
                (pair.local_candidate.type, pair.remote_candidate.type, pair.local_addr,
                 pair.remote_addr)
            )  # fmt: skip
        return pairs
    finally:
        await asyncio.wait_for(asyncio.gather(a.close(), b.close()), 10)
