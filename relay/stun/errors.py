"""Errors of the STUN codec: one base, one decode error with an exact reason."""

from __future__ import annotations


class StunError(Exception):
    """Base of every error raised by relay.stun."""


class StunDecodeError(StunError):
    """Bytes that are not a valid STUN message, attribute or ChannelData frame.

    Decoding any input either returns a value or raises this, never anything else.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StunEncodeError(StunError, ValueError):
    """A value that cannot be put on the wire (out-of-range field, oversize message)."""


class SaslPrepError(StunError, ValueError):
    """A string rejected by SASLprep (RFC 4013 §2.3 prohibited output, §2.4 bidi rules)."""
