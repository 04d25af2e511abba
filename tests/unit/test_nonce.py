"""relay.turn.nonce: stateless RFC 8489 §9.2 nonces with the security feature cookie."""

from __future__ import annotations

import re

import pytest

from relay.stun.constants import NONCE_COOKIE
from relay.turn.nonce import (
    FEATURE_PASSWORD_ALGORITHMS,
    FEATURE_USERNAME_ANONYMITY,
    NonceFactory,
    encode_features,
)

SECRET = bytes(range(32))
NOW = 1_700_000_000.25
CLIENT = "udp:192.0.2.10:50000"
# RFC 3261 qdtext without LWS/UTF8-NONASCII; every nonce character must be in it.
QDTEXT = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def factory(**kwargs: object) -> NonceFactory:
    params: dict[str, object] = {"secret": SECRET, "lifetime": 600.0, "features": 0}
    params.update(kwargs)
    return NonceFactory(**params)  # type: ignore[arg-type]


def replace_at(text: str, index: int) -> str:
    # A different character from the same alphabet class, so only the MAC can notice.
    old = text[index]
    new = "A" if old != "A" else "B"
    if old in "0123456789abcdef" and index < 25:
        new = "0" if old != "0" else "1"
    return text[:index] + new + text[index + 1 :]


def test_nonce_issue_layout() -> None:
    nonce = factory().issue(NOW, CLIENT)
    assert nonce.startswith(NONCE_COOKIE + "AAAA")
    assert len(nonce) == 47 < 128  # RFC 8489 §14.10
    assert QDTEXT.fullmatch(nonce)
    expiry_ms = int(nonce[13:25], 16)
    assert expiry_ms == int((NOW + 600.0) * 1000)


def test_nonce_issue_is_deterministic_and_bound_to_client() -> None:
    f = factory()
    assert f.issue(NOW, CLIENT) == f.issue(NOW, CLIENT)
    assert f.issue(NOW, CLIENT) != f.issue(NOW, "udp:192.0.2.10:50001")


def test_nonce_features_encoding_bit_order() -> None:
    # RFC 8489 §18.1 as published: Bit 0 is the leftmost (most significant) bit.
    assert encode_features(0) == "AAAA"
    assert encode_features(FEATURE_PASSWORD_ALGORITHMS) == "gAAA"
    assert encode_features(FEATURE_USERNAME_ANONYMITY) == "QAAA"
    assert encode_features(FEATURE_PASSWORD_ALGORITHMS | FEATURE_USERNAME_ANONYMITY) == "wAAA"
    assert encode_features(0xFFFFFF) == "////"
    with pytest.raises(ValueError):
        encode_features(1 << 24)
    with pytest.raises(ValueError):
        encode_features(-1)


def test_nonce_features_of_round_trip() -> None:
    features = FEATURE_PASSWORD_ALGORITHMS | FEATURE_USERNAME_ANONYMITY
    f = factory(features=features)
    nonce = f.issue(NOW, CLIENT)
    assert nonce.startswith(NONCE_COOKIE + "wAAA")
    assert f.features_of(nonce) == features
    assert f.check(nonce, NOW, CLIENT) == "ok"


def test_nonce_features_of_foreign_nonces() -> None:
    f = factory()
    # RFC 8489 Appendix B.1 sample nonce: feature bytes 00 00 02.
    assert f.features_of("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA") == 2
    assert f.features_of("f//499k954d6OL34oL9FSTvy64sA") is None  # no cookie
    assert f.features_of(NONCE_COOKIE) is None
    assert f.features_of(NONCE_COOKIE + "AA=") is None
    assert f.features_of(NONCE_COOKIE + "AA==xyz") is None
    assert f.features_of(NONCE_COOKIE + "AAé€") is None
    assert f.features_of("") is None


def test_nonce_check_ok_until_expiry() -> None:
    f = factory()
    nonce = f.issue(NOW, CLIENT)
    assert f.check(nonce, NOW, CLIENT) == "ok"
    assert f.check(nonce, NOW + 599.0, CLIENT) == "ok"
    assert f.check(nonce, NOW + 599.998, CLIENT) == "ok"


def test_nonce_check_stale_after_lifetime() -> None:
    f = factory(lifetime=30.0)
    nonce = f.issue(NOW, CLIENT)
    assert f.check(nonce, NOW + 30.0, CLIENT) == "stale"
    assert f.check(nonce, NOW + 3600.0, CLIENT) == "stale"


def test_nonce_check_stale_when_features_changed() -> None:
    old = factory(features=0)
    nonce = old.issue(NOW, CLIENT)
    new = factory(features=FEATURE_PASSWORD_ALGORITHMS)
    assert new.check(nonce, NOW, CLIENT) == "stale"
    assert old.check(nonce, NOW, CLIENT) == "ok"


def test_nonce_check_invalid_for_wrong_client() -> None:
    f = factory()
    nonce = f.issue(NOW, CLIENT)
    assert f.check(nonce, NOW, "udp:192.0.2.11:50000") == "invalid"
    assert f.check(nonce, NOW, "") == "invalid"
    # Expired and for someone else: still invalid, never "stale" (that would leak validity).
    assert f.check(nonce, NOW + 10_000, "tcp:192.0.2.10:50000") == "invalid"


def test_nonce_check_invalid_for_other_secret() -> None:
    nonce = factory().issue(NOW, CLIENT)
    other = factory(secret=b"another secret of 32 bytes......")
    assert other.check(nonce, NOW, CLIENT) == "invalid"


@pytest.mark.parametrize("index", [9, 12, 13, 20, 24, 25, 35, 46])
def test_nonce_check_invalid_when_tampered(index: int) -> None:
    f = factory()
    nonce = f.issue(NOW, CLIENT)
    tampered = replace_at(nonce, index)
    assert tampered != nonce
    assert f.check(tampered, NOW, CLIENT) == "invalid"


def test_nonce_check_invalid_when_expiry_extended() -> None:
    f = factory()
    nonce = f.issue(NOW, CLIENT)
    later = f"{int(nonce[13:25], 16) + 10**9:012x}"
    forged = nonce[:13] + later + nonce[25:]
    assert f.check(forged, NOW + 10_000, CLIENT) == "invalid"


def test_nonce_check_invalid_when_features_stripped() -> None:
    # Bid-down (RFC 8489 §9.2.1): clearing the feature bits must break the MAC.
    f = factory(features=FEATURE_PASSWORD_ALGORITHMS)
    nonce = f.issue(NOW, CLIENT)
    stripped = nonce[:9] + "AAAA" + nonce[13:]
    assert factory(features=0).check(stripped, NOW, CLIENT) == "invalid"
    assert f.check(stripped, NOW, CLIENT) == "invalid"


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "x",
        NONCE_COOKIE,
        "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA",
        "f" * 47,
        "obmatjos2" + "A" * 38,
    ],
)
def test_nonce_check_invalid_for_garbage(garbage: str) -> None:
    assert factory().check(garbage, NOW, CLIENT) == "invalid"


def test_nonce_check_invalid_for_truncated_or_extended() -> None:
    f = factory()
    nonce = f.issue(NOW, CLIENT)
    assert f.check(nonce[:-1], NOW, CLIENT) == "invalid"
    assert f.check(nonce + "A", NOW, CLIENT) == "invalid"
    assert f.check(nonce + "\n", NOW, CLIENT) == "invalid"
    assert f.check(" " + nonce, NOW, CLIENT) == "invalid"
    expiry = nonce[13:25]
    assert expiry == "018bcfee90ba"  # has hex letters, so upper-casing changes it
    assert f.check(nonce[:13] + expiry.upper() + nonce[25:], NOW, CLIENT) == "invalid"


def test_nonce_check_invalid_for_non_ascii() -> None:
    f = factory()
    nonce = f.issue(NOW, CLIENT)
    assert f.check(nonce[:-1] + "é", NOW, CLIENT) == "invalid"
    assert f.check(nonce[:20] + "٣" + nonce[21:], NOW, CLIENT) == "invalid"  # Arabic-Indic 3
    assert f.check("obMatJos2" + "\uff21" * 4, NOW, CLIENT) == "invalid"


def test_nonce_client_may_be_any_unicode() -> None:
    f = factory()
    client = "tls:[2001:db8::1]:443 Ünïcode \udcff"
    nonce = f.issue(NOW, client)
    assert f.check(nonce, NOW, client) == "ok"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"secret": b""},
        {"secret": b"short"},
        {"lifetime": 0.0},
        {"lifetime": -1.0},
        {"lifetime": float("nan")},
        {"lifetime": float("inf")},
        {"features": 1 << 24},
        {"features": -1},
    ],
)
def test_nonce_factory_rejects_bad_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        factory(**kwargs)


def test_nonce_issue_rejects_time_out_of_range() -> None:
    with pytest.raises(ValueError):
        factory().issue(-1000.0, CLIENT)


def test_nonce_features_of_own_feature_set_needs_ascii_too() -> None:
    f = factory(features=FEATURE_PASSWORD_ALGORITHMS)
    nonce = f.issue(NOW, CLIENT)
    assert f.features_of(nonce) == FEATURE_PASSWORD_ALGORITHMS
    assert f.features_of(nonce[:13]) == FEATURE_PASSWORD_ALGORITHMS  # the cookie part is enough
    assert f.features_of(nonce + "é") is None  # as for any other non-ASCII nonce
    assert factory(features=0).features_of(nonce) == FEATURE_PASSWORD_ALGORITHMS


def test_nonce_issue_mac_is_base64url_of_the_hmac() -> None:
    # RFC 4648 §5 alphabet, no padding: the layout the module docstring promises
    import base64
    import hashlib
    import hmac

    nonce = factory().issue(NOW, CLIENT)
    prefix, mac = nonce[:25], nonce[25:]
    message = b"natlab-relay nonce v1\x00" + prefix.encode() + CLIENT.encode()
    digest = hmac.new(SECRET, message, hashlib.sha256).digest()[:16]
    assert mac == base64.urlsafe_b64encode(digest).decode().rstrip("=")
