"""aiohttp application factory shared by the services: health endpoints, metrics, JSON errors,
request logging and graceful shutdown wiring."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web

from saaschat import breaker as breaker_mod
from saaschat.breaker import CircuitBreaker, CircuitOpenError
from saaschat.config import ServiceSettings
from saaschat.errors import DependencyUnavailable
from saaschat.health import HEALTH_CONTENT_TYPE, CheckResult, HealthMonitor, http_status_for
from saaschat.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from saaschat.metrics import Registry
from saaschat.shutdown import Lifecycle
from saaschat.tokens import Claims, TokenError, TokenSigner, bearer_token

log = logging.getLogger("saaschat.http")
breaker_log = logging.getLogger("saaschat.breaker")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_dumps = partial(json.dumps, default=str, separators=(",", ":"))
_QUIET_ROUTES = ("/health", "/metrics")


def json_response(data: Any, status: int = 200, **kwargs: Any) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps, **kwargs)


def error_response(status: int, message: str, **fields: Any) -> web.Response:
    headers = fields.pop("headers", None)
    return json_response({"error": message, **fields}, status=status, headers=headers)


@dataclass
class ServiceContext:
    settings: ServiceSettings
    metrics: Registry
    health: HealthMonitor
    lifecycle: Lifecycle

    def __post_init__(self) -> None:
        m = self.metrics
        self.http_requests = m.counter(
            "http_requests_total",
            "HTTP requests by route and status.",
            ("method", "route", "status"),
        )
        self.http_duration = m.histogram(
            "http_request_duration_seconds", "HTTP request duration.", ("method", "route")
        )
        self.http_in_flight = m.gauge("http_requests_in_flight", "HTTP requests being served.")
        self.dependency_up = m.gauge(
            "dependency_up", "1 when the dependency's last health probe passed.", ("dependency",)
        )
        self.breaker_state = m.gauge(
            "circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ("dependency",),
        )
        info = m.gauge("service_info", "Build information.", ("version", "release_id"))
        info.set(1, version=self.settings.version, release_id=self.settings.release_id)
        m.gauge("process_start_time_seconds", "Start time since the epoch.").set(time.time())
        self.shutting_down_gauge = m.gauge("service_shutting_down", "1 once shutdown has begun.")
        self.health.on_results = self._record_health

    def _record_health(self, results: list[CheckResult]) -> None:
        for result in results:
            if result.key != f"{result.name}:responseTime":
                continue
            self.dependency_up.set(1 if result.probe_ok else 0, dependency=result.name)

    def breaker(self, name: str) -> CircuitBreaker:
        def changed(old: str, new: str) -> None:
            self.breaker_state.set(breaker_mod.STATE_VALUES[new], dependency=name)
            breaker_log.warning(
                "circuit breaker changed", extra={"dependency": name, "from": old, "to": new}
            )

        created = CircuitBreaker(
            name,
            failure_threshold=self.settings.breaker_failure_threshold,
            reset_timeout=self.settings.breaker_reset_seconds,
            on_state_change=changed,
        )
        self.breaker_state.set(0, dependency=name)
        return created


def create_context(settings: ServiceSettings, description: str) -> ServiceContext:
    health = HealthMonitor(
        service_id=settings.name,
        version=settings.version,
        release_id=settings.release_id,
        description=description,
        timeout=settings.check_timeout,
    )
    return ServiceContext(
        settings=settings,
        metrics=Registry(),
        health=health,
        lifecycle=Lifecycle(settings, health),
    )


CONTEXT = web.AppKey("saaschat_context", ServiceContext)
REQUEST_ID = web.RequestKey("request_id", str)


def route_label(request: web.Request) -> str:
    route = request.match_info.route
    resource = getattr(route, "resource", None)
    if resource is None:
        return "unmatched"
    return resource.canonical


def _request_id(request: web.Request) -> str:
    incoming = request.headers.get("X-Request-ID", "")
    if 0 < len(incoming) <= 128 and incoming.isprintable():
        return incoming
    return uuid.uuid4().hex


def make_observe_middleware(ctx: ServiceContext) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = _request_id(request)
        request[REQUEST_ID] = request_id
        route = route_label(request)
        ctx.http_in_flight.inc()
        status = 500
        try:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                response = error_response(exc.status, exc.reason, headers=_safe_headers(exc))
            except DependencyUnavailable as exc:
                response = error_response(
                    503,
                    "dependency unavailable",
                    dependency=exc.dependency,
                    headers={"Retry-After": str(max(1, round(exc.retry_after)))},
                )
            except CircuitOpenError as exc:
                response = error_response(
                    503,
                    "dependency unavailable",
                    dependency=exc.name,
                    headers={"Retry-After": str(max(1, round(exc.retry_after)))},
                )
            except asyncio.CancelledError:
                status = 499
                raise
            except Exception:
                log.exception("unhandled error", extra={"route": route, "request_id": request_id})
                response = error_response(500, "internal server error")
            status = response.status
            if not response.prepared:
                response.headers["X-Request-ID"] = request_id
                if ctx.lifecycle.shutting_down:
                    # Draining: each answer closes its connection (Connection: close), so no
                    # idle keep-alive connection to this process is left in the proxy's pool
                    # when the listener closes. A request the proxy sent on one at that
                    # instant would be lost: it cannot resend a POST (a 502 to the client).
                    response.force_close()
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            ctx.http_in_flight.dec()
            elapsed = time.perf_counter() - started
            ctx.http_requests.inc(method=request.method, route=route, status=status)
            if status != 101:
                ctx.http_duration.observe(elapsed, method=request.method, route=route)
            level = logging.DEBUG if route.startswith(_QUIET_ROUTES) else logging.INFO
            log.log(
                level,
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,  # never the query string: it may carry a token
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "request_id": request_id,
                },
            )

    return observe


def _safe_headers(exc: web.HTTPException) -> dict[str, str]:
    keep = ("Allow", "WWW-Authenticate", "Retry-After", "Location")
    return {k: v for k, v in exc.headers.items() if k in keep}


# --------------------------------------------------------------------------- health routes


async def _health(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    ready = ctx.health.cached_ready()
    return json_response(
        {"status": "pass" if ready else "fail", "ready": ready}, status=200 if ready else 503
    )


async def _live(request: web.Request) -> web.Response:
    return json_response({"status": "pass"})


# Readiness asked from inside the container (its healthcheck) also says how each dependency
# failed; asked through nginx (/health/<service>) it names them only: error texts stay inside.
LOOPBACK = ("127.0.0.1", "::1")


async def _ready(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    if ctx.lifecycle.shutting_down:
        return json_response({"status": "fail", "reason": "shutting down"}, status=503)
    results = await ctx.health.evaluate()
    failing = [r for r in results if r.required and not r.probe_ok]
    if failing or ctx.lifecycle.shutting_down:
        reason = "shutting down" if ctx.lifecycle.shutting_down else "dependency unavailable"
        body: dict[str, object] = {"status": "fail", "reason": reason,
                                   "failed": [r.key for r in failing]}  # fmt: skip
        if request.remote in LOOPBACK:  # the container's own healthcheck: how each one failed
            body["output"] = "; ".join(f"{r.key}: {r.output or r.status}" for r in failing)[:1000]
        return json_response(body, status=503)
    return json_response({"status": "pass"})


async def _detailed(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    results = await ctx.health.evaluate()
    document = ctx.health.document(results)
    return web.Response(
        text=_dumps(document),
        status=http_status_for(document["status"]),
        content_type=HEALTH_CONTENT_TYPE,
        headers={"Cache-Control": "no-store"},
    )


async def _metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    ctx.shutting_down_gauge.set(1 if ctx.lifecycle.shutting_down else 0)
    body = ctx.metrics.render()
    response = web.Response(body=body.encode("utf-8"))
    response.headers["Content-Type"] = METRICS_CONTENT_TYPE
    return response


# --------------------------------------------------------------------------- factory


def create_app(
    ctx: ServiceContext,
    *,
    client_max_size: int = 256 * 1024,
    background: list[Callable[[web.Application], Awaitable[None]]] | None = None,
) -> web.Application:
    """The base application. Services add routes and ``cleanup_ctx`` entries for their pools.

    ``background`` coroutines run for the life of the app and are cancelled at shutdown.
    """
    app = web.Application(
        middlewares=[make_observe_middleware(ctx)], client_max_size=client_max_size
    )
    app[CONTEXT] = ctx
    app.router.add_get("/health", _health)
    app.router.add_get("/health/live", _live)
    app.router.add_get("/health/ready", _ready)
    app.router.add_get("/health/detailed", _detailed)
    app.router.add_get("/metrics", _metrics)

    tasks: list[asyncio.Task[None]] = []

    async def start_background(app: web.Application) -> None:
        tasks.append(
            asyncio.create_task(
                ctx.health.run_periodically(ctx.settings.health_interval), name="health-monitor"
            )
        )
        for starter in background or []:
            tasks.append(asyncio.create_task(starter(app), name=getattr(starter, "__name__", "bg")))

    async def close_websockets(app: web.Application) -> None:
        await ctx.lifecycle.close_websockets()

    async def stop_background(app: web.Application) -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    app.on_startup.append(start_background)
    # on_shutdown runs after the listener closed and before the wait for in-flight requests;
    # pools registered through cleanup_ctx close later, in on_cleanup.
    app.on_shutdown.append(close_websockets)
    app.on_shutdown.append(stop_background)
    return app


# --------------------------------------------------------------------------- request helpers


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; 400 otherwise (413 beyond client_max_size)."""
    try:
        data = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise web.HTTPBadRequest(reason="body must be a JSON object") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(reason="body must be a JSON object")
    return data


def authenticate(request: web.Request, signer: TokenSigner, token: str | None = None) -> Claims:
    """Claims of the bearer token (or of ``token``); 401 JSON otherwise."""
    candidate = token if token is not None else bearer_token(request.headers.get("Authorization"))
    if not candidate:
        raise web.HTTPUnauthorized(
            reason="missing bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    try:
        return signer.verify(candidate)
    except TokenError as exc:
        raise web.HTTPUnauthorized(
            reason=f"invalid token ({exc.reason})",
            headers={
                "WWW-Authenticate": (
                    f'Bearer error="invalid_token", error_description="{exc.reason}"'
                )
            },
        ) from None
