"""relay.turn.auth: static users, coturn's TURN REST secret (seed 003 recipe), combination."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from relay.stun.constants import PasswordAlgorithm
from relay.stun.integrity import long_term_key
from relay.turn.auth import (
    Authenticator,
    CombinedAuth,
    KeyLookup,
    RestSecret,
    StaticUsers,
    quota_identity,
    rest_password,
)

MD5 = PasswordAlgorithm.MD5
SHA256 = PasswordAlgorithm.SHA256
REALM = "natlab"
NOW = 1_700_000_000.0
SECRET = "c0ffee-natlab-secret"


def md5_key(username: str, realm: str, password: str) -> bytes:
    return hashlib.md5(f"{username}:{realm}:{password}".encode(), usedforsecurity=False).digest()


def sha256_key(username: str, realm: str, password: str) -> bytes:
    return hashlib.sha256(f"{username}:{realm}:{password}".encode()).digest()


def seed_recipe_password(secret: str, username: str) -> str:
    # echo -n $username | openssl dgst -binary -sha1 -hmac $SECRET | openssl base64
    mac = hmac.new(secret.encode(), username.encode(), "sha1").digest()
    return base64.b64encode(mac).decode()


# --- StaticUsers ------------------------------------------------------------------------------


def test_static_users_md5_key() -> None:
    users = StaticUsers((("alice", "wonderland"), ("bob", "builder")))
    assert users.lookup("alice", REALM, MD5, NOW) == KeyLookup(
        (md5_key("alice", REALM, "wonderland"),)
    )
    assert users.lookup("bob", REALM, MD5, NOW).keys == (md5_key("bob", REALM, "builder"),)


def test_static_users_sha256_key() -> None:
    users = StaticUsers((("alice", "wonderland"),))
    result = users.lookup("alice", REALM, SHA256, NOW)
    assert result.keys == (sha256_key("alice", REALM, "wonderland"),)
    assert len(result.keys[0]) == 32


def test_static_users_key_matches_integrity_module() -> None:
    users = StaticUsers((("alice", "wonderland"),))
    for algorithm in (MD5, SHA256):
        expected = long_term_key("alice", REALM, "wonderland", algorithm)
        assert users.lookup("alice", REALM, algorithm, NOW).keys == (expected,)


def test_static_users_unknown_user() -> None:
    users = StaticUsers((("alice", "wonderland"),))
    assert users.lookup("mallory", REALM, MD5, NOW) == KeyLookup((), "unknown-user")
    assert users.lookup("Alice", REALM, MD5, NOW).reason == "unknown-user"  # exact match
    assert StaticUsers().lookup("alice", REALM, MD5, NOW).reason == "unknown-user"


def test_static_users_precomputed_md5_key() -> None:
    # coturn: user=name:0x<hex of MD5(name:realm:password)> (turnadmin -k output).
    key = md5_key("carol", REALM, "s3cret")
    users = StaticUsers((("carol", "0x" + key.hex()),))
    assert users.lookup("carol", REALM, MD5, NOW) == KeyLookup((key,))
    upper = StaticUsers((("carol", "0x" + key.hex().upper()),))
    assert upper.lookup("carol", REALM, MD5, NOW).keys == (key,)


def test_static_users_precomputed_key_unavailable_for_sha256() -> None:
    users = StaticUsers((("carol", "0x" + "00" * 16),))
    assert users.lookup("carol", REALM, SHA256, NOW) == KeyLookup((), "algorithm-unavailable")


def test_static_users_unknown_algorithm() -> None:
    users = StaticUsers((("alice", "wonderland"),))
    assert users.lookup("alice", REALM, 0x0003, NOW).reason == "algorithm-unavailable"
    assert users.lookup("alice", REALM, 0x0000, NOW).reason == "algorithm-unavailable"


def test_static_users_later_entry_wins() -> None:
    users = StaticUsers((("alice", "old"), ("alice", "new")))
    assert users.lookup("alice", REALM, MD5, NOW).keys == (md5_key("alice", REALM, "new"),)


@pytest.mark.parametrize("value", ["0x1234", "0x" + "g" * 32, "0x" + "00" * 17, "0x"])
def test_static_users_rejects_malformed_hex_key(value: str) -> None:
    with pytest.raises(ValueError, match="'dave'"):
        StaticUsers((("dave", value),))


def test_static_users_rejects_password_saslprep_refuses() -> None:
    with pytest.raises(ValueError, match="'erin'"):
        StaticUsers((("erin", "bad\u0007password"),))


def test_static_users_password_goes_through_opaquestring() -> None:
    # RFC 8489 Appendix B.1: "The<U+00AD>M<U+00AA>tr<U+2168>" prepares to "TheMatrIX".
    users = StaticUsers((("neo", "The\u00adM\u00aatr\u2168"),))
    assert users.lookup("neo", REALM, MD5, NOW).keys == (md5_key("neo", REALM, "TheMatrIX"),)


def test_static_users_bad_realm_is_a_reason_not_an_exception() -> None:
    users = StaticUsers((("alice", "wonderland"),))
    assert users.lookup("alice", "evil\u0000realm", MD5, NOW) == KeyLookup((), "bad-realm")


# --- rest_password / RestSecret (seed 003 recipe) ---------------------------------------------


def test_rest_password_golden() -> None:
    # Computed with the seed's shell recipe (openssl dgst -sha1 -hmac ... | openssl base64).
    assert rest_password(SECRET, "1700008400") == "3YJTwqyN1XAkDmIS6E/eCb54veQ="
    assert rest_password(SECRET, "1700008400:alice") == "+t+P6RN/GXhMfsUuZDIk17LQu34="


def test_rest_secret_seed_recipe_key() -> None:
    # Seed: username = now + 8400 (expiry), password = base64(HMAC-SHA1(secret, username)).
    username = str(int(NOW) + 8400)
    password = seed_recipe_password(SECRET, username)
    assert password == rest_password(SECRET, username)
    result = RestSecret((SECRET,)).lookup(username, REALM, MD5, NOW)
    assert result == KeyLookup((md5_key(username, REALM, password),))
    assert result.keys[0].hex() == "f84e75a89a423a87c53055694a0996d1"  # md5sum of the recipe


def test_rest_secret_sha256_key() -> None:
    username = "1700008400"
    result = RestSecret((SECRET,)).lookup(username, REALM, SHA256, NOW)
    assert result.keys == (sha256_key(username, REALM, rest_password(SECRET, username)),)


def test_rest_secret_timestamp_then_user() -> None:
    username = "1700008400:alice"
    password = seed_recipe_password(SECRET, username)
    result = RestSecret((SECRET,)).lookup(username, REALM, MD5, NOW)
    assert result.keys == (md5_key(username, REALM, password),)


def test_rest_secret_user_then_timestamp() -> None:
    # coturn also reads "user:ts" when the part before the separator is not all digits.
    username = "alice:1700008400"
    result = RestSecret((SECRET,)).lookup(username, REALM, MD5, NOW)
    assert result.keys == (md5_key(username, REALM, seed_recipe_password(SECRET, username)),)
    assert RestSecret((SECRET,)).lookup("alice:1600000000", REALM, MD5, NOW).reason == "expired"


def test_rest_secret_expired() -> None:
    auth = RestSecret((SECRET,))
    assert auth.lookup(str(int(NOW) - 1), REALM, MD5, NOW) == KeyLookup((), "expired")
    assert auth.lookup("0:alice", REALM, MD5, NOW).reason == "expired"
    assert auth.lookup("1699999999", REALM, MD5, NOW + 0.5).reason == "expired"


def test_rest_secret_valid_in_its_last_second() -> None:
    # coturn: expired only when expiry < now.
    auth = RestSecret((SECRET,))
    assert auth.lookup(str(int(NOW)), REALM, MD5, NOW).keys
    assert auth.lookup(str(int(NOW)), REALM, MD5, NOW + 0.5).reason == "expired"


@pytest.mark.parametrize(
    "username",
    ["alice", "", ":", "alice:bob", "12a:bob", "bob:12a", "-1700008400", "+1700008400",
     "1.7e9", " 1700008400", "\u0661\u0667\u0660\u0660", "1" * 21],
)  # fmt: skip
def test_rest_secret_bad_username(username: str) -> None:
    assert RestSecret((SECRET,)).lookup(username, REALM, MD5, NOW) == KeyLookup((), "bad-username")


def test_rest_secret_one_key_per_secret() -> None:
    username = "1700008400:alice"
    auth = RestSecret(("old-secret", "new-secret", "old-secret"))
    result = auth.lookup(username, REALM, MD5, NOW)
    assert result.keys == (
        md5_key(username, REALM, seed_recipe_password("old-secret", username)),
        md5_key(username, REALM, seed_recipe_password("new-secret", username)),
    )


def test_rest_secret_unknown_algorithm() -> None:
    result = RestSecret((SECRET,)).lookup("1700008400", REALM, 7, NOW)
    assert result == KeyLookup((), "algorithm-unavailable")


def test_rest_secret_needs_a_secret() -> None:
    with pytest.raises(ValueError):
        RestSecret(())


# --- CombinedAuth -----------------------------------------------------------------------------


def test_combined_auth_first_part_with_keys_wins() -> None:
    static = StaticUsers((("alice", "wonderland"),))
    rest = RestSecret((SECRET,))
    combined: Authenticator = CombinedAuth((static, rest))
    assert combined.lookup("alice", REALM, MD5, NOW) == static.lookup("alice", REALM, MD5, NOW)
    assert combined.lookup("1700008400", REALM, MD5, NOW) == rest.lookup(
        "1700008400", REALM, MD5, NOW
    )


def test_combined_auth_reports_most_telling_reason() -> None:
    combined = CombinedAuth((StaticUsers((("alice", "x"),)), RestSecret((SECRET,))))
    assert combined.lookup("1600000000", REALM, MD5, NOW).reason == "expired"
    assert combined.lookup("mallory", REALM, MD5, NOW).reason == "bad-username"


def test_combined_auth_unknown_user() -> None:
    combined = CombinedAuth((StaticUsers((("alice", "x"),)), StaticUsers((("bob", "y"),))))
    assert combined.lookup("bob", REALM, MD5, NOW).keys == (md5_key("bob", REALM, "y"),)
    assert combined.lookup("carol", REALM, MD5, NOW) == KeyLookup((), "unknown-user")
    assert CombinedAuth(()).lookup("carol", REALM, MD5, NOW) == KeyLookup((), "unknown-user")


# --- quota_identity ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "identity"),
    [
        ("1700008400:alice", "alice"),
        ("alice:1700008400", "alice"),
        ("1700008400:alice:work", "alice:work"),
        ("1700008400", "1700008400"),
        ("1700008400:", "1700008400:"),
        ("alice", "alice"),
        ("alice:bob", "alice:bob"),
    ],
)
def test_quota_identity(username: str, identity: str) -> None:
    assert quota_identity(username) == identity


def test_rest_secret_cached_key_still_expires() -> None:
    # the derivation is cached per username; the expiry is compared with now on every lookup
    auth = RestSecret((SECRET,))
    username = f"{int(NOW) + 10}:alice"
    first = auth.lookup(username, REALM, MD5, NOW)
    assert first.keys and auth.lookup(username, REALM, MD5, NOW + 5) == first
    assert auth.lookup(username, REALM, MD5, NOW + 11) == KeyLookup((), "expired")
    assert auth.lookup(username, REALM, SHA256, NOW).keys == (
        sha256_key(username, REALM, seed_recipe_password(SECRET, username)),
    )
    assert auth.lookup(username, "other", MD5, NOW).keys != first.keys


def test_rest_secret_cache_is_bounded() -> None:
    import relay.turn.auth as auth_module

    auth = RestSecret((SECRET,))
    for i in range(auth_module.REST_CACHE_SIZE + 5):
        auth.lookup(f"{int(NOW) + 60}:user{i}", REALM, MD5, NOW)
    assert 0 < len(auth._cache) <= auth_module.REST_CACHE_SIZE
    assert auth == RestSecret((SECRET,))  # the cache is no part of equality


def test_rest_secret_cached_reasons_keep_their_order() -> None:
    auth = RestSecret((SECRET,))
    for _ in range(2):  # first derived, then cached
        assert auth.lookup("alice", REALM, MD5, NOW) == KeyLookup((), "bad-username")
        assert auth.lookup("1600000000", REALM, 7, NOW) == KeyLookup((), "expired")
        assert auth.lookup("1800000000", REALM, 7, NOW).reason == "algorithm-unavailable"
        assert auth.lookup("1800000000", "bad\u0007realm", MD5, NOW).reason == "bad-realm"
