from aiohttp import web

from saaschat.app import create_app, read_json_object
from saaschat.errors import DependencyUnavailable
from saaschat.health import Check


class Switch:
    def __init__(self, up=True):
        self.up = up

    async def probe(self):
        if not self.up:
            raise ConnectionError("refused")


async def test_health_endpoints_follow_the_contract(service_context, make_client):
    ctx = service_context()
    db, cache = Switch(), Switch()
    ctx.health.add(Check("postgresql", db.probe))
    ctx.health.add(Check("smtp", cache.probe, "component", required=False))
    client = await make_client(create_app(ctx))

    assert (await client.get("/health/live")).status == 200
    assert (await client.get("/health/ready")).status == 200
    assert (await client.get("/health")).status == 200  # cached from the last evaluation

    cache.up = False  # optional dependency: degraded, still ready
    resp = await client.get("/health/detailed")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/health+json")
    doc = await resp.json(content_type=None)
    assert doc["status"] == "warn"
    assert (doc["serviceId"], doc["version"], doc["releaseId"]) == (
        "test-service",
        "1.2.3",
        "rel-42",
    )
    assert (await client.get("/health/ready")).status == 200

    db.up = False  # required dependency: not ready, detailed fails
    resp = await client.get("/health/ready")
    assert resp.status == 503
    ready = await resp.json()
    assert ready["failed"] and ready["reason"] == "dependency unavailable"
    # asked from the container's own loopback (its healthcheck): how each dependency failed
    assert ready["output"].startswith(f"{ready['failed'][0]}: ")
    resp = await client.get("/health/detailed")
    assert resp.status == 503
    assert (await resp.json(content_type=None))["status"] == "fail"
    assert (await client.get("/health")).status == 503
    assert (await client.get("/health/live")).status == 200  # liveness ignores dependencies

    db.up = True
    assert (await client.get("/health/ready")).status == 200
    ctx.lifecycle.begin_shutdown("test")
    resp = await client.get("/health/ready")
    assert resp.status == 503
    assert (await resp.json())["reason"] == "shutting down"
    assert (await client.get("/health")).status == 503
    assert (await client.get("/health/live")).status == 200


async def test_metrics_count_requests_by_route_and_status(service_context, make_client):
    ctx = service_context()
    app = create_app(ctx)

    async def item(request):
        return web.json_response({"id": request.match_info["id"]})

    app.router.add_get("/items/{id}", item)
    client = await make_client(app)
    await client.get("/items/1")
    await client.get("/items/2")
    await client.get("/nowhere")
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = await resp.text()
    assert 'http_requests_total{method="GET",route="/items/{id}",status="200"} 2' in text
    assert 'http_requests_total{method="GET",route="unmatched",status="404"} 1' in text
    assert 'http_request_duration_seconds_count{method="GET",route="/items/{id}"} 2' in text
    assert 'service_info{version="1.2.3",release_id="rel-42"} 1' in text


async def test_errors_are_json_and_dependency_failures_are_503(service_context, make_client):
    ctx = service_context()
    app = create_app(ctx, client_max_size=64)

    async def dead(request):
        raise DependencyUnavailable("postgresql", "down", retry_after=3)

    async def boom(request):
        raise RuntimeError("password=hunter2 leaked?")

    async def echo(request):
        return web.json_response(await read_json_object(request))

    app.router.add_get("/dead", dead)
    app.router.add_get("/boom", boom)
    app.router.add_post("/echo", echo)
    client = await make_client(app)

    resp = await client.get("/dead")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "3"
    assert await resp.json() == {"error": "dependency unavailable", "dependency": "postgresql"}
    resp = await client.get("/boom")
    assert resp.status == 500
    assert await resp.json() == {"error": "internal server error"}
    resp = await client.get("/missing")
    assert resp.status == 404
    assert (await resp.json())["error"] == "Not Found"
    assert (await client.post("/echo", data=b"[1, 2]")).status == 400
    assert (await client.post("/echo", data=b"{nope")).status == 400
    assert (await client.post("/echo", data=b'{"k": "' + b"x" * 100 + b'"}')).status == 413
    resp = await client.post("/echo", data=b'{"k": 1}', headers={"X-Request-ID": "abc"})
    assert await resp.json() == {"k": 1}
    assert resp.headers["X-Request-ID"] == "abc"
