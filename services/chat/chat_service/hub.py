"""Delivery of new messages to WebSocket clients on every replica.

Each message is published to the Redis channel ``chat:room:<room>``; every replica holds one
pattern subscription (``chat:room:*``) and hands the messages to its local clients. A client
only ever receives ids above the last one it got, and when something may have been missed
(the subscription was re-established, Redis could not take a publish, the client's queue
overflowed) the client is told to *resync*: it reads everything after its last id from
PostgreSQL. Ids within a room are committed and published in order, so this catch-up is
complete and ordered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any, Protocol

from chat_service.store import Message
from saaschat.breaker import CircuitBreaker, CircuitOpenError

log = logging.getLogger("chat.hub")

CHANNEL_PREFIX = "chat:room:"
CHANNEL_PATTERN = CHANNEL_PREFIX + "*"
RESYNC = "resync"
QUEUE_SIZE = 256


class PubSubBackend(Protocol):
    async def publish(self, channel: str, payload: str) -> Any: ...


class Client:
    """One WebSocket connection's view: its room, last delivered id and pending items."""

    def __init__(self, room: str, last_id: int = 0) -> None:
        self.room = room
        self.last_id = last_id
        self.queue: asyncio.Queue[Message | str] = asyncio.Queue(QUEUE_SIZE)

    def offer(self, item: Message | str) -> None:
        if isinstance(item, Message) and item.id <= self.last_id:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            # Drop what is queued; the database has all of it.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(RESYNC)

    def accept(self, message: Message) -> bool:
        """True if ``message`` is new for this client (and records it as delivered)."""
        if message.id <= self.last_id:
            return False
        self.last_id = message.id
        return True


class Hub:
    def __init__(self, backend: PubSubBackend | None, breaker: CircuitBreaker) -> None:
        self.backend = backend
        self.breaker = breaker
        self.clients: dict[str, set[Client]] = defaultdict(set)
        self.publish_timeout = 1.0

    # ---------------------------------------------------------------- local clients

    def register(self, client: Client) -> None:
        self.clients[client.room].add(client)

    def unregister(self, client: Client) -> None:
        room = self.clients.get(client.room)
        if room is not None:
            room.discard(client)
            if not room:
                del self.clients[client.room]

    def connected(self) -> int:
        return sum(len(c) for c in self.clients.values())

    def deliver_local(self, message: Message) -> None:
        for client in list(self.clients.get(message.room, ())):
            client.offer(message)

    def resync_local(self, room: str | None = None) -> None:
        rooms = [room] if room is not None else list(self.clients)
        for name in rooms:
            for client in list(self.clients.get(name, ())):
                client.offer(RESYNC)

    # ---------------------------------------------------------------- fan-out

    async def publish(self, message: Message) -> bool:
        """Fan the message out through Redis. Never raises: when Redis cannot take it, local
        clients of the room resync from the database instead (other replicas' clients catch
        up when their subscription comes back)."""
        if self.backend is None:
            self.resync_local(message.room)
            return False
        try:
            await self.breaker.call(
                lambda: asyncio.wait_for(
                    self.backend.publish(CHANNEL_PREFIX + message.room, message.encode()),
                    self.publish_timeout,
                )
            )
            return True
        except CircuitOpenError:
            pass
        except Exception as exc:
            log.warning(
                "redis publish failed; local clients resync from the database",
                extra={"room": message.room, "error": exc.__class__.__name__},
            )
        self.resync_local(message.room)
        return False

    def handle_pubsub_message(self, item: dict[str, Any]) -> None:
        kind = item.get("type")
        if kind == "psubscribe":
            # A (re)subscription: the client library reconnects and resubscribes on its own,
            # and anything published meanwhile was not seen here.
            log.info("subscribed to room channels", extra={"pattern": CHANNEL_PATTERN})
            self.resync_local()
            return
        if kind not in ("pmessage", "message"):
            return
        try:
            message = Message.decode(item["data"])
        except Exception:
            log.warning("ignored malformed pub/sub message")
            return
        self.deliver_local(message)

    async def run_subscriber(self, redis_client: Any) -> None:
        """Keep one pattern subscription alive; each subscription confirmation (the first, and
        every one after a reconnect) makes the local clients resync, covering anything
        published while the subscription was down."""
        delay = 0.5
        while True:
            pubsub = redis_client.pubsub()
            try:
                await pubsub.psubscribe(CHANNEL_PATTERN)
                delay = 0.5
                while True:
                    item = await pubsub.get_message(timeout=1.0)
                    if item is not None:
                        self.handle_pubsub_message(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "redis subscription lost, retrying",
                    extra={"error": exc.__class__.__name__, "retry_in": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), 1.0)
