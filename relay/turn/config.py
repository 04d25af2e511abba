"""Configuration of the TURN core: a frozen dataclass, validated at construction.

Policy is passed in as small objects (authenticator, peer policy, nonce factory); the relay
port allocator is handed to ``TurnCore`` directly because it does I/O.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from relay.stun.constants import CHANNEL_MAX, CHANNEL_MAX_RFC5766, PasswordAlgorithm
from relay.turn.auth import Authenticator
from relay.turn.nonce import FEATURE_PASSWORD_ALGORITHMS, NonceFactory
from relay.turn.peer_policy import PeerPolicy

DEFAULT_ALLOCATION_LIFETIME = 600.0  # RFC 8656 §3.2
MAX_ALLOCATION_LIFETIME = 3600.0  # RFC 8656 §7.2 (coturn max-allocate-lifetime)
PERMISSION_LIFETIME = 300.0  # RFC 8656 §9 (fixed by the RFC; coturn makes it configurable)
CHANNEL_LIFETIME = 600.0  # RFC 8656 §12
RESERVATION_LIFETIME = 30.0  # RFC 8656 §7.2: a RESERVATION-TOKEN lives about 30 s


@dataclass(frozen=True)
class DiscoveryAddresses:
    """RFC 5780 §4.1: the server listens on two IPs x two ports for behaviour discovery."""

    ips: tuple[str, str]
    ports: tuple[int, int]

    def other_address(self, local: tuple[str, int]) -> tuple[str, int]:
        """OTHER-ADDRESS (§7.4): the other IP and the other port."""
        return self.changed(local, change_ip=True, change_port=True)

    def changed(
        self, local: tuple[str, int], *, change_ip: bool, change_port: bool
    ) -> tuple[str, int]:
        """The address a response to CHANGE-REQUEST comes from (§6.1)."""
        ip, port = local
        if change_ip:
            ip = self.ips[1] if ip == self.ips[0] else self.ips[0]
        if change_port:
            port = self.ports[1] if port == self.ports[0] else self.ports[0]
        return (ip, port)


@dataclass(frozen=True)
class TurnConfig:
    realm: str = "natlab"
    # None: no authentication at all (coturn without lt-cred-mech / use-auth-secret)
    authenticator: Authenticator | None = None
    nonces: NonceFactory = field(
        default_factory=lambda: NonceFactory(
            secret=secrets.token_bytes(32), features=FEATURE_PASSWORD_ALGORITHMS
        )
    )
    peer_policy: PeerPolicy = field(default_factory=PeerPolicy)
    default_lifetime: float = DEFAULT_ALLOCATION_LIFETIME
    max_lifetime: float = MAX_ALLOCATION_LIFETIME
    permission_lifetime: float = PERMISSION_LIFETIME
    channel_lifetime: float = CHANNEL_LIFETIME
    user_quota: int = 0  # 0 = unlimited (coturn)
    total_quota: int = 0
    software: str | None = "natlab-relay"
    fingerprint: bool = True
    password_algorithms: tuple[PasswordAlgorithm, ...] = (
        PasswordAlgorithm.MD5,
        PasswordAlgorithm.SHA256,
    )
    max_payload: int = 65535  # largest DATA / ChannelData payload relayed
    # Highest channel number ChannelBind accepts: RFC 8656 §12 says 0x4FFF, but RFC 5766
    # clients (coturn's turnutils among them) pick up to 0x7FFF, and coturn accepts them.
    channel_max: int = CHANNEL_MAX_RFC5766
    discovery: DiscoveryAddresses | None = None  # RFC 5780, off by default as in coturn
    # external-ip: private relay host -> public address shown in XOR-RELAYED-ADDRESS
    relay_public: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.realm:
            raise ValueError("realm must not be empty")
        for name in ("default_lifetime", "max_lifetime", "permission_lifetime", "channel_lifetime"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_lifetime < self.default_lifetime:
            raise ValueError("max_lifetime must be >= default_lifetime")
        if self.user_quota < 0 or self.total_quota < 0:
            raise ValueError("quotas must be >= 0")
        if self.channel_max not in (CHANNEL_MAX, CHANNEL_MAX_RFC5766):
            raise ValueError("channel_max must be 0x4FFF (RFC 8656) or 0x7FFF (RFC 5766)")
        if not self.password_algorithms:
            raise ValueError("password_algorithms must not be empty")
