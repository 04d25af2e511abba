"""coturn's ``turnserver.conf``, read the way coturn's read_config_file reads it.

Syntax (as coturn 4.x mainrelay.c):
- one option per line; leading blanks skipped, trailing white space stripped;
- a line whose first non-blank character is ``#`` is a comment; ``#`` later in a line is NOT a
  comment (coturn keeps it in the value; we warn, and typed values then fail to parse);
- key and value are separated by the first run of blanks, tabs and ``=``: ``key=value``,
  ``key value`` and ``key = value`` are the same;
- a value may be wrapped in double quotes (``cipher-list="..."``). coturn strips the opening
  quote and a quote at the very end of the line; we end the value at the closing quote and
  warn about any text after it (the seed's ``cipher-list="..." dh-file=...`` line);
- a flag is a bare key; it also takes a boolean value (on/off, yes/no, true/false, 1/0);
- keys are case-sensitive; a key given again replaces the value, except the list keys in
  ``REPEATABLE`` which accumulate.

Keys we accept but do not act on are reported once as ignored; an unknown key is a warning
naming file:line (coturn: "Bad configuration format"). An invalid value raises ``ConfigError``;
coturn often logs and carries on, we refuse to start instead.

RFC 5780 is enabled by the key ``rfc5780`` only, as in coturn 4.7+ (where it is off by default);
two listening addresses alone do not enable it.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from relay.server.options import OptionsError, ServerOptions
from relay.turn.auth import StaticUsers
from relay.turn.peer_policy import parse_ip_range

log = logging.getLogger("relay.config")

_DEFAULTS = {f.name: f.default for f in fields(ServerOptions)}

# coturn keys accepted for compatibility that change nothing here
IGNORED_KEYS = frozenset(
    {
        "no-cli", "cli-ip", "cli-port", "cli-password", "cli-max-output-sessions",
        "dh-file", "dh566", "dh1066", "ec-curve-name", "CA-file",
        "keep-address-family", "no-dtls", "dtls",
        "simple-log", "syslog", "syslog-facility", "log-min-level",
        "new-log-timestamp", "new-log-timestamp-format", "log-binding",
        "pidfile", "proc-user", "proc-group", "daemon",
        "mobility", "cpus", "sock-buf-size", "server-name",
        "no-tcp-relay",  # there is no RFC 6062 TCP relaying to switch off
        "web-admin", "web-admin-ip", "web-admin-port", "web-admin-listen-on-workers",
    }
)  # fmt: skip

# the ignored keys that take a value (the others are bare flags), for the command line
IGNORED_WITH_VALUE = frozenset(
    {
        "cli-ip", "cli-port", "cli-password", "cli-max-output-sessions", "dh-file",
        "ec-curve-name", "CA-file", "syslog-facility", "log-min-level",
        "new-log-timestamp-format", "pidfile", "proc-user", "proc-group",
        "cpus", "sock-buf-size", "server-name", "web-admin-ip", "web-admin-port",
    }
)  # fmt: skip

_PLACEHOLDER = re.compile(r"<[^<>]*>|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?")
_TRUE = frozenset({"1", "on", "yes", "y", "true", "t"})
_FALSE = frozenset({"0", "off", "no", "n", "false", "f"})


class ConfigError(OptionsError):
    """A value in a config file the server cannot start with: "FILE:LINE: KEY: message"."""

    def __init__(self, file: str, line: int, key: str, message: str) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.message = message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


# --- value parsers: str | None (None for a bare key) -> value, ValueError with the reason ---

Parser = Callable[[str | None], object]


def _required(value: str | None) -> str:
    if value is None or value == "":
        raise ValueError("needs a value")
    return value


def _text(value: str | None) -> str:
    return _required(value)


def _flag(value: str | None) -> bool:
    if value is None or value == "":
        return True
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"not a boolean: {value!r} (use on/off, yes/no, true/false, 1/0)")


def _not_flag(value: str | None) -> bool:
    return not _flag(value)


def _integer(value: str | None, lowest: int, highest: int | None = None) -> int:
    text = _required(value)
    try:
        number = int(text, 10)
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None
    if number < lowest or (highest is not None and number > highest):
        upper = "" if highest is None else f"..{highest}"
        raise ValueError(f"{number} out of range {lowest}{upper}")
    return number


def _port(value: str | None) -> int:
    return _integer(value, 0, 65535)  # 0: an ephemeral port (tests) or, for alt ports, "+1"


def _real_port(value: str | None) -> int:
    return _integer(value, 1, 65535)


def _count(value: str | None) -> int:
    return _integer(value, 0)


def _seconds(default: int) -> Parser:
    # coturn: a bare stale-nonce / *-lifetime key means the default
    def parse(value: str | None) -> float:
        return float(default if value is None or value == "" else _integer(value, 1))

    return parse


def _ip(value: str | None) -> str:
    text = _required(value)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"not an IP address: {text!r}") from None


def _external_ip(value: str | None) -> tuple[str, str | None]:
    # coturn -X: "public" or "public/private" (no CIDR here: the part after / is an address)
    public, sep, private = _required(value).partition("/")
    return (_ip(public), _ip(private) if sep else None)


def _ip_range(value: str | None) -> str:
    text = _required(value)
    parse_ip_range(text)  # ValueError says what is wrong
    return text.strip()


def _user(value: str | None) -> tuple[str, str]:
    name, sep, password = _required(value).partition(":")
    if not sep or not name or not password:
        raise ValueError("wants NAME:PASSWORD or NAME:0x<md5 key>")
    StaticUsers(((name, password),))  # same checks as the server applies (0x keys, SASLprep)
    return (name, password)


def _existing_file(value: str | None) -> str:
    path = Path(_required(value))
    if not path.is_file():
        raise ValueError(f"no such file: {str(path)!r}")
    return str(path)


def _datapath(value: str | None) -> str:
    text = _required(value)
    if text not in ("auto", "c", "python"):
        raise ValueError(f"wants auto, c or python, not {text!r}")
    return text


def _log_file(value: str | None) -> str:
    text = _required(value)
    if text not in ("stdout", "stderr", "-", "syslog"):
        parent = Path(text).parent
        if not parent.is_dir():
            raise ValueError(f"directory {str(parent)!r} does not exist")
    return text


def _software(value: str | None) -> str:
    return str(_DEFAULTS["software"]) if _flag(value) else ""


def _no_software(value: str | None) -> str:
    return "" if _flag(value) else str(_DEFAULTS["software"])


@dataclass(frozen=True)
class Key:
    field: str  # ServerOptions field
    parse: Parser


# turnserver.conf key -> ServerOptions field and parser
KEYS: dict[str, Key] = {
    # listeners
    "listening-ip": Key("listening_ips", _ip),
    "listening-port": Key("listening_port", _port),
    "tls-listening-port": Key("tls_listening_port", _port),
    "alt-listening-port": Key("alt_listening_port", _port),
    "alt-tls-listening-port": Key("alt_tls_listening_port", _port),
    "extra-udp-port": Key("extra_udp_ports", _real_port),  # ours: more UDP ports, e.g. 443
    "no-udp": Key("no_udp", _flag),
    "no-tcp": Key("no_tcp", _flag),
    "no-tls": Key("no_tls", _flag),
    "rfc5780": Key("rfc5780", _flag),
    "no-rfc5780": Key("rfc5780", _not_flag),
    # TLS
    "cert": Key("cert", _existing_file),
    "pkey": Key("pkey", _existing_file),
    "cipher-list": Key("cipher_list", _text),
    "no-tlsv1": Key("no_tlsv1", _flag),
    "no-tlsv1_1": Key("no_tlsv1_1", _flag),
    "tlsv1": Key("no_tlsv1", _not_flag),  # coturn 4.7 spelling: enable instead of disable
    "tlsv1_1": Key("no_tlsv1_1", _not_flag),
    # relay addresses and ports
    "relay-ip": Key("relay_ips", _ip),
    "external-ip": Key("external_ips", _external_ip),
    "min-port": Key("min_port", _real_port),
    "max-port": Key("max_port", _real_port),
    # authentication
    "lt-cred-mech": Key("lt_cred_mech", _flag),
    "no-auth": Key("lt_cred_mech", _not_flag),
    "user": Key("users", _user),
    "use-auth-secret": Key("use_auth_secret", _flag),
    "static-auth-secret": Key("static_auth_secrets", _text),
    "realm": Key("realm", _text),
    # peer filtering
    "denied-peer-ip": Key("denied_peer_ips", _ip_range),
    "allowed-peer-ip": Key("allowed_peer_ips", _ip_range),
    "no-loopback-peers": Key("allow_loopback_peers", _not_flag),
    "allow-loopback-peers": Key("allow_loopback_peers", _flag),
    "no-multicast-peers": Key("no_multicast_peers", _flag),
    # limits and lifetimes
    "user-quota": Key("user_quota", _count),
    "total-quota": Key("total_quota", _count),
    "relay-threads": Key("relay_threads", _count),
    "datapath": Key("datapath", _datapath),  # ours: the packet loop, auto/c/python
    "stale-nonce": Key("stale_nonce", _seconds(600)),
    "max-allocate-lifetime": Key("max_allocate_lifetime", _seconds(3600)),
    "channel-lifetime": Key("channel_lifetime", _seconds(600)),
    "permission-lifetime": Key("permission_lifetime", _seconds(300)),
    # messages, metrics, logging
    "fingerprint": Key("fingerprint", _flag),
    "software-attribute": Key("software", _software),
    "no-software-attribute": Key("software", _no_software),
    "prometheus": Key("prometheus", _flag),
    "prometheus-port": Key("prometheus_port", _real_port),
    "prometheus-address": Key("prometheus_ip", _ip),
    "verbose": Key("verbose", _flag),
    "Verbose": Key("verbose", _flag),
    "log-file": Key("log_file", _log_file),
    "no-stdout-log": Key("no_stdout_log", _flag),
}

# list options: every occurrence adds (in the file and, after it, on the command line)
REPEATABLE = frozenset(
    {
        "listening_ips", "relay_ips", "external_ips", "extra_udp_ports", "users",
        "static_auth_secrets", "denied_peer_ips", "allowed_peer_ips",
    }
)  # fmt: skip


@dataclass
class ConfigResult:
    path: str
    values: dict[str, object] = field(default_factory=dict)  # ServerOptions field -> value
    warnings: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # keys, each once, in file order
    # field -> (line, key) that last set it, to name the line in cross-field errors
    origins: dict[str, tuple[int, str]] = field(default_factory=dict)
    ignored_lines: dict[str, int] = field(default_factory=dict)

    def error(self, field_name: str, message: str) -> ConfigError:
        line, key = self.origins.get(field_name, (0, ""))
        return ConfigError(self.path, line, key, message)


def _single_external(item: object) -> bool:
    return isinstance(item, tuple) and item[1] is None


def split_line(text: str) -> tuple[str, str | None, str]:
    """One stripped, non-comment line -> (key, value or None, text after a closing quote)."""
    match = re.match(r"([^ \t=]*)[ \t=]*(.*)", text)
    assert match is not None  # the pattern matches every string
    key, rest = match.group(1), match.group(2)
    if not rest:
        return key, None, ""
    if rest.startswith('"'):
        closing = rest.find('"', 1)
        if closing < 0:
            return key, rest[1:], ""  # coturn: only the opening quote goes
        return key, rest[1:closing], rest[closing + 1 :].strip()
    return key, rest, ""


def load_config(path: str | Path) -> ConfigResult:
    """Read a turnserver.conf; raise ConfigError for the first value the server cannot use."""
    name = str(path)
    result = ConfigResult(name)
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(name, 0, "", f"cannot read: {err.strerror or err}") from None
    lists: dict[str, list[object]] = {}
    seen: dict[str, tuple[int, object]] = {}
    for number, raw_line in enumerate(raw.splitlines(), start=1):
        try:
            line = raw_line.decode("utf-8").strip().lstrip("\ufeff")
        except UnicodeDecodeError:
            raise ConfigError(name, number, "", "not UTF-8 text") from None
        if not line or line.startswith("#"):
            continue
        key, value, junk = split_line(line)
        where = f"{name}:{number}: {key}"
        if junk:
            result.warnings.append(f"{where}: text after the closing quote ignored: {junk!r}")
        if line.endswith(";"):
            result.warnings.append(f"{where}: line ends with a semicolon")
        if key in IGNORED_KEYS:
            if key not in result.ignored_lines:
                result.ignored.append(key)
                result.ignored_lines[key] = number
            continue
        spec = KEYS.get(key)
        if spec is None:
            result.warnings.append(f"{name}:{number}: unknown option {key!r}, line ignored")
            continue
        if value is not None and _PLACEHOLDER.fullmatch(value.strip()):
            raise ConfigError(name, number, key, f"placeholder {value!r} was not filled in")
        try:
            parsed = spec.parse(value)
        except ValueError as err:
            raise ConfigError(name, number, key, str(err)) from None
        if value is not None and " #" in value and spec.parse is _text:
            result.warnings.append(f"{where}: '#' inside a value is not a comment")
        if spec.field in REPEATABLE:
            earlier = lists.get(spec.field, [])
            if _single_external(parsed) and any(_single_external(item) for item in earlier):
                # coturn: "You cannot define external IP more than once"
                raise ConfigError(
                    name, number, key, "a single external IP is already set; use PUBLIC/PRIVATE"
                )
            lists.setdefault(spec.field, []).append(parsed)
        else:
            previous = seen.get(key)
            if previous is not None and previous[1] != parsed:
                result.warnings.append(f"{where}: replaces the value from line {previous[0]}")
            seen[key] = (number, parsed)
            result.values[spec.field] = parsed
        result.origins[spec.field] = (number, key)
    for field_name, items in lists.items():
        result.values[field_name] = tuple(items)
    if result.values.get("static_auth_secrets"):
        # coturn: static-auth-secret switches the TURN REST mechanism on by itself
        if "use_auth_secret" not in result.values:
            result.origins["use_auth_secret"] = result.origins["static_auth_secrets"]
        result.values["use_auth_secret"] = True
    culprit = _port_range_culprit(
        result.values, {name: line for name, (line, _) in result.origins.items()}
    )
    if culprit is not None:
        raise result.error(culprit, _port_range_message(result.values))
    return result


def _port_range_message(values: Mapping[str, object]) -> str:
    low = values.get("min_port", _DEFAULTS["min_port"])
    high = values.get("max_port", _DEFAULTS["max_port"])
    return f"min-port {low} is above max-port {high}"


def _port_range_culprit(values: Mapping[str, object], ranks: Mapping[str, int]) -> str | None:
    """The field to blame when min-port > max-port: the one with the highest rank (set last)."""
    low = values.get("min_port", _DEFAULTS["min_port"])
    high = values.get("max_port", _DEFAULTS["max_port"])
    assert isinstance(low, int) and isinstance(high, int)
    if low <= high:
        return None
    return max(("max_port", "min_port"), key=lambda name: ranks.get(name, -1))


def log_config_messages(result: ConfigResult) -> None:
    """Log a loaded file's warnings, and each ignored key once, on the "relay.config" logger."""
    for warning in result.warnings:
        log.warning("%s", warning)
    for key in result.ignored:
        log.info("%s:%d: %s: ignored (no effect in natlab's relay)", result.path,
                 result.ignored_lines[key], key)  # fmt: skip


def options_from_config(
    result: ConfigResult | None = None,
    overrides: Mapping[str, object] | None = None,
    defaults: Mapping[str, object] | None = None,
) -> ServerOptions:
    """ServerOptions from a loaded file, then command-line ``overrides``, then ``defaults``.

    As coturn applies flags after the file: a scalar flag replaces the file's value, a list
    flag (``REPEATABLE``) adds to the file's list. ``defaults`` fill fields neither set.
    A cross-field problem caused by the file alone is a ConfigError naming its line.
    """
    merged: dict[str, object] = dict(result.values) if result else {}
    origins: dict[str, tuple[int, str]] = dict(result.origins) if result else {}
    from_flags: set[str] = set()
    for name, value in (overrides or {}).items():
        if name not in _DEFAULTS:
            raise OptionsError(f"no such option field: {name}")
        if name in REPEATABLE and isinstance(value, tuple):
            merged[name] = (*merged.get(name, ()), *value)  # type: ignore[misc]
        else:
            merged[name] = value
        from_flags.add(name)
    for name, value in (defaults or {}).items():
        merged.setdefault(name, value)
    if merged.get("static_auth_secrets") and not merged.get("use_auth_secret"):
        merged["use_auth_secret"] = True  # coturn: a secret alone enables TURN REST

    def error(field_name: str, message: str) -> OptionsError:
        if result is None or field_name in from_flags or field_name not in origins:
            return OptionsError(message)
        line, key = origins[field_name]
        return ConfigError(result.path, line, key, message)

    # a flag outranks any file line: the command line caused the conflict
    ranks = {name: line for name, (line, _) in origins.items()}
    ranks.update({name: 1 << 30 for name in from_flags})
    culprit = _port_range_culprit(merged, ranks)
    if culprit is not None:
        raise error(culprit, _port_range_message(merged))
    if merged.get("use_auth_secret") and not merged.get("static_auth_secrets"):
        raise error("use_auth_secret", "needs static-auth-secret")
    if merged.get("lt_cred_mech") and not (merged.get("users") or merged.get("use_auth_secret")):
        raise error("lt_cred_mech", "needs a user or use-auth-secret with static-auth-secret")
    listening = merged.get("listening_ips", _DEFAULTS["listening_ips"])
    if merged.get("rfc5780") and isinstance(listening, tuple) and len(listening) < 2:
        raise error("rfc5780", "needs a second listening-ip for OTHER-ADDRESS (RFC 5780 §7.4)")
    try:
        return ServerOptions(**merged)  # type: ignore[arg-type]
    except OptionsError as err:
        if result is None or from_flags:
            raise  # the flags may have caused it
        raise ConfigError(result.path, 0, "", str(err)) from None
