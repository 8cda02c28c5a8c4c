"""Password hashing with scrypt and a random per-user salt.

Stored form: ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``; the parameters travel with the hash,
so they can be raised later without invalidating existing users.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
KEY_BYTES = 32
SALT_BYTES = 16
MIN_LENGTH = 8
MAX_LENGTH = 1024  # bounds the work an attacker can make us do


def _derive(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=64 * 1024 * 1024
    )


def hash_password(password: str, *, n: int = SCRYPT_N, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    key = _derive(password, salt, n, SCRYPT_R, SCRYPT_P, KEY_BYTES)
    salt_b64 = base64.b64encode(salt).decode()
    key_b64 = base64.b64encode(key).decode()
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${salt_b64}${key_b64}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, key_b64 = encoded.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(key_b64, validate=True)
        actual = _derive(password, salt, int(n), int(r), int(p), len(expected))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


def validate_password(password: object) -> str | None:
    """An error message, or None when the password is acceptable."""
    if not isinstance(password, str):
        return "password must be a string"
    if len(password) < MIN_LENGTH:
        return f"password must be at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"password must be at most {MAX_LENGTH} characters"
    return None


class PasswordHasher:
    """Runs scrypt in a worker thread so the event loop keeps serving."""

    def __init__(self, n: int = SCRYPT_N) -> None:
        self.n = n
        # Verified against when the email is unknown, so both paths cost the same.
        self._dummy = hash_password(secrets.token_urlsafe(16), n=n)

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(hash_password, password, n=self.n)

    async def verify(self, password: str, encoded: str | None) -> bool:
        if encoded is None:
            await asyncio.to_thread(verify_password, password, self._dummy)
            return False
        return await asyncio.to_thread(verify_password, password, encoded)
