import asyncio
import datetime as dt

import aiohttp
import pytest

from chat_service.app import build_app
from chat_service.hub import CHANNEL_PREFIX, RESYNC, Client, Hub
from chat_service.store import Message
from saaschat.breaker import CircuitBreaker
from saaschat.config import Secret
from saaschat.tokens import TokenSigner

SECRET = Secret("c" * 40)
TOKEN = TokenSigner(SECRET).issue(3, "carol@example.com")
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def msg(id_, room="lobby", text="hi"):
    return Message(id_, room, 3, "carol@example.com", text, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))


class FakeMessageStore:
    """In-memory stand-in for PgMessageStore: increasing ids, publish inside post."""

    def __init__(self):
        self.messages: list[Message] = []
        self.fail = False

    async def post(self, room, user_id, author, text, publish):
        message = Message(
            len(self.messages) + 1, room, user_id, author, text, dt.datetime.now(dt.UTC)
        )
        self.messages.append(message)
        await publish(message)
        return message

    async def after(self, room, after_id, limit):
        if self.fail:
            raise ConnectionError("database down")
        return [m for m in self.messages if m.room == room and m.id > after_id][:limit]

    async def latest(self, room, limit):
        return [m for m in self.messages if m.room == room][-limit:]

    async def last_id(self, room):
        return max((m.id for m in self.messages if m.room == room), default=0)


class FakeRedis:
    """Pub/sub broker at the Redis boundary: every publish reaches every subscribed hub."""

    def __init__(self):
        self.hubs: list[Hub] = []
        self.published: list[tuple[str, str]] = []
        self.down = False

    async def publish(self, channel, payload):
        if self.down:
            raise ConnectionError("redis down")
        self.published.append((channel, payload))
        for hub in self.hubs:
            hub.handle_pubsub_message({"type": "pmessage", "channel": channel, "data": payload})
        return len(self.hubs)


def test_message_json_round_trip():
    original = msg(5, text="héllo")
    assert Message.decode(original.encode()) == original


def test_client_delivers_each_id_once_and_in_order():
    client = Client("lobby", last_id=2)
    client.offer(msg(2))  # already seen
    client.offer(msg(3))
    assert client.queue.qsize() == 1
    assert client.accept(msg(3)) is True
    assert client.accept(msg(3)) is False
    assert client.accept(msg(1)) is False
    assert client.last_id == 3


def test_overflowing_client_falls_back_to_resync():
    client = Client("lobby")
    for i in range(1, 1000):
        client.offer(msg(i))
    assert client.queue.qsize() <= 256
    items = [client.queue.get_nowait() for _ in range(client.queue.qsize())]
    assert RESYNC in items


async def test_publish_goes_to_the_room_channel():
    redis = FakeRedis()
    hub = Hub(redis, CircuitBreaker("redis"))
    assert await hub.publish(msg(1, room="ops")) is True
    channel, payload = redis.published[0]
    assert channel == CHANNEL_PREFIX + "ops"
    assert Message.decode(payload).id == 1


async def test_publish_failure_or_open_breaker_makes_local_clients_resync():
    redis = FakeRedis()
    redis.down = True
    breaker = CircuitBreaker("redis", failure_threshold=1, reset_timeout=60)
    hub = Hub(redis, breaker)
    lobby, other = Client("lobby"), Client("other")
    hub.register(lobby)
    hub.register(other)
    assert await hub.publish(msg(1)) is False
    assert breaker.state == "open"
    assert lobby.queue.get_nowait() == RESYNC
    assert other.queue.empty()
    assert await hub.publish(msg(2)) is False  # fails fast now, still resyncs
    assert lobby.queue.get_nowait() == RESYNC


def test_resubscription_makes_every_local_client_resync():
    hub = Hub(FakeRedis(), CircuitBreaker("redis"))
    clients = [Client("a"), Client("b")]
    for client in clients:
        hub.register(client)
    hub.handle_pubsub_message({"type": "psubscribe", "data": 1})
    assert [c.queue.get_nowait() for c in clients] == [RESYNC, RESYNC]
    hub.handle_pubsub_message({"type": "pmessage", "data": b"not json"})  # ignored
    assert all(c.queue.empty() for c in clients)


@pytest.fixture
async def replicas(service_context, make_client):
    """Two chat replicas sharing one database and one Redis (both faked at the boundary)."""
    store, redis = FakeMessageStore(), FakeRedis()
    clients = []
    for _ in range(2):
        hub = Hub(redis, CircuitBreaker("redis"))
        redis.hubs.append(hub)
        app = build_app(service_context(), store, hub, TokenSigner(SECRET))
        clients.append(await make_client(app))
    return clients, store, redis


async def receive(ws):
    return await asyncio.wait_for(ws.receive_json(), 2)


async def test_message_posted_on_one_replica_reaches_websocket_on_the_other(replicas):
    (a, b), _, _ = replicas
    ws = await b.ws_connect(f"/ws?room=lobby&token={TOKEN}")
    assert (await receive(ws))["type"] == "ready"
    resp = await a.post("/api/chat/messages", json={"room": "lobby", "text": "hello"}, headers=AUTH)
    assert resp.status == 201
    posted = await resp.json()
    pushed = await receive(ws)
    assert pushed["type"] == "message"
    assert (pushed["id"], pushed["text"], pushed["author"]) == (
        posted["id"],
        "hello",
        posted["author"],
    )
    await ws.close()


async def test_reconnect_with_since_receives_what_was_missed(replicas):
    (a, b), _, _ = replicas
    ids = []
    for text in ("one", "two", "three"):
        resp = await a.post(
            "/api/chat/messages", json={"room": "lobby", "text": text}, headers=AUTH
        )
        ids.append((await resp.json())["id"])
    ws = await b.ws_connect(f"/ws?room=lobby&token={TOKEN}&since={ids[0]}")
    got = [await receive(ws), await receive(ws)]
    assert [g["text"] for g in got] == ["two", "three"]
    assert await receive(ws) == {"type": "ready", "room": "lobby", "last_id": ids[2]}
    await ws.close()


async def test_messages_missed_during_a_redis_outage_arrive_after_resubscription(replicas):
    (a, b), _, redis = replicas
    ws = await b.ws_connect(f"/ws?room=lobby&token={TOKEN}")
    await receive(ws)
    redis.down = True
    resp = await a.post("/api/chat/messages", json={"room": "lobby", "text": "lost?"}, headers=AUTH)
    assert resp.status == 201  # stored even though fan-out failed
    redis.down = False
    for hub in redis.hubs:  # what the subscriber does when its subscription is back
        hub.handle_pubsub_message({"type": "psubscribe", "data": 1})
    assert (await receive(ws))["text"] == "lost?"
    await ws.close()


async def test_websocket_closes_with_1013_when_catch_up_fails(replicas):
    (_, b), store, _ = replicas
    store.fail = True
    ws = await b.ws_connect(f"/ws?room=lobby&token={TOKEN}&since=0")
    frame = await asyncio.wait_for(ws.receive(), 2)
    assert frame.type == aiohttp.WSMsgType.CLOSE
    assert frame.data == 1013


async def test_api_requires_auth_and_validates(replicas):
    (a, _), _, _ = replicas
    assert (await a.get("/api/chat/messages?room=lobby")).status == 401
    assert (await a.get(f"/ws?room=lobby&token={TOKEN}x")).status == 401
    bad_room = await a.post(
        "/api/chat/messages", json={"room": "no spaces", "text": "x"}, headers=AUTH
    )
    assert bad_room.status == 400
    empty = await a.post("/api/chat/messages", json={"room": "lobby", "text": "  "}, headers=AUTH)
    assert empty.status == 400
    assert (await a.get("/api/chat/messages?room=lobby&since=-1", headers=AUTH)).status == 400


async def test_history_latest_and_since(replicas):
    (a, _), _, _ = replicas
    for i in range(5):
        await a.post("/api/chat/messages", json={"room": "lobby", "text": f"m{i}"}, headers=AUTH)
    latest = await (await a.get("/api/chat/messages?room=lobby&limit=2", headers=AUTH)).json()
    assert [m["text"] for m in latest["messages"]] == ["m3", "m4"]
    since = await (await a.get("/api/chat/messages?room=lobby&since=3", headers=AUTH)).json()
    assert [m["id"] for m in since["messages"]] == [4, 5]


async def test_shutdown_closes_websockets_with_going_away(service_context, make_client):
    ctx = service_context()
    hub = Hub(FakeRedis(), CircuitBreaker("redis"))
    client = await make_client(build_app(ctx, FakeMessageStore(), hub, TokenSigner(SECRET)))
    ws = await client.ws_connect(f"/ws?room=lobby&token={TOKEN}")
    await receive(ws)
    await ctx.lifecycle.close_websockets()
    frame = await asyncio.wait_for(ws.receive(), 2)
    assert frame.type == aiohttp.WSMsgType.CLOSE
    assert frame.data == 1001
    ctx.lifecycle.begin_shutdown("test")
    assert (await client.get(f"/ws?room=lobby&token={TOKEN}")).status == 503
