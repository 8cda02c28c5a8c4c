import datetime as dt
import logging

import pytest

from auth_service.app import build_app
from auth_service.passwords import PasswordHasher
from auth_service.store import User
from saaschat.config import Secret
from saaschat.tokens import TokenSigner


class FakeUserStore:
    """In-memory stand-in for PgUserStore with the same uniqueness rule (lower(email))."""

    def __init__(self):
        self.users: dict[int, User] = {}

    async def create(self, email, password_hash):
        if any(u.email.lower() == email.lower() for u in self.users.values()):
            return None
        user = User(len(self.users) + 1, email, password_hash, dt.datetime.now(dt.UTC))
        self.users[user.id] = user
        return user

    async def by_email(self, email):
        return next((u for u in self.users.values() if u.email.lower() == email.lower()), None)

    async def by_id(self, user_id):
        return self.users.get(user_id)

    async def record_login(self, user_id):
        user = self.users[user_id]
        self.users[user_id] = User(
            user.id, user.email, user.password_hash, user.created_at, dt.datetime.now(dt.UTC)
        )


SECRET = Secret("s" * 40)


@pytest.fixture
async def auth(service_context, make_client):
    store = FakeUserStore()
    ctx = service_context()
    app = build_app(ctx, store, TokenSigner(SECRET, 300), PasswordHasher(n=2**10))
    client = await make_client(app)
    return client, store, ctx


async def register(client, email="Ann@Example.com", password="a good password"):
    return await client.post("/api/auth/register", json={"email": email, "password": password})


async def test_register_then_duplicate_is_409(auth):
    client, store, _ = auth
    resp = await register(client)
    assert resp.status == 201
    assert await resp.json() == {"id": 1, "email": "ann@example.com"}
    assert (await register(client, email="ANN@example.com")).status == 409
    assert len(store.users) == 1
    assert store.users[1].password_hash.startswith("scrypt$")
    assert "a good password" not in store.users[1].password_hash


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "password": "a good password"},
        {"email": "a@b.co", "password": "short"},
        {"email": "a@b.co"},
        {"password": "a good password"},
    ],
)
async def test_register_validates_input(auth, body):
    client, store, _ = auth
    resp = await client.post("/api/auth/register", json=body)
    assert resp.status == 400
    assert "error" in await resp.json()
    assert store.users == {}


async def test_login_issues_a_token_that_me_accepts(auth):
    client, _, _ = auth
    await register(client)
    resp = await client.post(
        "/api/auth/login", json={"email": "ann@example.com", "password": "a good password"}
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    claims = TokenSigner(SECRET).verify(body["token"])
    assert (claims.user_id, claims.email) == (1, "ann@example.com")
    me = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status == 200
    profile = await me.json()
    assert profile["email"] == "ann@example.com"
    assert profile["last_login_at"] is not None
    assert "password_hash" not in profile


async def test_login_failures_are_indistinguishable(auth):
    client, _, ctx = auth
    await register(client)
    wrong = await client.post(
        "/api/auth/login", json={"email": "ann@example.com", "password": "wrong password"}
    )
    unknown = await client.post(
        "/api/auth/login", json={"email": "bob@example.com", "password": "a good password"}
    )
    assert wrong.status == unknown.status == 401
    assert await wrong.json() == await unknown.json()
    text = ctx.metrics.render()
    assert 'auth_logins_total{result="failure"} 2' in text


async def test_me_requires_a_valid_token(auth):
    client, _, _ = auth
    assert (await client.get("/api/auth/me")).status == 401
    forged = TokenSigner(Secret("f" * 40)).issue(1, "ann@example.com")
    resp = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {forged}"})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_passwords_and_tokens_never_reach_the_logs(auth, caplog):
    client, _, _ = auth
    caplog.set_level(logging.DEBUG)
    await register(client, password="Sup3r-Secret-Pass")
    resp = await client.post(
        "/api/auth/login", json={"email": "ann@example.com", "password": "Sup3r-Secret-Pass"}
    )
    token = (await resp.json())["token"]
    await client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    logged = "\n".join(str(r.__dict__) for r in caplog.records)
    assert any(r.getMessage() == "request" for r in caplog.records)  # requests were logged
    assert "Sup3r-Secret-Pass" not in logged
    assert token not in logged
