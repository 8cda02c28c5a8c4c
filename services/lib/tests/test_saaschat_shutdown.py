import asyncio

import aiohttp
from aiohttp import WSCloseCode, web

from saaschat.app import create_app
from saaschat.shutdown import serve


async def test_graceful_shutdown_drains_finishes_in_flight_and_closes_websockets(
    service_context,
):
    ctx = service_context(drain_seconds=0.3, grace_seconds=5.0)
    app = create_app(ctx)
    release = asyncio.Event()
    started = asyncio.Event()
    cleaned = []

    async def slow(request):
        started.set()
        await release.wait()
        return web.json_response({"done": True})

    async def ws_handler(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        ctx.lifecycle.websockets.add(ws)
        async for _ in ws:
            pass
        return ws

    async def pool(app):
        yield
        cleaned.append("pool closed")

    app.router.add_get("/slow", slow)
    app.router.add_get("/ws", ws_handler)
    app.cleanup_ctx.append(pool)
    bound = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        serve(app, ctx.lifecycle, install_signals=False, on_listening=bound.set_result)
    )
    (host, port), *_ = await asyncio.wait_for(bound, 5)
    base = f"http://{host}:{port}"

    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{base}/ws")
        in_flight = asyncio.create_task(session.get(f"{base}/slow"))
        await asyncio.wait_for(started.wait(), 5)

        async with aiohttp.ClientSession() as probe:
            resp = await probe.get(f"{base}/health/live")
            assert resp.headers.get("Connection", "").lower() != "close"  # kept alive before
        ctx.lifecycle.begin_shutdown("test")
        async with aiohttp.ClientSession() as probe:
            resp = await probe.get(f"{base}/health/ready")  # still listening while draining
            assert resp.status == 503
            # while draining every answer ends its connection: no idle one stays pooled
            assert resp.headers.get("Connection", "").lower() == "close"
            resp = await probe.get(f"{base}/health/live")
            assert resp.status == 200 and resp.headers["Connection"].lower() == "close"

        message = await asyncio.wait_for(ws.receive(), 5)
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert message.data == WSCloseCode.GOING_AWAY

        await asyncio.sleep(0.1)
        release.set()
        resp = await asyncio.wait_for(in_flight, 5)
        assert resp.status == 200
        assert await resp.json() == {"done": True}

    assert await asyncio.wait_for(server, 5) == 0
    assert cleaned == ["pool closed"]
    async with aiohttp.ClientSession() as late:
        try:
            await late.get(f"{base}/health/live")
        except aiohttp.ClientConnectionError:
            pass
        else:  # pragma: no cover - the listener must be closed
            raise AssertionError("listener still open after shutdown")


async def test_shutdown_is_bounded_by_the_grace_period(service_context):
    ctx = service_context(drain_seconds=0.0, grace_seconds=0.5)
    app = create_app(ctx)
    started = asyncio.Event()

    async def stuck(request):
        started.set()
        await asyncio.sleep(30)
        return web.Response()

    app.router.add_get("/stuck", stuck)
    bound = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        serve(app, ctx.lifecycle, install_signals=False, on_listening=bound.set_result)
    )
    (host, port), *_ = await asyncio.wait_for(bound, 5)
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(session.get(f"http://{host}:{port}/stuck"))
        await asyncio.wait_for(started.wait(), 5)
        loop = asyncio.get_running_loop()
        begun = loop.time()
        ctx.lifecycle.begin_shutdown("test")
        assert await asyncio.wait_for(server, 5) == 0
        assert loop.time() - begun < 1.5
        request.cancel()
