"""HTTP API of the auth service."""

from __future__ import annotations

from aiohttp import web

from auth_service.passwords import PasswordHasher, validate_password
from auth_service.store import UserStore
from saaschat.app import (
    ServiceContext,
    authenticate,
    create_app,
    error_response,
    json_response,
    read_json_object,
)
from saaschat.tokens import TokenSigner
from saaschat.validation import normalize_email

STORE = web.AppKey("auth_store", object)
SIGNER = web.AppKey("auth_signer", TokenSigner)
HASHER = web.AppKey("auth_hasher", PasswordHasher)
METRICS = web.AppKey("auth_metrics", dict)


async def register(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    email = normalize_email(body.get("email"))
    counters = request.app[METRICS]
    if email is None:
        counters["registrations"].inc(result="invalid")
        return error_response(400, "email must be a valid address")
    problem = validate_password(body.get("password"))
    if problem:
        counters["registrations"].inc(result="invalid")
        return error_response(400, problem)
    store: UserStore = request.app[STORE]
    password_hash = await request.app[HASHER].hash(body["password"])
    user = await store.create(email, password_hash)
    if user is None:
        counters["registrations"].inc(result="duplicate")
        return error_response(409, "email already registered")
    counters["registrations"].inc(result="created")
    return json_response({"id": user.id, "email": user.email}, status=201)


async def login(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    email = normalize_email(body.get("email"))
    password = body.get("password")
    counters = request.app[METRICS]
    if email is None or not isinstance(password, str) or validate_password(password):
        counters["logins"].inc(result="failure")
        return error_response(401, "invalid email or password")
    store: UserStore = request.app[STORE]
    user = await store.by_email(email)
    ok = await request.app[HASHER].verify(password, user.password_hash if user else None)
    if not ok or user is None:
        counters["logins"].inc(result="failure")
        return error_response(401, "invalid email or password")
    await store.record_login(user.id)
    signer = request.app[SIGNER]
    counters["logins"].inc(result="success")
    return json_response(
        {
            "token": signer.issue(user.id, user.email),
            "token_type": "Bearer",
            "expires_in": signer.ttl_seconds,
        }
    )


async def me(request: web.Request) -> web.Response:
    claims = authenticate(request, request.app[SIGNER])
    user = await request.app[STORE].by_id(claims.user_id)
    if user is None:
        return error_response(401, "user no longer exists")
    return json_response(user.public())


def build_app(
    ctx: ServiceContext, store: UserStore, signer: TokenSigner, hasher: PasswordHasher
) -> web.Application:
    app = create_app(ctx, client_max_size=16 * 1024)
    app[STORE] = store
    app[SIGNER] = signer
    app[HASHER] = hasher
    app[METRICS] = {
        "registrations": ctx.metrics.counter(
            "auth_registrations_total", "Registration attempts by result.", ("result",)
        ),
        "logins": ctx.metrics.counter(
            "auth_logins_total", "Login attempts by result.", ("result",)
        ),
    }
    app.router.add_post("/api/auth/register", register)
    app.router.add_post("/api/auth/login", login)
    app.router.add_get("/api/auth/me", me)
    return app
