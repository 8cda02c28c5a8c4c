"""Event storage in PostgreSQL."""

from __future__ import annotations

import json
from typing import Protocol

from analytics_service.events import Event
from saaschat.db import Database


class EventStore(Protocol):
    async def add(self, event: Event) -> int: ...
    async def count(self, name: str) -> int: ...
    async def counts(self) -> dict[str, int]: ...


class PgEventStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, event: Event) -> int:
        """Store the event; a trigger (migration 0002) bumps its name's count."""
        async with self.db.connection() as conn:
            event_id = await conn.fetchval(
                "INSERT INTO events (name, properties) VALUES ($1, $2::jsonb) RETURNING id",
                event.name,
                json.dumps(event.properties),
            )
        return int(event_id)

    async def count(self, name: str) -> int:
        async with self.db.connection() as conn:
            value = await conn.fetchval("SELECT count FROM event_counts WHERE name = $1", name)
        return int(value or 0)

    async def counts(self) -> dict[str, int]:
        async with self.db.connection() as conn:
            rows = await conn.fetch("SELECT name, count FROM event_counts ORDER BY name LIMIT 1000")
        return {r["name"]: int(r["count"]) for r in rows}
