"""Allocation quotas (coturn's user-quota and total-quota): a policy object the core asks before
an Allocate binds ports, so that several worker processes can share one ledger.

``LocalQuota`` counts in this process. The shell's worker mode passes a ledger backed by
shared memory instead (relay/server/workers.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol


class QuotaLedger(Protocol):
    def acquire(self, user: str) -> int | None:
        """Count one more allocation of ``user``; or the ERROR-CODE refusing it
        (486 per-user quota, RFC 8656 §7.2 step 7; 508 server-wide capacity)."""
        ...

    def release(self, user: str) -> None: ...


class LocalQuota:
    def __init__(self, user_quota: int = 0, total_quota: int = 0) -> None:
        self.user_quota = user_quota  # 0: unlimited, as in coturn
        self.total_quota = total_quota
        self.per_user: Counter[str] = Counter()
        self.total = 0

    def acquire(self, user: str) -> int | None:
        if self.user_quota and self.per_user[user] >= self.user_quota:
            return 486
        if self.total_quota and self.total >= self.total_quota:
            return 508
        self.per_user[user] += 1
        self.total += 1
        return None

    def release(self, user: str) -> None:
        if self.per_user[user] <= 1:
            self.per_user.pop(user, None)
        else:
            self.per_user[user] -= 1
        self.total = max(0, self.total - 1)
