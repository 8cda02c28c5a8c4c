"""Message storage in PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from saaschat.db import Database

# First key of the two-key advisory lock taken per room while a message is inserted and
# published ("CHAT" in ASCII); the second key is hashtext(room).
ROOM_LOCK_CLASS = 0x43484154


@dataclass(frozen=True)
class Message:
    id: int
    room: str
    user_id: int
    author: str
    text: str
    created_at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "room": self.room,
            "user_id": self.user_id,
            "author": self.author,
            "text": self.text,
            "created_at": self.created_at.isoformat(),
        }

    def encode(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str | bytes) -> Message:
        data = json.loads(raw)
        return cls(
            id=int(data["id"]),
            room=str(data["room"]),
            user_id=int(data["user_id"]),
            author=str(data["author"]),
            text=str(data["text"]),
            created_at=dt.datetime.fromisoformat(data["created_at"]),
        )


Publish = Callable[[Message], Awaitable[None]]


class MessageStore(Protocol):
    async def post(
        self, room: str, user_id: int, author: str, text: str, publish: Publish
    ) -> Message: ...
    async def after(self, room: str, after_id: int, limit: int) -> list[Message]: ...
    async def latest(self, room: str, limit: int) -> list[Message]: ...
    async def last_id(self, room: str) -> int: ...


_COLUMNS = "id, room, user_id, author, text, created_at"


class PgMessageStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def post(
        self, room: str, user_id: int, author: str, text: str, publish: Publish
    ) -> Message:
        """Insert and publish under the room's advisory lock, so that within a room ids are
        committed and published in increasing order."""
        async with self.db.connection() as conn:
            await conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", ROOM_LOCK_CLASS, room)
            try:
                row = await conn.fetchrow(
                    f"INSERT INTO messages (room, user_id, author, text) VALUES ($1, $2, $3, $4) "
                    f"RETURNING {_COLUMNS}",
                    room,
                    user_id,
                    author,
                    text,
                )
                message = Message(**dict(row))
                await publish(message)
            finally:
                await conn.execute(
                    "SELECT pg_advisory_unlock($1, hashtext($2))", ROOM_LOCK_CLASS, room
                )
        return message

    async def after(self, room: str, after_id: int, limit: int) -> list[Message]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM messages WHERE room = $1 AND id > $2 ORDER BY id LIMIT $3",
                room,
                after_id,
                limit,
            )
        return [Message(**dict(r)) for r in rows]

    async def latest(self, room: str, limit: int) -> list[Message]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM messages WHERE room = $1 ORDER BY id DESC LIMIT $2",
                room,
                limit,
            )
        return [Message(**dict(r)) for r in reversed(rows)]

    async def last_id(self, room: str) -> int:
        async with self.db.connection() as conn:
            value = await conn.fetchval(
                "SELECT COALESCE(MAX(id), 0) FROM messages WHERE room = $1", room
            )
        return int(value)
