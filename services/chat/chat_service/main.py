"""Commands of the chat service."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web

from chat_service.app import build_app
from chat_service.hub import Hub
from chat_service.settings import load_postgres, load_settings
from chat_service.store import PgMessageStore
from saaschat import db as dbmod
from saaschat.app import create_context
from saaschat.config import RedisSettings
from saaschat.health import Check
from saaschat.service import attach_database, migrations_directory
from saaschat.shutdown import serve as serve_app
from saaschat.tokens import TokenSigner

SERVICE_ROOT = Path(__file__).resolve().parent.parent


def redis_client(settings: RedisSettings) -> aioredis.Redis:
    return aioredis.Redis(
        host=settings.host,
        port=settings.port,
        db=settings.db,
        username=settings.username,
        password=settings.password.reveal() if settings.password else None,
        socket_connect_timeout=2,
        socket_timeout=3,
        health_check_interval=10,
        client_name="chat",
    )


async def serve() -> int:
    settings = load_settings()
    ctx = create_context(settings.service, "My-SaaS-Chat chat: rooms, messages, live push")
    migrations = dbmod.discover_migrations(migrations_directory(SERVICE_ROOT, settings.postgres))
    db = dbmod.Database(settings.postgres, ctx.breaker("postgresql"))
    publisher = redis_client(settings.redis)
    subscriber = redis_client(settings.redis)
    hub = Hub(publisher, ctx.breaker("redis"))
    signer = TokenSigner(
        settings.token_secret,
        previous_secrets=[settings.token_previous_secret] if settings.token_previous_secret else [],
    )
    app = build_app(ctx, PgMessageStore(db), hub, signer)
    attach_database(ctx, app, db, migrations)

    async def redis_ping() -> None:
        await publisher.ping()

    # Required: without Redis, messages posted on one replica do not reach clients on another.
    ctx.health.add(Check("redis", redis_ping, "datastore", required=True, breaker=hub.breaker))

    async def redis_lifetime(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(hub.run_subscriber(subscriber), name="redis-subscriber")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await publisher.aclose()
        await subscriber.aclose()

    app.cleanup_ctx.append(redis_lifetime)
    return await serve_app(app, ctx.lifecycle)


async def migrate() -> int:
    postgres = load_postgres()
    return await dbmod.migrate(postgres, migrations_directory(SERVICE_ROOT, postgres))
