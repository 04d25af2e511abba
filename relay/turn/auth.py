"""Long-term credential lookup (RFC 8489 §9.2): static users and coturn's TURN REST secret.

An authenticator maps (username, realm, password algorithm, now) to candidate keys; the core
tries each key against MESSAGE-INTEGRITY(-SHA256). It never sees a password on the wire.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from relay.stun.constants import PasswordAlgorithm
from relay.stun.integrity import long_term_key, saslprep
from relay.stun.mac import hmac_sha1

REST_SEPARATOR = ":"  # coturn rest-api-separator default
_MD5_KEY_HEX_DIGITS = 32  # coturn user=name:0x<hex>: a precomputed 16-byte MD5 key
_KEY_VALUE = re.compile(r"0x([0-9a-fA-F]{32})")
_TIMESTAMP = re.compile(r"[0-9]{1,20}")  # ASCII digits only; str.isdigit would take "١٢"
_ALGORITHMS = frozenset({PasswordAlgorithm.MD5, PasswordAlgorithm.SHA256})
REST_CACHE_SIZE = 4096  # REST usernames whose keys are kept; cleared when full


@dataclass(frozen=True)
class KeyLookup:
    """Candidate long-term keys; empty keys come with a reason.

    Reasons: "unknown-user", "expired", "bad-username", "algorithm-unavailable", and
    "bad-realm" (the realm fails OpaqueString/SASLprep, so no key can be derived).
    """

    keys: tuple[bytes, ...]
    reason: str | None = None


class Authenticator(Protocol):
    def lookup(self, username: str, realm: str, algorithm: int, now: float) -> KeyLookup: ...


@dataclass(frozen=True)
class StaticUsers:
    """coturn ``user=name:password`` and ``user=name:0x<32 hex>`` (a precomputed MD5 key).

    A later entry for the same name replaces an earlier one, as coturn's map does. A value
    starting with "0x" must be exactly 32 hex digits (coturn would silently load a broken key).
    """

    users: tuple[tuple[str, str], ...] = ()
    _by_name: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, value in self.users:
            if value.startswith("0x") and not _KEY_VALUE.fullmatch(value):
                raise ValueError(
                    f"user {name!r}: a 0x key must be {_MD5_KEY_HEX_DIGITS} hex digits"
                )
            try:
                saslprep(value, allow_unassigned=True)  # as long_term_key will apply it
            except ValueError as exc:
                raise ValueError(f"user {name!r}: password not usable: {exc}") from None
        object.__setattr__(self, "_by_name", dict(self.users))

    def lookup(self, username: str, realm: str, algorithm: int, now: float) -> KeyLookup:
        if algorithm not in _ALGORITHMS:
            return KeyLookup((), "algorithm-unavailable")
        value = self._by_name.get(username)
        if value is None:
            return KeyLookup((), "unknown-user")
        precomputed = _KEY_VALUE.fullmatch(value)
        if precomputed:
            # The stored key is MD5(name:realm:password); a SHA-256 key can't be derived from it.
            if algorithm != PasswordAlgorithm.MD5:
                return KeyLookup((), "algorithm-unavailable")
            return KeyLookup((bytes.fromhex(precomputed.group(1)),))
        return _derive(username, realm, (value,), algorithm)


def _derive(username: str, realm: str, passwords: Iterable[str], algorithm: int) -> KeyLookup:
    """Long-term keys for each password (duplicates dropped, order kept)."""
    keys: list[bytes] = []
    try:
        for password in passwords:
            key = long_term_key(username, realm, password, algorithm)
            if key not in keys:
                keys.append(key)
    except ValueError:
        # Passwords are checked at construction, so SASLprep refused the (client's) realm.
        return KeyLookup((), "bad-realm")
    return KeyLookup(tuple(keys))


def rest_password(secret: str, username: str) -> str:
    """TURN REST password: base64(HMAC-SHA1(secret, username)) (draft-uberti-behave-turn-rest)."""
    digest = hmac_sha1(secret.encode("utf-8"), username.encode("utf-8"))
    return base64.b64encode(digest).decode("ascii")


def _split_rest_username(username: str) -> tuple[int, str] | None:
    """(expiry, user) of a REST username, or None if it carries no timestamp.

    Forms, as coturn's get_rest_api_timestamp reads them (first separator only):
    "<ts>", "<ts>:<user>", and "<user>:<ts>" when the part before the separator is not all
    digits. Anything else (no all-digit timestamp where one is expected) is None.
    """
    head, sep, tail = username.partition(REST_SEPARATOR)
    if _TIMESTAMP.fullmatch(head):
        return int(head), tail
    if sep and _TIMESTAMP.fullmatch(tail):
        return int(tail), head
    return None


@dataclass(frozen=True)
class RestSecret:
    """coturn ``use-auth-secret`` + ``static-auth-secret`` (one candidate key per secret).

    Several secrets allow rotation: credentials minted with any of them are accepted. Expired
    means expiry < now (coturn's turn_time_before), so a credential is valid in its last second.
    """

    secrets: tuple[str, ...]
    # (username, realm, algorithm) -> (expiry or None, keys): a client sends the same username
    # with every request, and deriving its key costs two HMACs and a parse. Only the derivation
    # is kept: the expiry is still compared with ``now`` on each lookup.
    _cache: dict[tuple[str, str, int], tuple[int | None, KeyLookup]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self.secrets:
            raise ValueError("RestSecret needs at least one static-auth-secret")

    def lookup(self, username: str, realm: str, algorithm: int, now: float) -> KeyLookup:
        entry = (username, realm, algorithm)
        cached = self._cache.get(entry)
        if cached is None:
            cached = self._uncached(username, realm, algorithm)
            if len(self._cache) >= REST_CACHE_SIZE:
                self._cache.clear()
            self._cache[entry] = cached
        expiry, result = cached
        if expiry is not None and expiry < now:
            return KeyLookup((), "expired")
        return result

    def _uncached(self, username: str, realm: str, algorithm: int) -> tuple[int | None, KeyLookup]:
        """The lookup but for the time: "bad-username" (no expiry), else the expiry and the keys
        or a reason ("algorithm-unavailable", "bad-realm": given only if not expired)."""
        parsed = _split_rest_username(username)
        if parsed is None:
            return None, KeyLookup((), "bad-username")
        expiry, _user = parsed
        if algorithm not in _ALGORITHMS:
            return expiry, KeyLookup((), "algorithm-unavailable")
        passwords = (rest_password(secret, username) for secret in self.secrets)
        return expiry, _derive(username, realm, passwords, algorithm)


@dataclass(frozen=True)
class CombinedAuth:
    """Ask each part in order; the first that returns keys wins.

    With no keys anywhere, the first reason other than "unknown-user" is returned (it says
    more, e.g. "expired"); "unknown-user" only if every part said so (or there are no parts).
    """

    parts: tuple[Authenticator, ...]

    def lookup(self, username: str, realm: str, algorithm: int, now: float) -> KeyLookup:
        reason: str | None = None
        for part in self.parts:
            result = part.lookup(username, realm, algorithm, now)
            if result.keys:
                return result
            if reason is None and result.reason != "unknown-user":
                reason = result.reason
        return KeyLookup((), reason or "unknown-user")


def quota_identity(username: str) -> str:
    """Whom user-quota counts: the user part of a REST username, else the username itself.

    "1700000000:alice" and "alice:1700000000" -> "alice"; a bare timestamp stays as it is.
    """
    parsed = _split_rest_username(username)
    if parsed is None or not parsed[1]:
        return username
    return parsed[1]
