"""Pure parts of the lab agents: outcome classification, result line, priorities, CLI checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest

from lab.agents.agent_result import (
    CANDIDATE_KINDS,
    AgentResult,
    candidate_kind,
    classify_outcome,
    count_candidates,
    format_candidate,
    median_ms,
    relay_candidate_priority,
    throughput_mbps,
)
from lab.agents.aioice.config import build_parser, config_from_args
from lab.agents.contract import HostPort, rest_credentials
from lab.agents.signaling import decode, encode, parse_hostport
from lab.certs import lab_certs

RESULT_KEYS = [
    "peer",
    "role",
    "started_at",
    "impl",
    "impl_version",
    "outcome",
    "local_type",
    "remote_type",
    "relay_protocol",
    "local_candidate",
    "remote_candidate",
    "time_to_connect_s",
    "checks_sent",
    "rtt_ms",
    "throughput_mbps",
    "candidates_gathered",
    "error",
    "duration_s",
]


@pytest.mark.parametrize(
    ("local", "remote", "proto", "expected"),
    [
        ("host", "host", None, "direct"),
        ("srflx", "prflx", None, "direct"),
        ("prflx", "srflx", None, "direct"),
        ("relay", "host", "udp", "relay-udp"),
        ("relay", "relay", "tcp", "relay-tcp"),
        ("relay", "srflx", "tls", "relay-tls"),
        ("host", "relay", None, "relay-remote"),
        ("srflx", "relay", "udp", "relay-remote"),  # a remote relay's transport is not ours
        (None, None, None, "fail"),
        ("host", None, None, "fail"),
    ],
)
def test_agent_classify_outcome_from_pair_types(
    local: str | None, remote: str | None, proto: str | None, expected: str
) -> None:
    assert classify_outcome(local, remote, proto) == expected


@pytest.mark.parametrize(
    ("local", "remote", "proto"),
    [
        ("relay", "host", None),
        ("relay", "host", "sctp"),
        ("bogus", "host", None),
        ("host", "x", None),
    ],
)
def test_agent_classify_outcome_unknown_values_raise(
    local: str, remote: str, proto: str | None
) -> None:
    with pytest.raises(ValueError):
        classify_outcome(local, remote, proto)


def test_agent_relay_priority_orders_udp_over_tcp_over_tls_below_srflx() -> None:
    udp, tcp, tls = (relay_candidate_priority(1, p) for p in ("udp", "tcp", "tls"))
    srflx = (1 << 24) * 100 + (1 << 8) * 65535 + 255  # aioice's srflx priority, component 1
    assert srflx > udp > tcp > tls > 0
    # libwebrtc's type preferences 2 / 1 / 0, local preference 65535, component 1
    assert udp == (2 << 24) + (65535 << 8) + 255
    assert tls == (65535 << 8) + 255
    assert relay_candidate_priority(2, "udp") == udp - 1


def test_agent_candidate_counts_have_every_kind() -> None:
    kinds = [candidate_kind("host", None), candidate_kind("relay", "tls"), "host"]
    assert count_candidates(kinds) == {
        "host": 2,
        "srflx": 0,
        "relay-udp": 0,
        "relay-tcp": 0,
        "relay-tls": 1,
    }
    assert tuple(count_candidates(())) == CANDIDATE_KINDS
    with pytest.raises(ValueError):
        candidate_kind("relay", None)
    with pytest.raises(ValueError):
        count_candidates(["prflx"])


def test_agent_format_candidate_and_unknowns() -> None:
    assert format_candidate("198.18.0.2", 5000, "srflx") == "198.18.0.2:5000 srflx"
    assert format_candidate("2001:db8::1", 9, "host") == "[2001:db8::1]:9 host"
    assert format_candidate(None, 1, "host") is None


def test_agent_median_and_throughput() -> None:
    assert median_ms([0.003, 0.001, 0.002]) == 2.0
    assert median_ms([]) is None
    assert throughput_mbps(1_250_000, 2.0) == 5.0
    assert throughput_mbps(10, 0.0) is None


def test_agent_result_defaults_are_null_and_keys_follow_the_schema() -> None:
    result = AgentResult(peer="a", role="controlling", started_at="2026-01-01T00:00:00.000+00:00")
    data = json.loads(result.to_json())
    assert list(data) == RESULT_KEYS
    assert data["outcome"] == "fail"
    for key in ("local_type", "rtt_ms", "throughput_mbps", "checks_sent", "error"):
        assert data[key] is None
    assert AgentResult.from_json(result.to_json()) == result
    with pytest.raises(ValueError):
        AgentResult.from_dict({**data, "made_up": 1})


def test_agent_result_set_pair_and_first_error_wins() -> None:
    result = AgentResult(peer="b", role="controlled", started_at="t")
    result.set_pair(("127.0.0.1", 40000, "relay"), ("127.0.0.1", 40001, "relay"), "tcp")
    assert (result.outcome, result.relay_protocol) == ("relay-tcp", "tcp")
    assert result.local_candidate == "127.0.0.1:40000 relay"
    result.set_pair(("10.0.0.2", 1, "host"), ("198.18.0.9", 2, "srflx"), "udp")
    assert (result.outcome, result.relay_protocol) == ("direct", None)
    result.fail("peer-left")
    result.fail("timeout")
    assert result.error == "peer-left"


def test_agent_turn_rest_credentials_follow_seed_003() -> None:
    username, password = rest_credentials("s3cret", "a", now=1_700_000_000.7)
    assert username == "1700003600:a"
    digest = hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest()
    assert password == base64.b64encode(digest).decode()


BASE = ["--peer", "a", "--controlling", "--room", "r", "--signaling", "127.0.0.1:4443"]


def _config(*extra: str):  # type: ignore[no-untyped-def]
    return config_from_args(build_parser().parse_args([*BASE, *extra]))


def test_agent_config_defaults_and_ports() -> None:
    cfg = _config(
        "--cafile", "ca.pem", "--timeout", "10", "--turn-tls", "198.18.0.1", "--turn-secret", "s"
    )
    inp = cfg.inputs
    assert inp.turn_for("tls") == HostPort("198.18.0.1", 443) and inp.turn_secret == "s"
    assert inp.signaling == HostPort("127.0.0.1", 4443) and cfg.signaling_tls
    assert inp.exchange == 10 and inp.policy == "all" and inp.role == "controlling"
    assert inp.throughput_mbps is None and cfg.host_ips is None
    assert cfg.nomination_wait == 2.0 and cfg.gather_timeout == 5.0


def test_agent_config_turn_tls_by_name_keeps_the_name(tmp_path: Path) -> None:
    cfg = _config(
        "--cafile", str(lab_certs(tmp_path).ca), "--timeout", "10", "--turn-tls", "turn.lab.test",
        "--turn-udp", "198.18.0.2:443", "--turn-secret", "s", "--nomination-wait", "1",
    )  # fmt: skip
    udp, tls = cfg.turn_endpoints(now=1_700_000_000.0)
    assert (udp.protocol, udp.addr, udp.ssl_context) == ("udp", ("198.18.0.2", 443), None)
    # aioice hands the name to asyncio, which resolves it and checks the certificate against it
    assert (tls.protocol, tls.addr, tls.aioice_transport) == ("tls", ("turn.lab.test", 443), "tcp")
    assert tls.ssl_context is not None and tls.ssl_context.check_hostname
    assert udp.username == tls.username == "1700003600:a"
    assert cfg.nomination_wait == 1.0


@pytest.mark.parametrize(
    "extra",
    [
        ["--cafile", "c", "--timeout", "1"],  # below the minimum timeout
        ["--cafile", "c", "--timeout", "10", "--turn-udp", "1.2.3.4:3478"],  # no secret
        ["--timeout", "10"],  # TLS signaling without a CA
        ["--cafile", "c", "--timeout", "10", "--throughput-mbps", "5"],  # without seconds
        [
            "--cafile",
            "c",
            "--timeout",
            "10",
            "--throughput-mbps",
            "5000",
            "--throughput-seconds",
            "1",
        ],
        ["--cafile", "c", "--timeout", "10", "--exchange", "-1"],
        ["--cafile", "c", "--timeout", "10", "--gather-timeout", "0"],
        ["--cafile", "c", "--timeout", "10", "--nomination-wait", "-1"],
    ],
)
def test_agent_config_rejects_bad_arguments(extra: list[str]) -> None:
    with pytest.raises(ValueError):
        _config(*extra)


def test_agent_signaling_codec_and_addresses() -> None:
    assert parse_hostport("127.0.0.1") == ("127.0.0.1", 443)
    assert parse_hostport("[2001:db8::1]:8443") == ("2001:db8::1", 8443)
    assert parse_hostport("2001:db8::1") == ("2001:db8::1", 443)
    with pytest.raises(ValueError):
        parse_hostport("1.2.3.4:70000")
    line = encode({"type": "offer", "x": [1]})
    assert line.endswith(b"\n") and decode(line) == {"type": "offer", "x": [1]}
    for bad in (b"[1,2]\n", b'{"type": 3}\n', b"nope\n", b"\xff\n"):
        with pytest.raises(ValueError):
            decode(bad)
