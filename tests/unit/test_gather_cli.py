"""``natlab gather`` without a browser: the command line, ICE server URLs, the TURN REST
credentials, reading the page's answer, verdicts, exit status and the table and JSON output."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from lab.agents.browser.gather import (
    BROWSER_REASONS,
    CandidateError,
    GatheredCandidate,
    GatherReport,
    GatherUsageError,
    IceUrl,
    UrlResult,
    credentials_from,
    exit_status,
    format_table,
    ice_server,
    main,
    parse_args,
    parse_ice_url,
    result_from_page,
    to_json,
)
from lab.agents.browser.iceservers import host_resolver_rules
from lab.cli import main as natlab_main
from relay.stun.constants import REASONS

NOW = 1_700_000_000.0
TURN_UDP = "turn:turn.lab.test:3478?transport=udp"
TURN_TCP = "turn:turn.lab.test:3478?transport=tcp"
TURNS = "turns:turn.lab.test:443?transport=tcp"
STUN = "stun:198.18.0.2:3478"


# --- URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "url", "scheme", "host", "port", "transport"),
    [
        ("stun:198.18.0.2", STUN, "stun", "198.18.0.2", 3478, "udp"),
        ("stun:turn.lab.test:3479", "stun:turn.lab.test:3479", "stun", "turn.lab.test", 3479,
         "udp"),
        ("turn:turn.lab.test", TURN_UDP, "turn", "turn.lab.test", 3478, "udp"),
        (TURN_TCP, TURN_TCP, "turn", "turn.lab.test", 3478, "tcp"),
        ("TURN:turn.lab.test?transport=TCP", TURN_TCP, "turn", "turn.lab.test", 3478, "tcp"),
        (TURNS, TURNS, "turns", "turn.lab.test", 443, "tcp"),
        ("turns:turn.lab.test", "turns:turn.lab.test:5349?transport=tcp", "turns", "turn.lab.test",
         5349, "tcp"),
        ("turn:[2001:db8::2]:3478?transport=udp", "turn:[2001:db8::2]:3478?transport=udp", "turn",
         "2001:db8::2", 3478, "udp"),
    ],
)  # fmt: skip
def test_gather_url_parses_and_spells_out_port_and_transport(
    text: str, url: str, scheme: str, host: str, port: int, transport: str
) -> None:
    parsed = parse_ice_url(text)
    assert parsed == IceUrl(scheme, host, port, transport)
    assert parsed.url == url
    assert parse_ice_url(parsed.url) == parsed


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("http://turn.lab.test", "unknown scheme 'http'"),
        ("turn.lab.test:3478", "unknown scheme"),
        ("stuns:turn.lab.test", "unknown scheme 'stuns'"),
        ("turn://turn.lab.test", "no '//'"),
        ("stun:turn.lab.test?transport=udp", "takes no"),
        ("turn:turn.lab.test?transport=sctp", "transport 'sctp'"),
        ("turns:turn.lab.test:443?transport=udp", "transport=tcp"),
        ("turn:turn.lab.test?proto=udp", "only query"),
        ("turn:", "no host"),
        ("turn::3478", "no host"),
        ("turn:turn.lab.test:0", "1-65535"),
        ("turn:turn.lab.test:65536", "1-65535"),
        ("turn:turn.lab.test:34a", "1-65535"),
        ("turn:2001:db8::2:3478", "brackets"),
        ("turn:[2001:db8::2", "without ']'"),
        ("turn:[nope]:3478", "not an IPv6 address"),
        ("turn:[2001:db8::2]3478", "':PORT'"),
        ("turn:bad host:3478", "neither a host name"),
    ],
)
def test_gather_url_bad_is_a_clear_usage_error(text: str, says: str) -> None:
    with pytest.raises(GatherUsageError) as err:
        parse_ice_url(text)
    assert says in str(err.value)
    assert repr(text) in str(err.value)


# --- the command line ---------------------------------------------------------------------


def test_gather_args_stun_only_needs_no_credentials() -> None:
    request = parse_args(["--ice-server", "stun:198.18.0.2"], NOW)
    assert [u.url for u in request.urls] == [STUN]
    assert request.credentials is None
    assert (request.browser, request.policy, request.json) == ("chromium", "all", False)


def test_gather_args_same_url_twice_gathers_once() -> None:
    request = parse_args(
        ["--ice-server", "turn:turn.lab.test", "--ice-server", TURN_UDP, "--secret", "s"], NOW
    )
    assert [u.url for u in request.urls] == [TURN_UDP]


def test_gather_args_secret_makes_the_seeds_rest_credentials() -> None:
    request = parse_args(["--ice-server", TURNS, "--secret", "s3cret"], NOW)
    assert request.credentials is not None
    # seed 003: username = now + expiry; password = base64(HMAC-SHA1(secret, username))
    username = f"{int(NOW) + 3600}:natlab-gather"
    digest = hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest()
    assert request.credentials.username == username
    assert request.credentials.password == base64.b64encode(digest).decode()
    server = ice_server(request.urls[0], request.credentials).to_js()
    assert server == {
        "urls": TURNS,
        "username": username,
        "credential": request.credentials.password,
    }


def test_gather_args_static_credentials_go_to_turn_urls_only() -> None:
    request = parse_args(
        ["--ice-server", STUN, "--ice-server", TURN_TCP, "--user", "alice", "--password", "pw"],
        NOW,
    )
    stun, turn = request.urls
    assert ice_server(stun, request.credentials).to_js() == {"urls": STUN}
    assert ice_server(turn, request.credentials).to_js() == {
        "urls": TURN_TCP,
        "username": "alice",
        "credential": "pw",
    }


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "--ice-server"),
        (["--ice-server", "http://x"], "unknown scheme"),
        (["--ice-server", TURN_UDP], "needs credentials"),
        (["--ice-server", TURN_UDP, "--user", "u"], "go together"),
        (["--ice-server", TURN_UDP, "--password", "p"], "go together"),
        (["--ice-server", TURN_UDP, "--user", "u", "--password", "p", "--secret", "s"], "not both"),
        (["--ice-server", TURN_UDP, "--secret", ""], "--secret is empty"),
        (["--ice-server", TURN_UDP, "--secret", "s", "--timeout", "0"], "--timeout"),
        (["--ice-server", TURN_UDP, "--secret", "s", "--timeout", "600"], "--timeout"),
        (["--ice-server", TURN_UDP, "--secret", "s", "--timeout", "soon"], "invalid float"),
        (["--ice-server", TURN_UDP, "--secret", "s", "--browser", "opera"], "invalid choice"),
        (["--ice-server", TURN_UDP, "--secret", "s", "--policy", "none"], "invalid choice"),
        (["--ice-server", STUN, "--policy", "relay"], "give a TURN URL"),
        (["--ice-server", STUN, "--ice-server", TURN_UDP, "--secret", "s", "--policy", "relay"],
         "no srflx"),
        (["--ice-server", TURNS, "--secret", "s", "--cafile", "/nonexistent/ca.pem"],
         "cannot read --cafile"),
        (["--ice-server", STUN, "--bogus"], "unrecognized arguments"),
    ],
)  # fmt: skip
def test_gather_main_bad_command_line_exits_2_without_traceback(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err
    assert "natlab gather: error:" in err
    assert "Traceback" not in err


def test_gather_natlab_command_hands_every_word_to_gather(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # the first word after "gather" is an option: argparse.REMAINDER alone would drop it
    assert natlab_main(["gather", "--ice-server", "turn:turn.lab.test?transport=sctp"]) == 2
    err = capsys.readouterr().err
    assert "transport 'sctp'" in err
    assert "unrecognized arguments" not in err


def test_gather_main_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "--ice-server URL" in capsys.readouterr().out


def test_gather_credentials_none_without_any() -> None:
    assert credentials_from(None, None, None, NOW) is None


def test_gather_workdir_unusable_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    from lab.agents.chromium.browser import CHROMIUM

    if CHROMIUM.missing():
        pytest.skip(f"chromium is not installed here: {CHROMIUM.missing()}")
    assert main(["--ice-server", STUN, "--workdir", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert "cannot use --workdir" in err and "Traceback" not in err


# --- what the page answered ---------------------------------------------------------------

HOST = "candidate:1 1 udp 2113937151 198.18.9.2 50000 typ host generation 0"
SRFLX = "candidate:2 1 udp 1677729535 198.18.1.1 40000 typ srflx raddr 198.18.9.2 rport 50000"
RELAY_TCP = "candidate:3 1 udp 33562367 198.18.0.2 49152 typ relay raddr 198.18.9.2 rport 50001"
RELAY_TLS = "candidate:4 1 udp 16785151 198.18.0.2 49153 typ relay raddr 198.18.9.2 rport 50002"
ICE_TCP = "candidate:5 1 tcp 1518280447 198.18.9.2 9 typ host tcptype active"


def _reply(**extra: Any) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "candidates": [
            {"candidate": HOST, "ms": 12.5, "relayProtocol": None, "url": None},
            {"candidate": ICE_TCP, "ms": 12.9},
            {"candidate": SRFLX, "ms": 20.1},
            {"candidate": RELAY_TCP, "ms": 60.0},
            # no stats entry: the event's own relayProtocol says it
            {"candidate": RELAY_TLS, "ms": 80.0, "relayProtocol": "tls"},
            {"candidate": "not a candidate", "ms": 1.0},
            "junk",
        ],
        "errors": [
            {"code": 701, "text": "TURN host lookup received error.", "url": TURN_TCP, "ms": 30},
            {"code": 401, "text": "", "url": TURN_TCP, "address": "0.0.0.x", "port": 1, "ms": 50},
        ],
        "stats": [
            {"address": "198.18.0.2", "port": 49152, "protocol": "udp", "candidateType": "relay",
             "relayProtocol": "tcp", "url": TURN_TCP},
            {"address": "198.18.9.2", "port": 50000, "protocol": "udp", "candidateType": "host"},
        ],
        "complete": True,
        "gatherMs": 95.25,
    }  # fmt: skip
    reply.update(extra)
    return reply


def test_gather_page_answer_becomes_candidates_and_errors() -> None:
    result = result_from_page(parse_ice_url(TURN_TCP), _reply())
    assert [
        (c.type, c.protocol, c.endpoint, c.relay_protocol, c.ms) for c in result.candidates
    ] == [
        ("host", "udp", "198.18.9.2:50000", None, 12.5),
        ("host", "tcp", "198.18.9.2:9", None, 12.9),
        ("srflx", "udp", "198.18.1.1:40000", None, 20.1),
        ("relay", "udp", "198.18.0.2:49152", "tcp", 60.0),
        ("relay", "udp", "198.18.0.2:49153", "tls", 80.0),
    ]
    assert [(e.code, e.label, e.url) for e in result.errors] == [
        (701, "701 TURN host lookup received error.", TURN_TCP),
        (401, f"401 {REASONS[401]}", TURN_TCP),  # Firefox gives no text: the RFC's phrase
    ]
    assert result.complete and result.gather_ms == 95.25 and result.failure is None


def test_gather_page_answer_relay_protocol_from_the_stats_url() -> None:
    stats = [{"address": "198.18.0.2", "port": 49152, "protocol": "udp", "url": TURNS}]
    reply = _reply(candidates=[{"candidate": RELAY_TCP, "ms": 5}], stats=stats)
    (relay,) = result_from_page(parse_ice_url(TURNS), reply).candidates
    assert relay.relay_protocol == "tls"


def test_gather_page_answer_unusable_is_a_failure() -> None:
    for reply in (None, "ok", [1, 2]):
        result = result_from_page(parse_ice_url(TURN_UDP), reply)
        assert result.failure and not result.ok


def test_gather_page_answer_odd_fields_are_ignored() -> None:
    reply = {"candidates": [{"candidate": HOST, "ms": True}], "errors": [{"code": "401"}],
             "stats": "none", "complete": "yes"}  # fmt: skip
    result = result_from_page(parse_ice_url(STUN), reply)
    assert result.candidates[0].ms is None
    assert result.errors[0].code is None and result.errors[0].label == "?"
    assert not result.complete


# --- verdicts and exit status -------------------------------------------------------------


def _candidate(kind: str, relay: str | None = None) -> GatheredCandidate:
    return GatheredCandidate(kind, "udp", "198.18.0.2", 49152, relay, 10.0, f"... typ {kind}")


def _error(code: int, text: str = "") -> CandidateError:
    return CandidateError(code, text, None, None, None, 30.0)


def test_gather_turn_url_ok_with_a_relay_candidate() -> None:
    result = UrlResult(
        parse_ice_url(TURN_TCP), (_candidate("host"), _candidate("relay", "tcp")), complete=True
    )
    assert result.ok
    assert result.summary == f"{TURN_TCP}: 1 relay candidate (tcp)"


def test_gather_turn_url_without_relay_candidate_fails_naming_the_server_error_first() -> None:
    errors = (_error(701, "TURN host lookup received error."), _error(401), _error(401))
    result = UrlResult(parse_ice_url(TURN_UDP), (_candidate("host"),), errors, complete=True)
    assert not result.ok
    assert result.summary == (
        f"{TURN_UDP}: no relay candidate: 401 {REASONS[401]}; 701 TURN host lookup received error."
    )


def test_gather_turn_url_srflx_alone_is_not_enough() -> None:
    result = UrlResult(parse_ice_url(TURN_UDP), (_candidate("srflx"),), complete=True)
    assert not result.ok
    assert result.summary.endswith("no relay candidate: gathering completed without an error")


def test_gather_701_without_text_reads_as_unreachable() -> None:
    result = UrlResult(parse_ice_url(TURNS), (), (_error(701),), complete=True)
    assert result.summary == f"{TURNS}: no relay candidate: 701 {BROWSER_REASONS[701]}"


def test_gather_stun_url_ok_with_srflx_or_without_nat() -> None:
    url = parse_ice_url(STUN)
    assert UrlResult(url, (_candidate("host"), _candidate("srflx")), complete=True).ok
    no_nat = UrlResult(url, (_candidate("host"),), complete=True)
    assert no_nat.ok
    assert "no NAT" in no_nat.summary


def test_gather_stun_url_fails_on_error_or_no_completion() -> None:
    url = parse_ice_url(STUN)
    failed = UrlResult(url, (_candidate("host"),), (_error(701),), complete=True)
    assert not failed.ok
    assert failed.summary == f"{STUN}: no srflx candidate: 701 {BROWSER_REASONS[701]}"
    slow = UrlResult(url, (_candidate("host"),), complete=False, gather_ms=10000.4)
    assert not slow.ok
    assert slow.summary == f"{STUN}: no srflx candidate: gathering did not complete in 10000 ms"


def test_gather_exit_status_is_0_only_when_every_url_is_ok() -> None:
    good_turn = UrlResult(parse_ice_url(TURNS), (_candidate("relay", "tls"),), complete=True)
    good_stun = UrlResult(parse_ice_url(STUN), (_candidate("srflx"),), complete=True)
    bad_turn = UrlResult(parse_ice_url(TURN_UDP), (), (_error(401),), complete=True)
    not_gathered = UrlResult(parse_ice_url(TURN_TCP), failure="turn.lab.test does not resolve")
    assert exit_status([good_turn, good_stun]) == 0
    assert exit_status([good_turn, bad_turn]) == 1
    assert exit_status([good_stun, not_gathered]) == 1
    assert exit_status([]) == 1
    assert not_gathered.summary == f"{TURN_TCP}: not gathered: turn.lab.test does not resolve"


# --- output -------------------------------------------------------------------------------


def _report() -> GatherReport:
    tcp = result_from_page(parse_ice_url(TURN_TCP), _reply())
    bad = UrlResult(parse_ice_url(TURN_UDP), (), (_error(401, "Unauthorized."),), complete=True)
    gone = UrlResult(parse_ice_url(TURNS), failure="page: no answer")
    return GatherReport("chromium", "Chromium 156.0", "all", 10.0, (tcp, bad, gone))


def test_gather_table_lists_candidates_and_errors_in_time_order_then_summaries() -> None:
    lines = format_table(_report()).splitlines()
    assert lines[0] == "chromium (Chromium 156.0), policy all, timeout 10 s"
    start = lines.index(TURN_TCP)
    body = lines[start + 2 : start + 10]
    assert [line.split()[:2] for line in body] == [
        ["12.5", "host"],
        ["12.9", "host"],
        ["20.1", "srflx"],
        ["30.0", "error"],
        ["50.0", "error"],
        ["60.0", "relay"],
        ["80.0", "relay"],
        ["gathering", "complete"],
    ]
    assert body[5].split() == ["60.0", "relay", "udp", "198.18.0.2:49152", "tcp"]
    assert body[4].split()[2:] == ["401", REASONS[401], f"({TURN_TCP})"]
    assert "  not gathered: page: no answer" in lines
    assert lines[-3:] == [
        f"{TURN_TCP}: 2 relay candidates (tcp, tls)",
        f"{TURN_UDP}: no relay candidate: 401 Unauthorized.",
        f"{TURNS}: not gathered: page: no answer",
    ]


def test_gather_json_is_one_object_with_every_url() -> None:
    data = json.loads(json.dumps(to_json(_report())))
    assert data["browser"] == "chromium" and data["ok"] is False
    tcp, bad, gone = data["servers"]
    assert (tcp["url"], tcp["ok"], tcp["transport"]) == (TURN_TCP, True, "tcp")
    relays = [c for c in tcp["candidates"] if c["type"] == "relay"]
    assert [(c["address"], c["port"], c["relay_protocol"]) for c in relays] == [
        ("198.18.0.2", 49152, "tcp"),
        ("198.18.0.2", 49153, "tls"),
    ]
    assert [e["code"] for e in tcp["errors"]] == [701, 401]
    assert bad["ok"] is False and bad["summary"].endswith("401 Unauthorized.")
    assert gone["failure"] == "page: no answer" and gone["candidates"] == []


# --- Chromium's rooted names --------------------------------------------------------------


def test_gather_chromium_maps_each_lab_name_rooted_too() -> None:
    rules = host_resolver_rules({"turn.lab.test": "198.18.0.2", "gone.lab.test": None}, [])
    assert rules.split(",") == [
        "MAP turn.lab.test 198.18.0.2",
        "MAP turn.lab.test. 198.18.0.2",
        "MAP * ~NOTFOUND",
        "EXCLUDE 127.0.0.1",
        "EXCLUDE localhost",
    ]
