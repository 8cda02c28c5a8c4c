import base64

from auth_service.passwords import (
    MAX_LENGTH,
    PasswordHasher,
    hash_password,
    validate_password,
    verify_password,
)

FAST_N = 2**10  # keeps the tests quick; production uses 2**14


def test_hash_verifies_only_the_right_password():
    stored = hash_password("correct horse", n=FAST_N)
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsE", stored)
    assert "correct horse" not in stored


def test_format_and_per_user_salt():
    first = hash_password("same password", n=FAST_N)
    second = hash_password("same password", n=FAST_N)
    assert first != second  # random salt per hash
    scheme, n, r, p, salt, key = first.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(FAST_N), "8", "1")
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(key)) == 32


def test_default_cost_is_production_strength():
    assert hash_password("pw", salt=b"0" * 16).split("$")[1] == str(2**14)


def test_corrupt_hashes_never_verify():
    for stored in (
        "",
        "plain",
        "bcrypt$1$2$3$4$5",
        "scrypt$x$8$1$AA==$AA==",
        "scrypt$1024$8$1$!$!",
    ):
        assert verify_password("pw", stored) is False


def test_password_policy():
    assert validate_password("12345678") is None
    assert "at least" in validate_password("short")
    assert "at most" in validate_password("x" * (MAX_LENGTH + 1))
    assert validate_password(12345678) == "password must be a string"


async def test_async_hasher_and_unknown_user_path():
    hasher = PasswordHasher(n=FAST_N)
    stored = await hasher.hash("a long password")
    assert await hasher.verify("a long password", stored) is True
    assert await hasher.verify("a long password", None) is False


def test_settings_require_a_long_token_secret():
    import pytest

    from auth_service.settings import load_settings
    from saaschat.config import ConfigError

    base = {"POSTGRES_PASSWORD": "pw"}
    with pytest.raises(
        ConfigError, match="missing required environment variable AUTH_TOKEN_SECRET"
    ):
        load_settings(base)
    with pytest.raises(ConfigError, match="AUTH_TOKEN_SECRET must be at least 32"):
        load_settings({**base, "AUTH_TOKEN_SECRET": "short"})
    settings = load_settings({**base, "AUTH_TOKEN_SECRET": "x" * 32, "AUTH_DB_NAME": "users"})
    assert settings.postgres.database == "users"
    assert settings.token_ttl_seconds == 3600
