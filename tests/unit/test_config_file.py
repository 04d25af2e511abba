"""turnserver.conf reading (relay/server/config_file.py) and its merge with the command line."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import pytest

from relay.server.config_file import (
    ConfigError,
    load_config,
    log_config_messages,
    options_from_config,
)
from relay.server.options import OptionsError, ServerOptions

SEED = Path(__file__).resolve().parents[1] / "data" / "seed_turnserver.conf"
PUBLIC_IP = "203.0.113.7"
SECRET = "5f1d0a3c9b7e2f4a6c8d0e1f2a3b4c5d"
CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384"
)
SEED_DENIED = (
    "10.0.0.0-10.255.255.255",
    "172.16.0.0-172.31.255.255",
    "192.168.0.0-192.168.255.255",
    "100.64.0.0-100.127.255.255",
    "169.254.0.0-169.254.255.255",
    "192.0.0.0-192.0.0.255",
    "192.0.2.0-192.0.2.255",
    "198.18.0.0-198.19.255.255",
    "198.51.100.0-198.51.100.255",
    "203.0.113.0-203.0.113.255",
    "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "::ffff:0:0-::ffff:ffff:ffff",
    "64:ff9b::-64:ff9b::ffff:ffff",
    "64:ff9b:1::-64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
    "2001::-2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
    "2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
    "2002::-2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
)


def write(tmp_path: Path, text: str, name: str = "turnserver.conf") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, start: str) -> int:
    """1-based number of the first line starting with `start`."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(start))


def substituted_seed(tmp_path: Path) -> tuple[Path, str]:
    cert, pkey = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    cert.write_text("cert\n")
    pkey.write_text("key\n")
    text = (
        SEED.read_text(encoding="utf-8")
        .replace("$IP", PUBLIC_IP)
        .replace("<secret_value>", SECRET)
        .replace("<example.com>", "example.com")
        .replace("/etc/turnserver/fullchain.pem", str(cert))
        .replace("/etc/turnserver/privkey.pem", str(pkey))
    )
    return write(tmp_path, text), text


# --- the seed's turnserver.conf ---------------------------------------------------------------


def test_config_file_seed_loads_into_expected_options(tmp_path: Path) -> None:
    path, _ = substituted_seed(tmp_path)
    options = options_from_config(load_config(path))
    assert options == ServerOptions(
        listening_ips=(PUBLIC_IP,),
        listening_port=3478,
        tls_listening_port=443,
        relay_ips=(PUBLIC_IP,),
        min_port=32769,
        max_port=65535,
        verbose=True,
        fingerprint=True,
        lt_cred_mech=True,
        use_auth_secret=True,
        static_auth_secrets=(SECRET,),
        realm="example.com",
        cert=str(tmp_path / "fullchain.pem"),
        pkey=str(tmp_path / "privkey.pem"),
        cipher_list=CIPHERS,
        no_tlsv1=True,
        no_tlsv1_1=True,
        allow_loopback_peers=False,
        no_multicast_peers=True,
        denied_peer_ips=SEED_DENIED,
    )
    assert options.peer_policy().refusal(ipaddress.ip_address("198.18.0.1")) == "denied-peer-ip"


def test_config_file_seed_warnings_and_ignored(tmp_path: Path) -> None:
    path, text = substituted_seed(tmp_path)
    result = load_config(path)
    from_line = line_of(text, "From https://")
    cipher_line = line_of(text, "cipher-list=")
    assert result.warnings == [
        f"{path}:{from_line}: unknown option 'From', line ignored",
        f"{path}:{cipher_line}: cipher-list: text after the closing quote ignored: "
        "'dh-file=/etc/turnserver/dhp.pem'",
    ]
    assert result.ignored == ["keep-address-family", "no-cli"]


def test_config_file_seed_verbatim_placeholder_refused() -> None:
    text = SEED.read_text(encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(SEED)
    err = info.value
    assert (err.file, err.line, err.key) == (
        str(SEED),
        line_of(text, "listening-ip=$IP"),
        "listening-ip",
    )
    assert str(err) == f"{SEED}:{err.line}: listening-ip: placeholder '$IP' was not filled in"


def test_config_file_seed_placeholder_secret_refused(tmp_path: Path) -> None:
    path, text = substituted_seed(tmp_path)
    path.write_text(text.replace(SECRET, "<secret_value>"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.line, info.value.key) == (
        line_of(text, "static-auth-secret="),
        "static-auth-secret",
    )


# --- ignored and unknown keys -----------------------------------------------------------------


def test_config_file_ignored_key_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(
        tmp_path,
        "no-cli\nsimple-log\nno-cli\npidfile=/run/turnserver.pid\nsimple-log\ndh-file=/x.pem\n",
    )
    result = load_config(path)
    assert result.ignored == ["no-cli", "simple-log", "pidfile", "dh-file"]
    assert result.warnings == []
    with caplog.at_level(logging.INFO, logger="relay.config"):
        log_config_messages(result)
    messages = [r.getMessage() for r in caplog.records if r.name == "relay.config"]
    assert messages == [
        f"{path}:1: no-cli: ignored (no effect in natlab's relay)",
        f"{path}:2: simple-log: ignored (no effect in natlab's relay)",
        f"{path}:4: pidfile: ignored (no effect in natlab's relay)",
        f"{path}:6: dh-file: ignored (no effect in natlab's relay)",
    ]


def test_config_file_unknown_key_warns_with_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "# header\n\nrealm=example.org\nno-such-option=1\nstun-only\n")
    result = load_config(path)
    assert result.warnings == [
        f"{path}:4: unknown option 'no-such-option', line ignored",
        f"{path}:5: unknown option 'stun-only', line ignored",
    ]
    assert result.values == {"realm": "example.org"}
    with caplog.at_level(logging.WARNING, logger="relay.config"):
        log_config_messages(result)
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]


# --- invalid values ---------------------------------------------------------------------------

PREFIX = "# natlab test\n\nrealm=example.org\n"  # the bad line is line 4 unless said otherwise

INVALID = [
    ("listening-port=34x78", "listening-port", "not an integer: '34x78'"),
    ("listening-port=65536", "listening-port", "65536 out of range 0..65535"),
    ("tls-listening-port=-1", "tls-listening-port", "-1 out of range 0..65535"),
    ("min-port=0", "min-port", "0 out of range 1..65535"),
    ("listening-ip=192.0.2.300", "listening-ip", "not an IP address: '192.0.2.300'"),
    ("relay-ip=$IP", "relay-ip", "placeholder '$IP' was not filled in"),
    ("relay-ip=turn.example.com", "relay-ip", "not an IP address: 'turn.example.com'"),
    ("external-ip=198.51.100.1/10.0.0.x", "external-ip", "not an IP address: '10.0.0.x'"),
    ("denied-peer-ip=10.0.0.9-10.0.0.1", "denied-peer-ip", "10.0.0.9 is above 10.0.0.1"),
    ("denied-peer-ip=10.0.0.0-::1", "denied-peer-ip", "mixes IPv4 and IPv6"),
    ("allowed-peer-ip=10.1.2.3/8", "allowed-peer-ip", "host bits set"),
    ("cert=/nonexistent/fullchain.pem", "cert", "no such file: '/nonexistent/fullchain.pem'"),
    ("pkey", "pkey", "needs a value"),
    ("user=alice", "user", "wants NAME:PASSWORD or NAME:0x<md5 key>"),
    ("user=bob:0x1234", "user", "a 0x key must be 32 hex digits"),
    ("user-quota=-1", "user-quota", "-1 out of range 0"),
    ("stale-nonce=0", "stale-nonce", "0 out of range 1"),
    ("verbose=maybe", "verbose", "not a boolean: 'maybe'"),
    ("realm=<example.com>", "realm", "placeholder '<example.com>' was not filled in"),
    ("static-auth-secret=<secret_value>", "static-auth-secret", "placeholder"),
    ("log-file=/nonexistent-dir/turn.log", "log-file", "directory '/nonexistent-dir'"),
    ("listening-port=3478 # STUN", "listening-port", "not an integer: '3478 # STUN'"),
]


@pytest.mark.parametrize(("line", "key", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_config_file_invalid_value_names_file_line_key(
    tmp_path: Path, line: str, key: str, message: str
) -> None:
    path = write(tmp_path, PREFIX + line + "\nverbose\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert (err.file, err.line, err.key) == (str(path), 4, key)
    assert str(err).startswith(f"{path}:4: {key}: ")
    assert message in str(err)


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        (
            "min-port=50000\nmax-port=40000\n",
            2,
            "max-port",
            "min-port 50000 is above max-port 40000",
        ),
        (
            "max-port=40000\nmin-port=50000\n",
            2,
            "min-port",
            "min-port 50000 is above max-port 40000",
        ),
        ("realm=x\nmax-port=1000\n", 2, "max-port", "min-port 49152 is above max-port 1000"),
        ("external-ip=198.51.100.1\nexternal-ip=198.51.100.2\n", 2, "external-ip", "already set"),
    ],
)
def test_config_file_inconsistent_values_name_the_later_line(
    tmp_path: Path, text: str, line: int, key: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert (info.value.line, info.value.key) == (line, key)


def test_config_file_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.conf")
    assert str(info.value).startswith(f"{tmp_path / 'absent.conf'}: cannot read: ")


def test_config_file_rfc5780_needs_two_listening_ips(tmp_path: Path) -> None:
    path = write(tmp_path, "listening-ip=127.0.0.1\nrfc5780\n")
    with pytest.raises(ConfigError) as info:
        options_from_config(load_config(path))
    assert (info.value.line, info.value.key) == (2, "rfc5780")
    two = write(tmp_path, "listening-ip=127.0.0.1\nlistening-ip=127.0.0.2\nrfc5780\n", "two.conf")
    assert options_from_config(load_config(two)).rfc5780 is True


def test_config_file_use_auth_secret_without_secret_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "lt-cred-mech\nuse-auth-secret\n")
    with pytest.raises(ConfigError) as info:
        options_from_config(load_config(path))
    assert (info.value.line, info.value.key) == (2, "use-auth-secret")
    # ... unless the secret comes from the command line (kept out of the file)
    options = options_from_config(load_config(path), {"static_auth_secrets": ("s3cret",)})
    assert options.use_auth_secret and options.static_auth_secrets == ("s3cret",)


# --- syntax -----------------------------------------------------------------------------------


def test_config_file_comments_blank_lines_and_spacing(tmp_path: Path) -> None:
    text = (
        "# a comment\n"
        "   # an indented comment\n"
        "\n"
        "\t  \n"
        "  listening-port = 3479  \n"  # blanks around '=' and at both ends
        "tls-listening-port 5350\n"  # coturn: key value
        "realm\texample.net\n"  # a tab separates too
        "min-port==40000\n"  # so does a run of '='
        "#max-port=1\n"
    )
    result = load_config(write(tmp_path, text))
    assert result.values == {
        "listening_port": 3479,
        "tls_listening_port": 5350,
        "realm": "example.net",
        "min_port": 40000,
    }
    assert result.warnings == []


def test_config_file_crlf_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "dos.conf"
    path.write_bytes(b"\xef\xbb\xbfrealm=example.org\r\nno-udp\r\n")
    assert load_config(path).values == {"realm": "example.org", "no_udp": True}


def test_config_file_quotes(tmp_path: Path) -> None:
    text = (
        'cipher-list="ECDHE-RSA-AES128-GCM-SHA256:HIGH"\n'
        'realm="a realm with spaces"\n'
        'static-auth-secret="unterminated\n'
    )
    result = load_config(write(tmp_path, text))
    assert result.values["cipher_list"] == "ECDHE-RSA-AES128-GCM-SHA256:HIGH"
    assert result.values["realm"] == "a realm with spaces"
    assert result.values["static_auth_secrets"] == ("unterminated",)
    assert result.warnings == []


def test_config_file_hash_inside_value_is_kept_with_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, "realm=example.org # our realm\n")
    result = load_config(path)
    assert result.values["realm"] == "example.org # our realm"  # as coturn reads it
    assert result.warnings == [f"{path}:1: realm: '#' inside a value is not a comment"]


def test_config_file_semicolon_warns(tmp_path: Path) -> None:
    path = write(tmp_path, "realm=example.org;\n")
    assert load_config(path).warnings == [f"{path}:1: realm: line ends with a semicolon"]


def test_config_file_repeated_keys_accumulate(tmp_path: Path) -> None:
    text = (
        "listening-ip=127.0.0.1\nlistening-ip=::1\n"
        "relay-ip=127.0.0.1\nrelay-ip=::1\n"
        "external-ip=198.51.100.1/127.0.0.1\nexternal-ip=198.51.100.2\n"
        "user=alice:pw1\nuser=bob:0x0123456789abcdef0123456789abcdef\n"
        "static-auth-secret=one\nstatic-auth-secret=two\n"
        "denied-peer-ip=10.0.0.0-10.255.255.255\ndenied-peer-ip=192.168.0.0/16\n"
        "allowed-peer-ip=10.1.0.1\nallowed-peer-ip=10.2.0.0-10.2.0.255\n"
        "extra-udp-port=443\nextra-udp-port=8443\n"
    )
    options = options_from_config(load_config(write(tmp_path, text)))
    assert options.listening_ips == ("127.0.0.1", "::1")
    assert options.relay_ips == ("127.0.0.1", "::1")
    assert options.external_ips == (("198.51.100.1", "127.0.0.1"), ("198.51.100.2", None))
    assert options.users == (("alice", "pw1"), ("bob", "0x0123456789abcdef0123456789abcdef"))
    assert options.static_auth_secrets == ("one", "two")
    assert options.use_auth_secret is True  # coturn: static-auth-secret alone enables it
    assert options.denied_peer_ips == ("10.0.0.0-10.255.255.255", "192.168.0.0/16")
    assert options.allowed_peer_ips == ("10.1.0.1", "10.2.0.0-10.2.0.255")
    assert options.extra_udp_ports == (443, 8443)


def test_config_file_repeated_scalar_last_wins_with_warning(tmp_path: Path) -> None:
    path = write(tmp_path, "realm=one.example\nrealm=two.example\nverbose\nverbose\n")
    result = load_config(path)
    assert result.values["realm"] == "two.example"
    assert result.warnings == [f"{path}:2: realm: replaces the value from line 1"]


@pytest.mark.parametrize(
    ("line", "field", "value"),
    [
        ("no-udp", "no_udp", True),
        ("no-udp=off", "no_udp", False),
        ("fingerprint=0", "fingerprint", False),
        ("no-loopback-peers", "allow_loopback_peers", False),
        ("no-loopback-peers=no", "allow_loopback_peers", True),
        ("allow-loopback-peers=yes", "allow_loopback_peers", True),
        ("tlsv1", "no_tlsv1", False),
        ("rfc5780=false", "rfc5780", False),
        ("no-rfc5780", "rfc5780", False),
        ("stale-nonce", "stale_nonce", 600.0),
        ("stale-nonce=1200", "stale_nonce", 1200.0),
        ("max-allocate-lifetime", "max_allocate_lifetime", 3600.0),
        ("channel-lifetime=300", "channel_lifetime", 300.0),
        ("permission-lifetime", "permission_lifetime", 300.0),
        ("user-quota=10", "user_quota", 10),
        ("total-quota=0", "total_quota", 0),
        ("prometheus", "prometheus", True),
        ("prometheus-port=9642", "prometheus_port", 9642),
        ("no-software-attribute", "software", ""),
        ("listening-ip=::1", "listening_ips", ("::1",)),
        ("listening-ip=0:0:0:0:0:0:0:1", "listening_ips", ("::1",)),
        ("Verbose", "verbose", True),
        ("no-auth", "lt_cred_mech", False),
    ],
)
def test_config_file_value_forms(tmp_path: Path, line: str, field: str, value: object) -> None:
    assert load_config(write(tmp_path, line + "\n")).values[field] == value


# --- merging with the command line ------------------------------------------------------------


def test_config_file_flags_replace_scalars_and_extend_lists(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "listening-ip=127.0.0.1\nlistening-port=3478\nrealm=file.example\n"
        "denied-peer-ip=10.0.0.0/8\nverbose\n",
    )
    options = options_from_config(
        load_config(path),
        {
            "listening_ips": ("127.0.0.2",),
            "listening_port": 3479,
            "denied_peer_ips": ("192.168.0.0/16",),
            "verbose": False,
        },
    )
    assert options.listening_ips == ("127.0.0.1", "127.0.0.2")
    assert options.listening_port == 3479
    assert options.realm == "file.example"
    assert options.denied_peer_ips == ("10.0.0.0/8", "192.168.0.0/16")
    assert options.verbose is False


def test_config_file_conflict_caused_by_flag_is_no_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "min-port=50000\n")
    with pytest.raises(OptionsError) as info:
        options_from_config(load_config(path), {"max_port": 40000})
    assert not isinstance(info.value, ConfigError)
    assert str(info.value) == "min-port 50000 is above max-port 40000"


def test_config_file_defaults_fill_only_unset_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "realm=example.org\n")
    defaults = {"listening_ips": ("0.0.0.0",), "realm": "natlab"}
    options = options_from_config(load_config(path), defaults=defaults)
    assert options.listening_ips == ("0.0.0.0",) and options.realm == "example.org"


def test_cli_flags_apply_after_file_in_order(tmp_path: Path) -> None:
    from relay.server.cli import build_parser, options_from_args

    path = write(tmp_path, "listening-ip=127.0.0.1\nallow-loopback-peers\nuser=alice:pw\n")
    args = build_parser().parse_args(
        ["-c", str(path), "-L", "127.0.0.2", "-u", "bob:pw2", "--allow-loopback-peers",
         "--no-loopback-peers", "--stale-nonce", "-X", "198.51.100.1/127.0.0.1"]
    )  # fmt: skip
    options = options_from_args(args, load_config(path))
    assert options.listening_ips == ("127.0.0.1", "127.0.0.2")
    assert options.users == (("alice", "pw"), ("bob", "pw2"))
    assert options.allow_loopback_peers is False  # the last of the two flags wins
    assert options.stale_nonce == 600.0
    assert options.external_ips == (("198.51.100.1", "127.0.0.1"),)


def test_cli_without_config_listens_on_all_addresses() -> None:
    from relay.server.cli import build_parser, options_from_args

    options = options_from_args(build_parser().parse_args(["-n", "-p", "0", "--no-tls"]))
    assert options.listening_ips == ("0.0.0.0",)
    assert options.listening_port == 0 and options.no_tls is True


def test_cli_flag_values_validated_like_config_keys() -> None:
    from relay.server.cli import build_parser, options_from_args

    args = build_parser().parse_args(["--min-port", "0"])
    with pytest.raises(OptionsError, match=r"--min-port: 0 out of range 1\.\.65535"):
        options_from_args(args)


def test_config_file_other_option_errors_name_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path, "listening-ip=127.0.0.1\nlistening-ip=127.0.0.2\nlistening-port=0\nrfc5780\n"
    )
    with pytest.raises(ConfigError) as info:
        options_from_config(load_config(path))
    assert str(info.value).startswith(f"{path}: ")  # ServerOptions' own check, no line to name
