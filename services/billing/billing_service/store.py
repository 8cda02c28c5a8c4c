"""Billing storage in PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from billing_service.webhook import SubscriptionChange, WebhookEvent
from saaschat.db import Database


class UnknownPlan(Exception):
    pass


@dataclass(frozen=True)
class Plan:
    id: str
    name: str
    price_cents: int
    currency: str
    billing_interval: str

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "price_cents": self.price_cents,
            "currency": self.currency,
            "interval": self.billing_interval,
        }


class BillingStore(Protocol):
    async def plans(self) -> list[Plan]: ...
    async def record_event(
        self, event: WebhookEvent, change: SubscriptionChange | None
    ) -> bool: ...


class PgBillingStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def plans(self) -> list[Plan]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                "SELECT id, name, price_cents, currency, billing_interval FROM plans "
                "ORDER BY price_cents, id"
            )
        return [Plan(**dict(r)) for r in rows]

    async def record_event(self, event: WebhookEvent, change: SubscriptionChange | None) -> bool:
        """Record the event and apply its effect in one transaction. Returns False, changing
        nothing, when the event id was recorded before: the primary key decides, so two
        concurrent deliveries of one event cannot both apply it."""
        async with self.db.connection() as conn, conn.transaction():
            inserted = await conn.fetchval(
                "INSERT INTO webhook_events (event_id, type, payload) VALUES ($1, $2, $3::jsonb) "
                "ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                event.id,
                event.type,
                json.dumps(event.raw),
            )
            if inserted is None:
                return False
            if change is not None:
                try:
                    await conn.execute(
                        "INSERT INTO subscriptions (customer_id, plan_id, status, last_event_id) "
                        "VALUES ($1, $2, $3, $4) ON CONFLICT (customer_id) DO UPDATE SET "
                        "plan_id = EXCLUDED.plan_id, status = EXCLUDED.status, "
                        "last_event_id = EXCLUDED.last_event_id, updated_at = now()",
                        change.customer_id,
                        change.plan_id,
                        change.status,
                        event.id,
                    )
                except asyncpg.exceptions.ForeignKeyViolationError:
                    raise UnknownPlan(change.plan_id) from None
            return True
