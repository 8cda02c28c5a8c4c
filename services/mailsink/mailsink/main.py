"""The mail sink: aiosmtpd on MAILSINK_SMTP_PORT and an HTTP API on MAILSINK_HTTP_PORT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP

from mailsink.store import MailStore
from saaschat.app import ServiceContext, create_app, create_context, json_response
from saaschat.config import env_int, load_service_settings
from saaschat.health import Check
from saaschat.metrics import Counter
from saaschat.shutdown import serve as serve_app

log = logging.getLogger("mailsink")

STORE = web.AppKey("mailsink_store", MailStore)


class SinkHandler:
    """aiosmtpd handler: every message is accepted and stored."""

    def __init__(self, store: MailStore, received: Counter | None = None) -> None:
        self.store = store
        self.received = received

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        entry = self.store.add(envelope.mail_from or "", list(envelope.rcpt_tos), raw)
        if self.received is not None:
            self.received.inc()
        log.info(
            "mail received",
            extra={"id": entry["id"], "from": entry["from"], "rcpt": entry["to"]},
        )
        return "250 Message accepted for delivery"


async def list_messages(request: web.Request) -> web.Response:
    to = request.query.get("to")
    return json_response({"messages": request.app[STORE].list(to)})


async def delete_messages(request: web.Request) -> web.Response:
    return json_response({"deleted": request.app[STORE].clear()})


def build_app(ctx: ServiceContext, store: MailStore) -> web.Application:
    app = create_app(ctx, client_max_size=1024)
    app[STORE] = store
    app.router.add_get("/messages", list_messages)
    app.router.add_delete("/messages", delete_messages)
    return app


async def serve() -> int:
    http_port = env_int("MAILSINK_HTTP_PORT", 8025, minimum=1, maximum=65535)
    smtp_port = env_int("MAILSINK_SMTP_PORT", 1025, minimum=1, maximum=65535)
    limit = env_int("MAILSINK_MAX_MESSAGES", 1000, minimum=1, maximum=100_000)
    service = load_service_settings("mailsink", port=http_port)
    ctx = create_context(service, "My-SaaS-Chat mail sink for the local stack")
    store = MailStore(limit)
    received = ctx.metrics.counter("mailsink_messages_received_total", "Mail accepted.")
    handler = SinkHandler(store, received)
    app = build_app(ctx, store)
    server: asyncio.base_events.Server | None = None

    async def smtp_listening() -> None:
        if server is None or not server.is_serving():
            raise ConnectionError("SMTP listener not serving")

    ctx.health.add(Check("smtp", smtp_listening, "component", required=True))

    async def smtp_lifetime(app: web.Application) -> AsyncIterator[None]:
        nonlocal server
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="mailsink", enable_SMTPUTF8=True),
            host=service.host,
            port=smtp_port,
        )
        log.info("smtp listening", extra={"port": smtp_port})
        yield
        server.close()
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)

    app.cleanup_ctx.append(smtp_lifetime)
    return await serve_app(app, ctx.lifecycle)


async def migrate() -> int:
    log.info("no database: nothing to migrate")
    return 0
