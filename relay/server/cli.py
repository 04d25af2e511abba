"""``python -m relay``: the turnserver command line, so a coturn invocation works unchanged.

Configuration, as coturn applies it: ``-c FILE`` is read first, then the flags in command-line
order. A scalar flag replaces the file's value; a list flag (-L, -E, -X, -u,
--static-auth-secret, --denied-peer-ip, --allowed-peer-ip, --extra-udp-port) adds to the file's
list. ``-n`` means no file (and wins over -c, as in coturn). Unlike coturn, without -c no file
is read: /etc/turnserver.conf and friends are never picked up implicitly.

Every flag is validated by the same parser as its turnserver.conf key (config_file.KEYS).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from relay.server import datapath as datapaths
from relay.server.config_file import (
    IGNORED_KEYS,
    IGNORED_WITH_VALUE,
    KEYS,
    REPEATABLE,
    ConfigError,
    ConfigResult,
    load_config,
    log_config_messages,
    options_from_config,
)
from relay.server.options import OptionsError, ServerOptions
from relay.server.serve import run_loop, serve

log = logging.getLogger("relay")

DEFAULT_LISTENING_IPS = ("0.0.0.0",)  # coturn: all addresses when no listening-ip is given
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"

# (group, [(short flag or "", config key, metavar or None for a bare flag, help)])
FLAGS: list[tuple[str, list[tuple[str, str, str | None, str]]]] = [
    ("listeners", [
        ("-L", "listening-ip", "IP", "listen on IP; repeatable (default: 0.0.0.0)"),
        ("-p", "listening-port", "PORT", "UDP and TCP port (default: 3478; 0: ephemeral)"),
        ("", "tls-listening-port", "PORT", "TLS port (default: 5349)"),
        ("", "alt-listening-port", "PORT", "RFC 5780 second port (default: listening-port + 1)"),
        ("", "alt-tls-listening-port", "PORT", "second TLS port"),
        ("", "extra-udp-port", "PORT",
         "natlab: one more UDP listening port, e.g. 443; repeatable"),
        ("", "no-udp", None, "no UDP listeners"),
        ("", "no-tcp", None, "no TCP listeners"),
        ("", "no-tls", None, "no TLS listeners"),
        ("", "rfc5780", None, "RFC 5780 NAT behaviour discovery (needs two -L addresses)"),
        ("", "no-rfc5780", None, "no RFC 5780 (the default)"),
    ]),
    ("TLS", [
        ("", "cert", "FILE", "certificate chain (PEM)"),
        ("", "pkey", "FILE", "private key (PEM)"),
        ("", "cipher-list", "LIST", "OpenSSL cipher list for TLS 1.2"),
        ("", "no-tlsv1", None, "refuse TLS 1.0 (the default)"),
        ("", "no-tlsv1_1", None, "refuse TLS 1.1 (the default)"),
        ("", "tlsv1", None, "allow TLS 1.0"),
        ("", "tlsv1_1", None, "allow TLS 1.1"),
    ]),
    ("relay", [
        ("-E", "relay-ip", "IP", "relay address; repeatable (default: the listening addresses)"),
        ("-X", "external-ip", "PUBLIC[/PRIVATE]",
         "address to announce for a relay address behind NAT; repeatable"),
        ("", "min-port", "PORT", "lowest relay port (default: 49152)"),
        ("", "max-port", "PORT", "highest relay port (default: 65535)"),
    ]),
    ("authentication", [
        ("-a", "lt-cred-mech", None, "long-term credential mechanism"),
        ("-z", "no-auth", None, "no authentication (the default without -a)"),
        ("-u", "user", "USER:PASS", "static user; PASS may be 0x<md5 key>; repeatable"),
        ("-r", "realm", "REALM", "realm (default: natlab)"),
        ("", "use-auth-secret", None, "TURN REST API credentials"),
        ("", "static-auth-secret", "SECRET", "TURN REST secret (implies --use-auth-secret)"),
    ]),
    ("peer filtering", [
        ("", "denied-peer-ip", "RANGE", "refuse relaying to IP, FIRST-LAST or CIDR; repeatable"),
        ("", "allowed-peer-ip", "RANGE", "exception to --denied-peer-ip; repeatable"),
        ("", "allow-loopback-peers", None, "allow relaying to 127.0.0.0/8 and ::1"),
        ("", "no-loopback-peers", None, "refuse loopback peers (the default)"),
        ("", "no-multicast-peers", None, "refuse multicast peers"),
    ]),
    ("limits and lifetimes (seconds)", [
        ("-q", "user-quota", "N", "allocations per user (0: no limit)"),
        ("-m", "relay-threads", "N",
         "worker processes sharing the ports with SO_REUSEPORT (0: one per CPU; default 1)"),
        ("", "datapath", "LOOP",
         "natlab: packet loop: c (recvmmsg/sendmmsg), python, or auto (c when built; default)"),
        ("-Q", "total-quota", "N", "allocations in total (0: no limit)"),
        ("", "stale-nonce", "S", "nonce lifetime (default and bare flag: 600)"),
        ("", "max-allocate-lifetime", "S", "longest allocation lifetime (default: 3600)"),
        ("", "channel-lifetime", "S", "channel binding lifetime (default: 600)"),
        ("", "permission-lifetime", "S", "permission lifetime (default: 300)"),
    ]),
    ("messages, metrics and logging", [
        ("-f", "fingerprint", None, "FINGERPRINT in responses (the default)"),
        ("", "no-software-attribute", None, "no SOFTWARE attribute in responses"),
        ("", "prometheus", None, "serve Prometheus metrics"),
        ("", "prometheus-port", "PORT", "metrics port (default: 9641)"),
        ("", "prometheus-address", "IP", "metrics address (default: 127.0.0.1)"),
        ("-v", "verbose", None, "debug logging"),
        ("-V", "Verbose", None, "debug logging"),
        ("-l", "log-file", "FILE", "also log to FILE; 'stdout' logs to stdout instead of stderr"),
        ("", "no-stdout-log", None, "with --log-file: log to the file only, as coturn"),
    ]),
]  # fmt: skip

# keys whose flag takes an optional value (coturn: a bare --stale-nonce means 600)
OPTIONAL_VALUE = frozenset({"stale-nonce", "max-allocate-lifetime", "channel-lifetime",
                            "permission-lifetime"})  # fmt: skip
SHORT_IGNORED: dict[str, str] = {}


class _Record(argparse.Action):
    """Keep every option in command-line order, to apply it after the file as coturn does."""

    def __init__(self, *args: Any, key: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key = key

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        value = values if isinstance(values, str) else None  # bare flag: [] or None (nargs ?)
        # a new tuple each time: the default is shared between parse_args calls
        setattr(namespace, self.dest, (*getattr(namespace, self.dest), (self.key, value)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m relay",
        description="natlab's TURN/STUN relay (RFC 8489, RFC 8656); flags follow coturn's "
        "turnserver, and every flag is also a turnserver.conf key",
        epilog="Flags are applied after the -c file: a flag replaces the file's value, a "
        "repeatable flag adds to the file's list. Without -c no file is read.",
    )
    p.set_defaults(given=(), ignored=())
    config = p.add_argument_group("configuration file")
    config.add_argument("-c", dest="config", metavar="FILE",
                        help="turnserver.conf to read (coturn's format)")  # fmt: skip
    config.add_argument("-n", dest="no_config", action="store_true",
                        help="read no configuration file (the default without -c)")  # fmt: skip
    for title, flags in FLAGS:
        group = p.add_argument_group(title)
        for short, key, metavar, text in flags:
            assert key in KEYS, key
            names = [n for n in (short, f"--{key}") if n]
            if metavar is None:
                nargs: int | str | None = 0
            elif key in OPTIONAL_VALUE:
                nargs = "?"
            else:
                nargs = None
            group.add_argument(*names, dest="given", action=_Record, key=key, nargs=nargs,
                               metavar=metavar, help=text)  # fmt: skip
    for key in sorted(IGNORED_KEYS):
        names = [n for n in (SHORT_IGNORED.get(key, ""), f"--{key}") if n]
        p.add_argument(*names, dest="ignored", action=_Record, key=key,
                       nargs=None if key in IGNORED_WITH_VALUE else 0,
                       help=argparse.SUPPRESS)  # fmt: skip
    return p


def overrides_from_args(args: argparse.Namespace) -> dict[str, object]:
    """ServerOptions fields set by flags, validated like their config keys."""
    overrides: dict[str, object] = {}
    for key, raw in args.given:
        spec = KEYS[key]
        try:
            value = spec.parse(raw)
        except ValueError as err:
            raise OptionsError(f"--{key}: {err}") from None
        if spec.field in REPEATABLE:
            previous = overrides.get(spec.field, ())
            assert isinstance(previous, tuple)
            overrides[spec.field] = (*previous, value)
        else:
            overrides[spec.field] = value
    return overrides


def options_from_args(
    args: argparse.Namespace, config: ConfigResult | None = None
) -> ServerOptions:
    """The -c file's values (if loaded) overridden by the flags."""
    return options_from_config(
        config, overrides_from_args(args), defaults={"listening_ips": DEFAULT_LISTENING_IPS}
    )


def setup_logging(options: ServerOptions) -> None:
    """stderr (or stdout for log-file=stdout, as coturn), plus the log file if one is named;
    with no-stdout-log and a log file, the file only."""
    handlers: list[logging.Handler] = []
    target = options.log_file
    to_file = target not in (None, "stdout", "-", "stderr", "syslog")
    if target in ("stdout", "-"):
        handlers.append(logging.StreamHandler(sys.stdout))
    elif not (options.no_stdout_log and to_file):
        handlers.append(logging.StreamHandler(sys.stderr))
    if to_file:
        assert target is not None
        handlers.append(logging.FileHandler(target))  # OSError: reported by main
    # LOG_FORMAT names no thread, process or source line: do not gather them for every record
    # (the logging HOWTO's "Optimization"; an Allocate writes one line)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    logging.basicConfig(
        level=logging.DEBUG if options.verbose else logging.INFO,
        format=LOG_FORMAT,
        handlers=handlers,
        force=True,
    )
    if target == "syslog":
        logging.getLogger("relay.config").info("log-file syslog: ignored, logging to stderr")


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config: ConfigResult | None = None
    try:
        if args.config and not args.no_config:
            config = load_config(args.config)
        options = options_from_args(args, config)
    except ConfigError as err:
        return _fail(str(err))  # "FILE:LINE: KEY: message", no traceback
    except OptionsError as err:
        parser.error(str(err))
    try:
        setup_logging(options)
    except OSError as err:
        from_flag = any(KEYS[key].field == "log_file" for key, _ in args.given)
        if config is not None and "log_file" in config.origins and not from_flag:
            line, key = config.origins["log_file"]
            return _fail(str(ConfigError(config.path, line, key, f"cannot open: {err}")))
        return _fail(f"--log-file: cannot open: {err}")
    if args.config and args.no_config:
        log.info("-n given: %s not read", args.config)
    if config is not None:
        log_config_messages(config)
    for key in dict.fromkeys(key for key, _ in args.ignored):
        logging.getLogger("relay.config").info("--%s: ignored (no effect in natlab's relay)", key)
    try:
        loop_kind = datapaths.resolve(options.datapath)
    except ValueError as err:
        return _fail(f"relay: cannot start: {err}")
    log.info("packet loop: %s", loop_kind)
    workers = options.relay_threads or os.cpu_count() or 1
    if workers > 1:
        from relay.server.workers import serve_workers

        return serve_workers(options, workers)
    try:
        run_loop(serve(options))
    except (OSError, OptionsError) as err:
        return _fail(f"relay: cannot start: {err}")
    return 0
