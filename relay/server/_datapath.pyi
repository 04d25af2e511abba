# Types of the C extension relay/server/_datapath.c (see relay/server/datapath.py).
BATCH: int

class Forwarder:
    def __init__(
        self,
        max_payload: int,
        channel_max: int,
        send_peer_type: int,
        send_data_type: int,
        send_ignored_types: tuple[int, ...],
    ) -> None: ...
    def from_clients(
        self,
        fd: int,
        channel_routes: dict[bytes, tuple[int, bytes, float]],
        send_routes: dict[bytes, tuple[int, bytes, float]],
        max_reads: int,
        /,
    ) -> list[tuple[bytes, tuple[str, int]]]: ...
    def from_peers(
        self, fd: int, routes: dict[bytes, tuple[int, bytes, float, int]], max_reads: int, /
    ) -> list[tuple[bytes, tuple[str, int]]]: ...
    def counters(self) -> dict[str, int]: ...

def sockaddr(host: str, port: int, /) -> bytes: ...
