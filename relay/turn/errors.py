"""Errors of the TURN core. A ProtocolError becomes an ERROR-CODE response in one place."""

from __future__ import annotations

from relay.stun.attributes import Attribute
from relay.stun.constants import REASONS


class TurnError(Exception):
    """Base of every error raised by relay.turn."""


class ProtocolError(TurnError):
    """A request that must be answered with an error response (RFC 8489 §14.8)."""

    def __init__(
        self,
        code: int,
        detail: str = "",
        extra: tuple[Attribute, ...] = (),
        *,
        protected: bool = True,
        encoded: bytes = b"",
    ) -> None:
        self.code = code
        self.reason = REASONS.get(code, "Error")
        self.detail = detail
        self.extra = extra
        # more attributes, already encoded (relay.stun encode_tlv), sent after extra: the
        # 401/438 challenge, whose REALM and PASSWORD-ALGORITHMS are encoded once per server
        self.encoded = encoded
        # RFC 8489 §9.2.4: 400/401/420/438 answers carry no MESSAGE-INTEGRITY
        self.protected = protected and code not in (400, 401, 420, 438)
        super().__init__(f"{code} {self.reason}: {detail}" if detail else f"{code} {self.reason}")
