import pytest

from analytics_service.app import build_app
from analytics_service.events import MAX_PROPERTIES_BYTES, InvalidEvent, parse_event


class FakeEventStore:
    def __init__(self):
        self.events = []

    async def add(self, event):
        self.events.append(event)
        return len(self.events)

    async def count(self, name):
        return sum(1 for e in self.events if e.name == name)

    async def counts(self):
        result = {}
        for e in self.events:
            result[e.name] = result.get(e.name, 0) + 1
        return result


def test_parse_event():
    event = parse_event({"name": "signup.completed", "properties": {"plan": "pro"}})
    assert (event.name, event.properties) == ("signup.completed", {"plan": "pro"})
    assert parse_event({"name": "x"}).properties == {}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "bad name"},
        {"name": "-leading"},
        {"name": "x" * 101},
        {"name": "ok", "properties": [1]},
        {"name": "ok", "properties": {"blob": "x" * MAX_PROPERTIES_BYTES}},
    ],
)
def test_invalid_events(body):
    with pytest.raises(InvalidEvent):
        parse_event(body)


async def test_ingest_and_count(service_context, make_client):
    store = FakeEventStore()
    ctx = service_context()
    client = await make_client(build_app(ctx, store))
    for _ in range(2):
        resp = await client.post("/api/analytics/events", json={"name": "login", "properties": {}})
        assert resp.status == 201
    await client.post("/api/analytics/events", json={"name": "signup"})
    assert (await client.post("/api/analytics/events", json={"name": "no way"})).status == 400
    resp = await client.get("/api/analytics/counts?name=login")
    assert await resp.json() == {"name": "login", "count": 2}
    assert await (await client.get("/api/analytics/counts?name=never")).json() == {
        "name": "never",
        "count": 0,
    }
    assert await (await client.get("/api/analytics/counts")).json() == {
        "counts": {"login": 2, "signup": 1}
    }
    assert (await client.get("/api/analytics/counts?name=bad%20name")).status == 400
    metrics = ctx.metrics.render()
    assert "analytics_events_ingested_total 3" in metrics
    assert "analytics_events_rejected_total 1" in metrics
