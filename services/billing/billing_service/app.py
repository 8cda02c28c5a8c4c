"""HTTP API of the billing service."""

from __future__ import annotations

import logging

from aiohttp import web

from billing_service.store import BillingStore, UnknownPlan
from billing_service.webhook import (
    SIGNATURE_HEADER,
    InvalidEvent,
    parse_event,
    subscription_change,
    verify_signature,
)
from saaschat.app import ServiceContext, create_app, error_response, json_response
from saaschat.config import Secret

log = logging.getLogger("billing.api")

STORE = web.AppKey("billing_store", object)
SECRET = web.AppKey("billing_webhook_secret", Secret)
METRICS = web.AppKey("billing_metrics", dict)


async def list_plans(request: web.Request) -> web.Response:
    store: BillingStore = request.app[STORE]
    plans = await store.plans()
    return json_response({"plans": [p.to_json() for p in plans]})


async def webhook(request: web.Request) -> web.Response:
    counter = request.app[METRICS]["webhooks"]
    body = await request.read()
    if not verify_signature(body, request.headers.get(SIGNATURE_HEADER), request.app[SECRET]):
        counter.inc(result="invalid_signature")
        return error_response(401, "invalid signature")
    try:
        event = parse_event(body)
        change = subscription_change(event)
    except InvalidEvent as exc:
        counter.inc(result="invalid")
        return error_response(400, str(exc))
    store: BillingStore = request.app[STORE]
    try:
        recorded = await store.record_event(event, change)
    except UnknownPlan as exc:
        counter.inc(result="invalid")
        return error_response(422, f"unknown plan {exc}")
    if not recorded:
        counter.inc(result="duplicate")
        log.info("webhook replay ignored", extra={"event_id": event.id, "type": event.type})
        return json_response({"received": True, "duplicate": True, "event_id": event.id})
    counter.inc(result="accepted")
    log.info("webhook processed", extra={"event_id": event.id, "type": event.type})
    return json_response({"received": True, "duplicate": False, "event_id": event.id})


def build_app(ctx: ServiceContext, store: BillingStore, secret: Secret) -> web.Application:
    app = create_app(ctx, client_max_size=64 * 1024)
    app[STORE] = store
    app[SECRET] = secret
    app[METRICS] = {
        "webhooks": ctx.metrics.counter(
            "billing_webhooks_total", "Webhook deliveries by result.", ("result",)
        )
    }
    app.router.add_get("/api/billing/plans", list_plans)
    app.router.add_post("/api/billing/webhook", webhook)
    return app
