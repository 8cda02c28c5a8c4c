import json

import pytest

from billing_service.app import build_app
from billing_service.store import Plan, UnknownPlan
from billing_service.webhook import sign
from saaschat.config import Secret

SECRET = Secret("whsec_0123456789abcdef")


class FakeBillingStore:
    """In-memory stand-in for PgBillingStore: event ids are unique keys, effects apply once."""

    def __init__(self):
        self.events: dict[str, str] = {}
        self.subscriptions: dict[str, tuple[str, str]] = {}
        self.applied = 0

    async def plans(self):
        return [Plan("free", "Free", 0, "EUR", "month"), Plan("pro", "Pro", 1200, "EUR", "month")]

    async def record_event(self, event, change):
        if event.id in self.events:
            return False
        if change is not None and change.plan_id not in {"free", "pro"}:
            raise UnknownPlan(change.plan_id)
        self.events[event.id] = event.type
        if change is not None:
            self.subscriptions[change.customer_id] = (change.plan_id, change.status)
            self.applied += 1
        return True


@pytest.fixture
async def billing(service_context, make_client):
    store = FakeBillingStore()
    ctx = service_context()
    client = await make_client(build_app(ctx, store, SECRET))
    return client, store, ctx


def event(event_id="evt_1", plan="pro", kind="subscription.created"):
    return json.dumps(
        {"id": event_id, "type": kind, "data": {"customer_id": "cus_9", "plan_id": plan}}
    ).encode()


async def deliver(client, body, signature=None):
    headers = {"X-Signature": signature or sign(body, SECRET), "Content-Type": "application/json"}
    return await client.post("/api/billing/webhook", data=body, headers=headers)


async def test_plans(billing):
    client, _, _ = billing
    resp = await client.get("/api/billing/plans")
    assert resp.status == 200
    plans = (await resp.json())["plans"]
    assert [p["id"] for p in plans] == ["free", "pro"]
    assert plans[1] == {
        "id": "pro",
        "name": "Pro",
        "price_cents": 1200,
        "currency": "EUR",
        "interval": "month",
    }


async def test_webhook_applies_once_and_replay_is_a_duplicate(billing):
    client, store, ctx = billing
    body = event()
    first = await deliver(client, body)
    assert first.status == 200
    assert await first.json() == {"received": True, "duplicate": False, "event_id": "evt_1"}
    replay = await deliver(client, body)
    assert replay.status == 200
    assert (await replay.json())["duplicate"] is True
    assert store.applied == 1
    assert store.subscriptions == {"cus_9": ("pro", "active")}
    metrics = ctx.metrics.render()
    assert 'billing_webhooks_total{result="accepted"} 1' in metrics
    assert 'billing_webhooks_total{result="duplicate"} 1' in metrics


async def test_bad_signature_is_401_and_changes_nothing(billing):
    client, store, _ = billing
    body = event()
    resp = await deliver(client, body, signature=sign(body, Secret("not-the-secret-value")))
    assert resp.status == 401
    missing = await client.post("/api/billing/webhook", data=body)
    assert missing.status == 401
    assert store.events == {}


async def test_signed_but_invalid_events(billing):
    client, store, _ = billing
    assert (await deliver(client, b'{"type": "x"}')).status == 400
    assert (await deliver(client, event(plan="platinum"))).status == 422
    assert store.events == {}
