"""Worker mode (-m N): processes share the ports with SO_REUSEPORT, quotas hold across them,
and a RESERVATION-TOKEN issued by one worker can be claimed through another."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess

import pytest
from rawturn import RawTurnClient, error_code
from relayproc import LOOPBACK, relay_subprocess

from relay.server.options import OptionsError
from relay.server.workers import SharedQuota, SharedReservations, port_slices
from relay.stun.attributes import EvenPort, RequestedTransport, ReservationToken
from relay.stun.constants import Method

CREDS = ("-a", "-u", "alice:wonderland", "-r", "natlab", "--allow-loopback-peers")


def test_workers_port_slices_are_disjoint_and_cover_the_range() -> None:
    slices = port_slices(50000, 50999, 3)
    assert slices[0][0] == 50000 and slices[-1][1] == 50999
    for (_, high), (low, _) in itertools.pairwise(slices):
        assert low == high + 1
    with pytest.raises(OptionsError):
        port_slices(50000, 50002, 2)


def test_workers_shared_quota_holds_across_fork() -> None:
    quota = SharedQuota(user_quota=2, total_quota=3)
    pid = os.fork()
    if pid == 0:  # the child takes one allocation of alice's budget
        os._exit(0 if quota.acquire("alice") is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert quota.acquire("alice") is None
    assert quota.acquire("alice") == 486  # two already, one of them from the other process
    assert quota.acquire("bob") is None
    assert quota.acquire("carol") == 508  # total of three reached
    quota.release("alice")
    assert quota.acquire("carol") is None


def test_workers_shared_reservations_put_take_expire() -> None:
    book = SharedReservations(("127.0.0.1",))
    book.put(b"12345678", ("127.0.0.1", 50001), expires=100.0)
    assert book.take(b"12345678", now=50.0) == ("127.0.0.1", 50001)
    assert book.take(b"12345678", now=50.0) is None  # taken once
    book.put(b"abcdefgh", ("127.0.0.1", 50003), expires=100.0)
    assert book.take(b"abcdefgh", now=101.0) is None  # expired


def test_workers_user_quota_enforced_across_workers() -> None:
    with relay_subprocess(*CREDS, "-m", "2", "--user-quota", "1") as relay:
        clients = [RawTurnClient((LOOPBACK, relay.port), "alice", "wonderland") for _ in range(8)]
        try:
            codes = [
                error_code(c.request(Method.ALLOCATE, RequestedTransport(17))) for c in clients
            ]
        finally:
            for c in clients:
                c.close()
    assert codes.count(None) == 1, codes
    assert codes.count(486) == 7, codes


def test_workers_reservation_token_claimed_from_any_worker() -> None:
    with relay_subprocess(*CREDS, "-m", "2", "--min-port", "52000", "--max-port", "52999") as relay:
        first = RawTurnClient((LOOPBACK, relay.port), "alice", "wonderland")
        reply = first.request(Method.ALLOCATE, RequestedTransport(17), EvenPort(reserve=True))
        token = reply.get(ReservationToken)
        assert token is not None
        # a fresh 5-tuple: the kernel may hash it to either worker; both must accept the token
        other = RawTurnClient((LOOPBACK, relay.port), "alice", "wonderland")
        code = error_code(other.request(Method.ALLOCATE, RequestedTransport(17), token))
        other.close()
        first.close()
    assert code is None


@pytest.mark.interop
def test_workers_uclient_zero_loss_with_even_port_pairs() -> None:
    if shutil.which("turnutils_uclient") is None:
        pytest.skip("coturn's turnutils_uclient is not installed")
    with relay_subprocess(*CREDS, "-m", "2", "--min-port", "53000", "--max-port", "53999") as relay:
        out = subprocess.run(
            [
                "turnutils_uclient",
                "-y",
                "-n",
                "50",
                "-m",
                "4",
                "-l",
                "170",
                "-u",
                "alice",
                "-w",
                "wonderland",
                "-r",
                "natlab",
                "-p",
                str(relay.port),
                LOOPBACK,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    lost = re.search(r"Total lost packets (\d+)", out)
    received = re.findall(r"tot_recv_msgs=(\d+)", out)  # the last line is the total
    assert lost is not None and received, out[-2000:]
    assert int(lost.group(1)) == 0 and int(received[-1]) > 0, out[-2000:]
