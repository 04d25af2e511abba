"""Server options: what a turnserver command line or config file says, validated once.

``ServerOptions.turn_config()`` turns them into the core's ``TurnConfig``.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass

from relay.turn.auth import Authenticator, CombinedAuth, RestSecret, StaticUsers
from relay.turn.config import DiscoveryAddresses, TurnConfig
from relay.turn.nonce import FEATURE_PASSWORD_ALGORITHMS, NonceFactory
from relay.turn.peer_policy import PeerPolicy


class OptionsError(ValueError):
    """An option value the server cannot start with."""


@dataclass(frozen=True)
class ServerOptions:
    listening_ips: tuple[str, ...] = ("127.0.0.1",)
    listening_port: int = 3478
    relay_ips: tuple[str, ...] = ()  # empty: the listening addresses
    min_port: int = 49152
    max_port: int = 65535
    realm: str = "natlab"
    lt_cred_mech: bool = False
    users: tuple[tuple[str, str], ...] = ()
    use_auth_secret: bool = False
    static_auth_secrets: tuple[str, ...] = ()
    denied_peer_ips: tuple[str, ...] = ()
    allowed_peer_ips: tuple[str, ...] = ()
    allow_loopback_peers: bool = False
    no_multicast_peers: bool = False
    user_quota: int = 0
    total_quota: int = 0
    software: str = "natlab-relay"
    fingerprint: bool = True
    stale_nonce: float = 600.0
    max_allocate_lifetime: float = 3600.0
    channel_lifetime: float = 600.0
    permission_lifetime: float = 300.0
    verbose: bool = False
    # --- transports (RFC 8656 §3.1: TURN over TCP and TLS) ---
    tls_listening_port: int = 5349
    alt_listening_port: int = 0  # 0: listening_port + 1, as coturn (used for RFC 5780)
    alt_tls_listening_port: int = 0
    extra_udp_ports: tuple[int, ...] = ()  # e.g. 443 next to 3478 (seed 000: UDP on 443)
    no_udp: bool = False
    no_tcp: bool = False
    no_tls: bool = False
    cert: str | None = None
    pkey: str | None = None
    cipher_list: str | None = None
    no_tlsv1: bool = True  # TLS 1.2+ by default
    no_tlsv1_1: bool = True
    # external-ip: (public, private or None) pairs; XOR-RELAYED-ADDRESS shows the public one
    external_ips: tuple[tuple[str, str | None], ...] = ()
    rfc5780: bool = False  # RFC 5780 behaviour discovery; needs two listening addresses
    prometheus: bool = False
    prometheus_port: int = 9641
    prometheus_ip: str = "127.0.0.1"
    log_file: str | None = None
    no_stdout_log: bool = False  # coturn: with a log file, log to the file only
    idle_timeout: float = 60.0  # seconds a stream may stay silent before it is closed
    max_connections: int = 4096
    # coturn's relay-threads: here worker processes sharing the listening ports with
    # SO_REUSEPORT (0 = one per CPU); 1 = a single process
    relay_threads: int = 1
    # the packet loop: "c" (relay/server/_datapath.c, recvmmsg/sendmmsg), "python", or
    # "auto" (c when it was built); env NATLAB_RELAY_DATAPATH overrides it
    datapath: str = "auto"

    def __post_init__(self) -> None:
        if not self.listening_ips:
            raise OptionsError("at least one listening address is needed")
        for ip in (*self.listening_ips, *self.relay_ips):
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise OptionsError(f"not an IP address: {ip!r}") from None
        if not 0 <= self.listening_port <= 65535:
            raise OptionsError(f"listening port {self.listening_port} out of range")
        if not 1 <= self.min_port <= self.max_port <= 65535:
            raise OptionsError(f"bad relay port range {self.min_port}-{self.max_port}")
        if self.rfc5780 and (len(self.listening_ips) < 2 or not self.listening_port):
            raise OptionsError("rfc5780 needs two listening-ip addresses and a fixed port")
        for port in (self.tls_listening_port, self.alt_listening_port, *self.extra_udp_ports):
            if not 0 <= port <= 65535:
                raise OptionsError(f"port {port} out of range")
        if self.relay_threads < 0:
            raise OptionsError("relay-threads must be >= 0")
        if self.datapath not in ("auto", "c", "python"):
            raise OptionsError(f"datapath must be auto, c or python, not {self.datapath!r}")
        if self.use_auth_secret and not self.static_auth_secrets:
            raise OptionsError("use-auth-secret needs static-auth-secret")
        try:
            self.peer_policy()
        except ValueError as err:
            raise OptionsError(str(err)) from None

    @property
    def alt_port(self) -> int:
        """RFC 5780 second port: alt-listening-port, or listening-port + 1 as in coturn."""
        if self.alt_listening_port:
            return self.alt_listening_port
        return self.listening_port + 1 if self.listening_port else 0

    @property
    def udp_ports(self) -> tuple[int, ...]:
        ports = [self.listening_port]
        if self.rfc5780:
            ports.append(self.alt_port)
        # a port named twice (a file and a flag, say) is one listener
        return tuple(dict.fromkeys([*ports, *self.extra_udp_ports]))

    @property
    def tcp_ports(self) -> tuple[int, ...]:
        return (self.listening_port, self.alt_port) if self.rfc5780 else (self.listening_port,)

    @property
    def tls_ports(self) -> tuple[int, ...]:
        return (self.tls_listening_port,)

    @property
    def relay_hosts(self) -> tuple[str, ...]:
        hosts = self.relay_ips or self.listening_ips
        # a wildcard listening address is no relay address: use loopback of that family
        return tuple(
            {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(str(ipaddress.ip_address(h)), h)
            for h in hosts
        )

    def peer_policy(self) -> PeerPolicy:
        return PeerPolicy.from_strings(
            self.denied_peer_ips,
            self.allowed_peer_ips,
            allow_loopback=self.allow_loopback_peers,
            allow_multicast=not self.no_multicast_peers,
        )

    def authenticator(self) -> Authenticator | None:
        parts: list[Authenticator] = []
        if self.use_auth_secret:
            parts.append(RestSecret(self.static_auth_secrets))
        if self.users:
            parts.append(StaticUsers(self.users))
        if not parts:
            if self.lt_cred_mech:
                raise OptionsError("lt-cred-mech needs a user or use-auth-secret")
            return None
        return parts[0] if len(parts) == 1 else CombinedAuth(tuple(parts))

    def turn_config(self, nonce_secret: bytes | None = None) -> TurnConfig:
        """The core's config; workers share one ``nonce_secret`` so any of them accepts a
        nonce another issued (the kernel's reuseport hash moves when a worker restarts)."""
        return TurnConfig(
            realm=self.realm,
            authenticator=self.authenticator(),
            nonces=NonceFactory(
                secret=nonce_secret or secrets.token_bytes(32),
                lifetime=self.stale_nonce,
                features=FEATURE_PASSWORD_ALGORITHMS,
            ),
            peer_policy=self.peer_policy(),
            max_lifetime=max(self.max_allocate_lifetime, 600.0),
            permission_lifetime=self.permission_lifetime,
            channel_lifetime=self.channel_lifetime,
            user_quota=self.user_quota,
            total_quota=self.total_quota,
            software=self.software or None,
            fingerprint=self.fingerprint,
            discovery=(
                DiscoveryAddresses(
                    (self.listening_ips[0], self.listening_ips[1]),
                    (self.listening_port, self.alt_port),
                )
                if self.rfc5780
                else None
            ),
            relay_public={
                private or self.relay_hosts[0]: public for public, private in self.external_ips
            },
        )
