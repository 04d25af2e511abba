"""TLS for TURN over TLS (RFC 8656 §3.1) with the standard library ``ssl`` module.

coturn's knobs: ``cert``, ``pkey``, ``cipher-list``, ``no-tlsv1``, ``no-tlsv1_1``; TLS 1.2+
unless both are switched off. ``reload`` re-reads the files into the same context (SIGUSR2, as
coturn does), so new handshakes get the new certificate and open connections keep theirs.
"""

from __future__ import annotations

import ssl

from relay.server.options import OptionsError, ServerOptions


def server_context(options: ServerOptions) -> ssl.SSLContext:
    if not options.cert or not options.pkey:
        raise OptionsError("TLS needs cert and pkey (or no-tls)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if options.no_tlsv1_1:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    elif options.no_tlsv1:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    else:
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    if options.cipher_list:
        try:
            ctx.set_ciphers(options.cipher_list)
        except ssl.SSLError as err:
            raise OptionsError(f"cipher-list: {err}") from None
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    reload(ctx, options)
    return ctx


def reload(ctx: ssl.SSLContext, options: ServerOptions) -> None:
    assert options.cert and options.pkey
    try:
        ctx.load_cert_chain(options.cert, options.pkey)
    except (OSError, ssl.SSLError) as err:
        raise OptionsError(
            f"cannot load cert {options.cert} / pkey {options.pkey}: {err}"
        ) from None
