"""Relayed transport addresses as real UDP sockets (the shell's ``RelayPorts``).

Sockets are bound synchronously (the core asks while handling an Allocate) and read with
``loop.add_reader``, which costs no task or protocol object per allocation.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

from relay.server.datapath import READS_PER_WAKEUP, Datapath
from relay.stun.constants import AddressFamily
from relay.turn.addresses import Address, host_family
from relay.turn.ports import PortPool, RelayGrant

log = logging.getLogger("relay.ports")

PeerCallback = Callable[[Address, Address, bytes], None]
RECV_SIZE = 65536
# <linux/in.h>, <linux/in6.h>: not all exported by the socket module
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
IP_PMTUDISC_DO = getattr(socket, "IP_PMTUDISC_DO", 2)


class SocketRelayPorts:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        relay_hosts: tuple[str, ...],
        min_port: int,
        max_port: int,
        on_peer_datagram: PeerCallback,
        *,
        hold_reserved: bool = True,
        datapath: Datapath | None = None,
    ) -> None:
        self.loop = loop
        self.datapath = datapath  # the C packet loop, when it runs
        # worker mode: a reserved port is only marked taken, not held, so that the worker the
        # claiming Allocate reaches can bind it (the bind itself then decides who owns it)
        self.hold_reserved = hold_reserved
        self.hosts = {host_family(h): h for h in reversed(relay_hosts)}  # first per family wins
        self.pools = {h: PortPool(min_port, max_port) for h in self.hosts.values()}
        self.on_peer_datagram = on_peer_datagram
        self.sockets: dict[Address, socket.socket] = {}
        self.reserved: dict[Address, socket.socket] = {}
        self.counters: dict[str, int] = {"peer_send_dropped": 0}

    def families(self) -> frozenset[AddressFamily]:
        return frozenset(self.hosts)

    def open(
        self,
        family: AddressFamily,
        *,
        even: bool = False,
        reserve_next: bool = False,
        dont_fragment: bool = False,
    ) -> RelayGrant | None:
        host = self.hosts.get(family)
        if host is None:
            return None
        pool = self.pools[host]
        for attempt, port in enumerate(pool.candidates(even=even, pair=reserve_next)):
            if attempt >= 64:  # ports taken by other programs: give up rather than scan all
                break
            sock = self._bind(host, port)
            if sock is None:
                continue
            second = None
            if reserve_next:
                second = self._bind(host, port + 1)
                if second is None:
                    sock.close()
                    continue
            pool.take(port)
            address = (host, port)
            if dont_fragment:
                _set_dont_fragment(sock)
            self._start(address, sock)
            reserved = None
            if second is not None:
                pool.take(port + 1)
                reserved = (host, port + 1)
                if self.hold_reserved:
                    self.reserved[reserved] = second
                else:
                    second.close()
            return RelayGrant(address, reserved)
        return None

    def open_reserved(self, address: Address) -> bool:
        sock = self.reserved.pop(address, None)
        if sock is None and not self.hold_reserved and address[0] in self.pools:
            sock = self._bind(*address)  # reserved by another worker, left unbound for us
        if sock is None:
            return False
        self._start(address, sock)
        return True

    def fd_of(self, address: Address) -> int | None:
        sock = self.sockets.get(address)
        return sock.fileno() if sock is not None else None

    def close(self, address: Address) -> None:
        if self.datapath is not None:
            self.datapath.forget_relay(address)  # before the descriptor number can be reused
        sock = self.sockets.pop(address, None)
        if sock is not None:
            self.loop.remove_reader(sock.fileno())
        else:
            sock = self.reserved.pop(address, None)
        if sock is not None:
            sock.close()
        pool = self.pools.get(address[0])
        if pool is not None:
            pool.give_back(address[1])

    def close_all(self) -> None:
        for address in [*self.sockets, *self.reserved]:
            self.close(address)

    def send(self, relay: Address, peer: Address, data: bytes) -> None:
        sock = self.sockets.get(relay)
        if sock is None:
            return
        try:
            sock.sendto(data, peer)
        except (BlockingIOError, InterruptedError):
            self.counters["peer_send_dropped"] += 1  # UDP: a full buffer is loss, not a wait
        except OSError as err:
            self.counters["peer_send_dropped"] += 1
            log.debug("send %s -> %s failed: %s", relay, peer, err)

    def _bind(self, host: str, port: int) -> socket.socket | None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((host, port))
        except OSError as err:
            sock.close()
            if err.errno not in (errno.EADDRINUSE, errno.EACCES):
                log.warning("cannot bind relay port %s:%d: %s", host, port, err)
            return None
        return sock

    def _start(self, address: Address, sock: socket.socket) -> None:
        self.sockets[address] = sock
        if self.datapath is None:
            self.loop.add_reader(sock.fileno(), self._readable, address, sock)
        else:
            self.loop.add_reader(sock.fileno(), self._readable_c, address, sock.fileno())

    def _readable(self, address: Address, sock: socket.socket) -> None:
        for _ in range(READS_PER_WAKEUP):
            try:
                data, peer = sock.recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # e.g. ICMP port unreachable surfaced as ECONNREFUSED
                log.debug("relay %s recv error: %s", address, err)
                continue
            self.on_peer_datagram(address, (peer[0], peer[1]), data)

    def _readable_c(self, address: Address, fd: int) -> None:
        """The C loop sends peers' datagrams with a channel route; the rest goes up as above."""
        datapath = self.datapath
        assert datapath is not None
        routes = datapath.peer_routes.get(address, datapath.empty)
        for data, peer in datapath.forwarder.from_peers(fd, routes, READS_PER_WAKEUP):
            self.on_peer_datagram(address, peer, data)


def _set_dont_fragment(sock: socket.socket) -> None:
    """Linux path-MTU discovery "do": the kernel sets DF and never fragments locally."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IP_PMTUDISC_DO)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
