"""Commands of the email worker."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from email_worker.settings import load_settings
from email_worker.smtp import SmtpSender
from email_worker.worker import Consumer, EmailProcessor
from saaschat.amqp import AmqpClient
from saaschat.app import create_app, create_context
from saaschat.health import Check
from saaschat.shutdown import serve as serve_app

log = logging.getLogger("email_worker")


async def run() -> int:
    settings = load_settings()
    ctx = create_context(settings.service, "My-SaaS-Chat email worker: delivers queued mail")
    sender = SmtpSender(settings.smtp)
    processor = EmailProcessor(
        sender, ctx.breaker("smtp"), settings.retry, settings.smtp.sender, ctx.metrics
    )
    consumer = Consumer(processor)
    amqp = AmqpClient(
        settings.rabbit, client_name=settings.service.name, prefetch=1, on_channel=consumer.start
    )
    # Health and metrics only: the worker has no API.
    app = create_app(ctx, client_max_size=1024)
    ctx.health.add(Check("rabbitmq", amqp.ping, "component", required=True))
    ctx.health.add(
        Check("smtp", sender.probe, "component", required=False, breaker=processor.breaker)
    )

    async def stop_consuming(app: web.Application) -> None:
        await consumer.stop(timeout=max(0.5, ctx.lifecycle.remaining_grace() - 1.0))

    async def amqp_lifetime(app: web.Application) -> AsyncIterator[None]:
        amqp.start()
        yield
        await amqp.close()

    # Stop taking jobs as soon as SIGTERM arrives; on_shutdown waits for the current one.
    ctx.lifecycle.on_begin.append(lambda: consumer.stop(timeout=settings.service.grace_seconds))
    app.on_shutdown.append(stop_consuming)
    app.cleanup_ctx.append(amqp_lifetime)
    return await serve_app(app, ctx.lifecycle)


async def migrate() -> int:
    log.info("no database: nothing to migrate")
    return 0
