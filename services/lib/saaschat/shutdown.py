"""Process lifecycle: serve until SIGTERM/SIGINT, then shut down gracefully.

On the signal:
1. readiness turns 503 at once (/health and /health/ready), so the proxy stops routing here;
2. the listener keeps accepting for SHUTDOWN_DRAIN_SECONDS while the proxy notices; every
   answer meanwhile closes its connection, so the proxy keeps no idle one to this process;
3. the listener closes, idle keep-alive connections close, WebSockets get a close frame
   1001 (going away), in-flight requests finish;
4. background work stops and pools close; the process exits 0.
Steps 2-4 are bounded by SHUTDOWN_GRACE_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
import weakref
from collections.abc import Awaitable, Callable

from aiohttp import WSCloseCode, web

from saaschat.config import ServiceSettings
from saaschat.health import HealthMonitor

log = logging.getLogger("saaschat.lifecycle")


class Lifecycle:
    def __init__(self, settings: ServiceSettings, health: HealthMonitor) -> None:
        self.settings = settings
        self.health = health
        self._stop: asyncio.Event | None = None
        self.shutting_down = False
        self.shutdown_started_at: float | None = None
        self.websockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        # Called as soon as shutdown begins (before the drain delay), e.g. to stop consuming.
        self.on_begin: list[Callable[[], Awaitable[None] | None]] = []
        self._begin_tasks: list[asyncio.Future[None]] = []

    @property
    def stop_event(self) -> asyncio.Event:
        if self._stop is None:
            self._stop = asyncio.Event()
        return self._stop

    def begin_shutdown(self, reason: str) -> None:
        """Readiness goes 503 from now on. Safe to call more than once."""
        if self.shutting_down:
            log.info("shutdown already in progress", extra={"reason": reason})
            return
        self.shutting_down = True
        self.shutdown_started_at = time.monotonic()
        self.health.shutting_down = True
        log.info(
            "shutdown started",
            extra={
                "reason": reason,
                "drain_seconds": self.settings.drain_seconds,
                "grace_seconds": self.settings.grace_seconds,
            },
        )
        for callback in self.on_begin:
            result = callback()
            if asyncio.iscoroutine(result):
                self._begin_tasks.append(asyncio.ensure_future(result))
        self.stop_event.set()

    def remaining_grace(self) -> float:
        if self.shutdown_started_at is None:
            return self.settings.grace_seconds
        elapsed = time.monotonic() - self.shutdown_started_at
        return max(0.0, self.settings.grace_seconds - elapsed)

    async def close_websockets(self) -> None:
        sockets = [ws for ws in list(self.websockets) if not ws.closed]
        if not sockets:
            return
        log.info("closing websockets", extra={"count": len(sockets)})
        await asyncio.gather(
            *(
                ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
                for ws in sockets
            ),
            return_exceptions=True,
        )


def bind_listener(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


async def serve(
    app: web.Application,
    lifecycle: Lifecycle,
    *,
    install_signals: bool = True,
    on_listening: Callable[[list[tuple[str, int]]], Awaitable[None] | None] | None = None,
) -> int:
    """Run ``app`` until the lifecycle's stop event, then shut down within the grace period."""
    settings = lifecycle.settings
    loop = asyncio.get_running_loop()
    # Time for the in-flight wait inside runner.cleanup(); the rest of the grace period is
    # left for closing pools.
    in_flight_budget = max(0.5, (settings.grace_seconds - settings.drain_seconds) * 0.8)
    if install_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, lifecycle.begin_shutdown, signal.Signals(signum).name)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=in_flight_budget
    )
    await runner.setup()
    listener = bind_listener(settings.host, settings.port)
    site = web.SockSite(runner, listener)
    await site.start()
    addresses = [listener.getsockname()[:2]]
    log.info(
        "listening",
        extra={
            "addresses": [f"{h}:{p}" for h, p in addresses],
            "version": settings.version,
            "release_id": settings.release_id,
        },
    )
    if on_listening is not None:
        result = on_listening(addresses)
        if asyncio.iscoroutine(result):
            await result

    try:
        await lifecycle.stop_event.wait()
        drain = min(settings.drain_seconds, lifecycle.remaining_grace())
        if drain > 0:
            log.info("draining before closing the listener", extra={"seconds": drain})
            await asyncio.sleep(drain)
        try:
            await asyncio.wait_for(runner.cleanup(), timeout=max(0.1, lifecycle.remaining_grace()))
        except TimeoutError:
            log.warning("grace period exceeded; exiting with work still open")
    finally:
        if install_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signum)
    elapsed = time.monotonic() - (lifecycle.shutdown_started_at or time.monotonic())
    log.info("shutdown complete", extra={"seconds": round(elapsed, 3)})
    return 0
