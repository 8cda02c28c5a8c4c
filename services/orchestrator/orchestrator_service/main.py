"""Commands of the orchestrator service."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from orchestrator_service.app import build_app
from orchestrator_service.publisher import AmqpJobPublisher
from orchestrator_service.settings import load_settings
from saaschat.amqp import AmqpClient
from saaschat.app import create_context
from saaschat.health import Check
from saaschat.shutdown import serve as serve_app

log = logging.getLogger("orchestrator")


async def serve() -> int:
    settings = load_settings()
    ctx = create_context(settings.service, "My-SaaS-Chat orchestrator: background job intake")
    amqp = AmqpClient(settings.rabbit, client_name=settings.service.name)
    publisher = AmqpJobPublisher(amqp, ctx.breaker("rabbitmq"))
    app = build_app(ctx, publisher)
    ctx.health.add(
        Check("rabbitmq", amqp.ping, "component", required=True, breaker=publisher.breaker)
    )

    async def amqp_lifetime(app: web.Application) -> AsyncIterator[None]:
        amqp.start()
        yield
        await amqp.close()

    app.cleanup_ctx.append(amqp_lifetime)
    return await serve_app(app, ctx.lifecycle)


async def migrate() -> int:
    log.info("no database: nothing to migrate")
    return 0
