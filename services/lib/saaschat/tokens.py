"""Access tokens: compact JWS (JWT) signed with HMAC-SHA256.

Issued by auth, verified by auth and chat with the same AUTH_TOKEN_SECRET. During a key
rotation the previous key (AUTH_TOKEN_SECRET_PREVIOUS) is still accepted for verification, so
tokens issued before the rotation stay valid until they expire.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from saaschat.config import Secret

ALGORITHM = "HS256"
_HEADER = {"alg": ALGORITHM, "typ": "JWT"}
ISSUER = "my-saas-chat-auth"


class TokenError(Exception):
    """The token is not acceptable; ``reason`` is one of malformed, bad_signature, expired."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Claims:
    user_id: int
    email: str
    issued_at: int
    expires_at: int


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    padding = "=" * (-len(text) % 4)
    try:
        return base64.urlsafe_b64decode(text + padding)
    except (binascii.Error, ValueError):
        raise TokenError("malformed") from None


def _sign(key: Secret, signing_input: bytes) -> bytes:
    return hmac.new(key.reveal().encode("utf-8"), signing_input, hashlib.sha256).digest()


class TokenSigner:
    def __init__(
        self,
        secret: Secret,
        ttl_seconds: int = 3600,
        previous_secrets: Sequence[Secret] = (),
    ) -> None:
        if not secret:
            raise ValueError("token secret must not be empty")
        self._secret = secret
        self._verify_keys = [secret, *[s for s in previous_secrets if s]]
        self.ttl_seconds = ttl_seconds

    def issue(self, user_id: int, email: str, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        payload = {
            "iss": ISSUER,
            "sub": str(user_id),
            "email": email,
            "iat": issued,
            "exp": issued + self.ttl_seconds,
        }
        header_b64 = b64url_encode(json.dumps(_HEADER, separators=(",", ":")).encode())
        payload_b64 = b64url_encode(json.dumps(payload, separators=(",", ":")).encode())
        signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
        return f"{header_b64}.{payload_b64}.{b64url_encode(_sign(self._secret, signing_input))}"

    def verify(self, token: str, now: float | None = None) -> Claims:
        parts = token.split(".") if token else []
        if len(parts) != 3 or not all(parts):
            raise TokenError("malformed")
        header_b64, payload_b64, signature_b64 = parts
        signature = b64url_decode(signature_b64)
        try:
            signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
        except UnicodeEncodeError:
            raise TokenError("malformed") from None
        # Check the signature before looking inside: nothing unauthenticated is parsed.
        valid = False
        for key in self._verify_keys:
            if hmac.compare_digest(_sign(key, signing_input), signature):
                valid = True
        if not valid:
            raise TokenError("bad_signature")
        header = _load_json(header_b64)
        if header.get("alg") != ALGORITHM:
            raise TokenError("malformed")
        payload = _load_json(payload_b64)
        try:
            claims = Claims(
                user_id=int(payload["sub"]),
                email=str(payload["email"]),
                issued_at=int(payload["iat"]),
                expires_at=int(payload["exp"]),
            )
        except (KeyError, TypeError, ValueError):
            raise TokenError("malformed") from None
        if payload.get("iss") != ISSUER:
            raise TokenError("malformed")
        current = time.time() if now is None else now
        if current >= claims.expires_at:
            raise TokenError("expired")
        return claims


def _load_json(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(segment))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TokenError("malformed") from None
    if not isinstance(value, dict):
        raise TokenError("malformed")
    return value


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
