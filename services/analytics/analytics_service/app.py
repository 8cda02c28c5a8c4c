"""HTTP API of the analytics service."""

from __future__ import annotations

from aiohttp import web

from analytics_service.events import InvalidEvent, parse_event, validate_name
from analytics_service.store import EventStore
from saaschat.app import ServiceContext, create_app, error_response, json_response, read_json_object

STORE = web.AppKey("analytics_store", object)
METRICS = web.AppKey("analytics_metrics", dict)


async def ingest(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    try:
        event = parse_event(body)
    except InvalidEvent as exc:
        request.app[METRICS]["rejected"].inc()
        return error_response(400, str(exc))
    store: EventStore = request.app[STORE]
    event_id = await store.add(event)
    request.app[METRICS]["ingested"].inc()
    return json_response({"id": event_id, "name": event.name}, status=201)


async def counts(request: web.Request) -> web.Response:
    store: EventStore = request.app[STORE]
    name = request.query.get("name")
    if name is None:
        return json_response({"counts": await store.counts()})
    try:
        name = validate_name(name)
    except InvalidEvent as exc:
        return error_response(400, str(exc))
    return json_response({"name": name, "count": await store.count(name)})


def build_app(ctx: ServiceContext, store: EventStore) -> web.Application:
    app = create_app(ctx, client_max_size=32 * 1024)
    app[STORE] = store
    app[METRICS] = {
        "ingested": ctx.metrics.counter("analytics_events_ingested_total", "Events stored."),
        "rejected": ctx.metrics.counter("analytics_events_rejected_total", "Invalid events."),
    }
    app.router.add_post("/api/analytics/events", ingest)
    app.router.add_get("/api/analytics/counts", counts)
    return app
