import base64
import json

import pytest

from saaschat.config import Secret
from saaschat.tokens import TokenError, TokenSigner, bearer_token

KEY = Secret("k" * 40)
NOW = 1_700_000_000


def _reason(signer, token, now=NOW + 1):
    with pytest.raises(TokenError) as info:
        signer.verify(token, now=now)
    return info.value.reason


def test_issue_and_verify_round_trip():
    signer = TokenSigner(KEY, ttl_seconds=600)
    claims = signer.verify(signer.issue(7, "a@example.com", now=NOW), now=NOW + 599)
    assert (claims.user_id, claims.email) == (7, "a@example.com")
    assert claims.expires_at - claims.issued_at == 600


def test_expired_token_is_rejected():
    signer = TokenSigner(KEY, ttl_seconds=600)
    token = signer.issue(7, "a@example.com", now=NOW)
    assert _reason(signer, token, now=NOW + 600) == "expired"


def test_tampered_payload_is_rejected():
    signer = TokenSigner(KEY)
    header, payload, signature = signer.issue(7, "a@example.com", now=NOW).split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=="))
    data["sub"] = "1"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    assert _reason(signer, f"{header}.{forged}.{signature}") == "bad_signature"


def test_token_from_another_key_is_rejected():
    other = TokenSigner(Secret("x" * 40)).issue(7, "a@example.com", now=NOW)
    assert _reason(TokenSigner(KEY), other) == "bad_signature"


def test_previous_key_still_verifies_during_rotation():
    old_token = TokenSigner(KEY).issue(7, "a@example.com", now=NOW)
    rotated = TokenSigner(Secret("n" * 40), previous_secrets=[KEY])
    assert rotated.verify(old_token, now=NOW + 1).user_id == 7


def test_unsigned_alg_none_token_is_rejected():
    def seg(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    token = f"{seg({'alg': 'none'})}.{seg({'sub': '1', 'email': 'x', 'iat': 0, 'exp': 9e9})}."
    assert _reason(TokenSigner(KEY), token) == "malformed"


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "a..c", "é.b.c"])
def test_malformed_tokens(token):
    assert _reason(TokenSigner(KEY), token) in {"malformed", "bad_signature"}


def test_bearer_header_parsing():
    assert bearer_token("Bearer abc.def") == "abc.def"
    assert bearer_token("bearer   tok ") == "tok"
    assert bearer_token("Basic dXNlcg==") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None
