"""HTTP and WebSocket API of the chat service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

from aiohttp import WSCloseCode, WSMsgType, web

from chat_service.hub import RESYNC, Client, Hub
from chat_service.store import Message, MessageStore
from saaschat.app import (
    CONTEXT,
    ServiceContext,
    authenticate,
    create_app,
    error_response,
    json_response,
    read_json_object,
)
from saaschat.metrics import Counter
from saaschat.tokens import TokenSigner

log = logging.getLogger("chat.api")

STORE = web.AppKey("chat_store", object)
HUB = web.AppKey("chat_hub", Hub)
SIGNER = web.AppKey("chat_signer", TokenSigner)
METRICS = web.AppKey("chat_metrics", dict)

ROOM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_TEXT = 4000
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
BACKLOG_PAGE = 200


def _room(value: object) -> str:
    if not isinstance(value, str) or not ROOM.match(value):
        raise web.HTTPBadRequest(reason="room must be 1-64 letters, digits, '_', '.' or '-'")
    return value


def _non_negative_int(value: str | None, name: str, default: int | None = None) -> int | None:
    if value is None or value == "":
        return default
    if not value.isdigit() or len(value) > 18:
        raise web.HTTPBadRequest(reason=f"{name} must be a non-negative integer")
    return int(value)


async def post_message(request: web.Request) -> web.Response:
    claims = authenticate(request, request.app[SIGNER])
    body = await read_json_object(request)
    room = _room(body.get("room"))
    text = body.get("text")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        return error_response(400, f"text must be a non-empty string of at most {MAX_TEXT} chars")
    store: MessageStore = request.app[STORE]
    hub = request.app[HUB]
    message = await store.post(room, claims.user_id, claims.email, text, hub.publish)
    request.app[METRICS]["posted"].inc()
    return json_response(message.to_json(), status=201)


async def list_messages(request: web.Request) -> web.Response:
    authenticate(request, request.app[SIGNER])
    room = _room(request.query.get("room"))
    since = _non_negative_int(request.query.get("since"), "since")
    limit = _non_negative_int(request.query.get("limit"), "limit", DEFAULT_LIMIT)
    limit = max(1, min(limit, MAX_LIMIT))
    store: MessageStore = request.app[STORE]
    if since is None:
        messages = await store.latest(room, limit)
    else:
        messages = await store.after(room, since, limit)
    return json_response({"room": room, "messages": [m.to_json() for m in messages]})


async def _send(ws: web.WebSocketResponse, message: Message, counter: Counter) -> None:
    await ws.send_json({"type": "message", **message.to_json()})
    counter.inc()


async def _catch_up(
    ws: web.WebSocketResponse, client: Client, store: MessageStore, counter: Counter
) -> None:
    while True:
        page = await store.after(client.room, client.last_id, BACKLOG_PAGE)
        for message in page:
            if client.accept(message):
                await _send(ws, message, counter)
        if len(page) < BACKLOG_PAGE:
            return


async def _pump(
    ws: web.WebSocketResponse, client: Client, store: MessageStore, counter: Counter
) -> None:
    await _catch_up(ws, client, store, counter)
    await ws.send_json({"type": "ready", "room": client.room, "last_id": client.last_id})
    while True:
        item = await client.queue.get()
        if item == RESYNC:
            await _catch_up(ws, client, store, counter)
        elif isinstance(item, Message) and client.accept(item):
            await _send(ws, item, counter)


async def _run_pump(
    ws: web.WebSocketResponse, client: Client, store: MessageStore, counter: Counter
) -> None:
    """Deliver until cancelled; if delivery fails (database down during a catch-up), close
    with 1013 so the client reconnects with ``since`` and loses nothing."""
    try:
        await _pump(ws, client, store, counter)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning(
            "websocket delivery failed",
            extra={"room": client.room, "error": exc.__class__.__name__},
        )
        if not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"try again later")


async def websocket(request: web.Request) -> web.StreamResponse:
    """``GET /ws?room=R&token=T[&since=N]``: pushes each new message of the room as JSON.

    With ``since`` the client first receives every message after that id (a reconnecting
    client passes the last id it saw, and misses nothing across a restart of this replica).
    """
    ctx = request.app[CONTEXT]
    if ctx.lifecycle.shutting_down:
        return error_response(503, "shutting down", headers={"Retry-After": "1"})
    claims = authenticate(request, request.app[SIGNER], token=request.query.get("token", ""))
    room = _room(request.query.get("room"))
    since = _non_negative_int(request.query.get("since"), "since")
    store: MessageStore = request.app[STORE]
    hub = request.app[HUB]
    metrics = request.app[METRICS]

    client = Client(room)
    hub.register(client)  # before reading the backlog, so nothing falls in between
    try:
        client.last_id = since if since is not None else await store.last_id(room)
        ws = web.WebSocketResponse(heartbeat=25, max_msg_size=64 * 1024)
        await ws.prepare(request)
    except BaseException:
        hub.unregister(client)
        raise
    ctx.lifecycle.websockets.add(ws)
    metrics["connections"].inc()
    log.info("websocket opened", extra={"room": room, "user_id": claims.user_id})
    pump = asyncio.create_task(_run_pump(ws, client, store, metrics["pushed"]))
    try:
        async for frame in ws:
            if frame.type == WSMsgType.TEXT and frame.data == "ping":
                await ws.send_str("pong")
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        hub.unregister(client)
        ctx.lifecycle.websockets.discard(ws)
        metrics["connections"].dec()
        log.info("websocket closed", extra={"room": room, "close_code": ws.close_code})
    return ws


def build_app(
    ctx: ServiceContext, store: MessageStore, hub: Hub, signer: TokenSigner
) -> web.Application:
    app = create_app(ctx, client_max_size=64 * 1024)
    app[STORE] = store
    app[HUB] = hub
    app[SIGNER] = signer
    app[METRICS] = {
        "posted": ctx.metrics.counter("chat_messages_posted_total", "Messages stored."),
        "pushed": ctx.metrics.counter(
            "chat_messages_pushed_total", "Messages pushed to WebSocket clients."
        ),
        "connections": ctx.metrics.gauge(
            "chat_websocket_connections", "Open WebSocket connections on this replica."
        ),
    }
    app.router.add_post("/api/chat/messages", post_message)
    app.router.add_get("/api/chat/messages", list_messages)
    app.router.add_get("/ws", websocket)
    return app
