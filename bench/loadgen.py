"""Load through nginx while something else happens (a deploy, a benchmark run).

HTTP: an open-loop schedule of GET /health/auth (nginx -> auth's /health/ready), one request
started every 1/rate s whether or not earlier ones finished. WebSocket: one registered user,
`ws_clients` sockets on /ws of a fresh room, a publisher posting a numbered message every
0.2 s; a closed socket reconnects with since=<last id> so a rolling deploy loses nothing.

    .venv/bin/python bench/loadgen.py https://localhost:8443 --ca-file F --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import secrets
import ssl
import sys
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from deploysuite.deploy.smoke import PinnedResolver

PROBE_PATH = "/health/auth"
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10)
MAX_SAMPLES = 10
PUBLISH_EVERY = 0.2
RECONNECT_EVERY = 0.5
STRAGGLERS_WAIT = 5.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]; values must not be empty."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def lost_messages(acknowledged: set[int], received: list[set[int]]) -> int:
    """Acknowledged sequence numbers that each client missed, summed over clients."""
    return sum(len(acknowledged - got) for got in received)


def due(elapsed: float, rate: float) -> int:
    """How many requests an open-loop schedule has started `elapsed` s in (one at 0)."""
    return math.floor(elapsed * rate) + 1 if elapsed >= 0 else 0


def sequence_of(text: str) -> int | None:
    """The publisher's sequence number in a message text ("load <n>"), else None."""
    prefix, _, number = text.partition(" ")
    return int(number) if prefix == "load" and number.isdigit() else None


def closed_by_server(exc: BaseException) -> bool:
    """The keepalive race: the server closed a connection the request was sent on, seen as a
    disconnect, a reset, or a TLS error on the closing connection (after nginx's close_notify:
    errno 1). Behind nginx nothing else breaks an established connection (a backend's failure
    is a 502). A refused or failed connect is no such race (the server is down): it fails."""
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return True
    return isinstance(exc, aiohttp.ClientOSError) and not isinstance(
        exc, aiohttp.ClientConnectorError
    )


class LoadError(Exception):
    """The load could not start (log-in or WebSocket set-up failed)."""


class WsClient:
    """One WebSocket connection to the room that resumes where it stopped."""

    def __init__(self) -> None:
        self.last_id = 0
        self.received: set[int] = set()
        self.ready = asyncio.Event()
        self.reconnects = 0


class Load:
    def __init__(
        self,
        base_url: str,
        ca_file: str | Path | None = None,
        rate: float = 50,
        ws_clients: int = 5,
        connect_host: str | None = None,
        retry_closed: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # Off by default: a request on a connection the server closed fails, as it would for a
        # client that does not retry. On, an idempotent GET is retried once and counted.
        self.retry_closed = retry_closed
        self.ca_file, self.rate, self.connect_host = ca_file, rate, connect_host
        self.clients = [WsClient() for _ in range(ws_clients)]
        self.latencies: list[float] = []
        self.failures: Counter[str] = Counter()
        self.samples: list[str] = []  # the first few error responses, as seen
        self.acknowledged: set[int] = set()
        self.room = f"load-{secrets.token_hex(4)}"
        self.token = ""
        self.session: aiohttp.ClientSession | None = None
        self.listeners: list[asyncio.Task[None]] = []
        self.drivers: list[asyncio.Task[None]] = []  # the probe schedule and the publisher
        self.in_flight: set[asyncio.Task[None]] = set()
        self.retried = 0  # GETs retried once after the server closed an idle connection

    async def _timed(self, method: str, path: str, **kw: Any) -> int | str:
        """Status of one request, or the name of the error that ended it; latency recorded."""
        started = time.monotonic()
        for attempt in (1, 2):
            try:
                async with self.session.request(
                    method, self.base_url + path, timeout=REQUEST_TIMEOUT, **kw
                ) as response:
                    body = await response.read()
                    outcome: int | str = response.status
                    if response.status >= 400 and len(self.samples) < MAX_SAMPLES:
                        # what answered, for the report: nginx's own error or a service's
                        self.samples.append(
                            f"{method} {path} -> {response.status} "
                            f"server={response.headers.get('Server', '?')} "
                            f"body={body[:160].decode(errors='replace')!r}"
                        )
            except Exception as exc:
                outcome = type(exc).__name__
                if self.retry_closed and method == "GET" and closed_by_server(exc) and attempt == 1:
                    # An idle keepalive connection the server closed as the request went out
                    # (an old nginx worker during a graceful reload): an idempotent request
                    # retried once on a new connection, counted apart (only when asked).
                    self.retried += 1
                    continue
                # every other error is a failed request, named by type
            break
        self.latencies.append((time.monotonic() - started) * 1000)
        return outcome

    async def _probe(self) -> None:
        outcome = await self._timed("GET", PROBE_PATH)
        if isinstance(outcome, str) or outcome >= 500 or outcome == 429:
            self.failures[str(outcome)] += 1

    async def _schedule(self) -> None:
        started, sent = time.monotonic(), 0
        while True:
            for _ in range(due(time.monotonic() - started, self.rate) - sent):
                task = asyncio.create_task(self._probe())
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)
                sent += 1
            await asyncio.sleep(max(0.0, started + sent / self.rate - time.monotonic()))

    async def _post_json(self, path: str, body: dict[str, Any], **kw: Any) -> tuple[int, Any]:
        for _ in range(10):  # a 429 is a rate-limit bucket still draining: a few seconds at most
            async with self.session.post(
                self.base_url + path, json=body, timeout=REQUEST_TIMEOUT, **kw
            ) as r:
                data = await r.json(content_type=None)
                if r.status != 429:
                    return r.status, data
            await asyncio.sleep(0.5)
        return r.status, data

    async def _log_in(self) -> None:
        creds = {"email": f"load-{secrets.token_hex(6)}@example.com"}
        creds["password"] = secrets.token_urlsafe(18)
        status, body = await self._post_json("/api/auth/register", creds)
        if status != 201:
            raise LoadError(f"POST /api/auth/register -> {status}: {body}")
        status, body = await self._post_json("/api/auth/login", creds)
        if status != 200:
            raise LoadError(f"POST /api/auth/login -> {status}: {body}")
        self.token = body["token"]

    async def _publish(self) -> None:
        auth = {"Authorization": f"Bearer {self.token}"}
        for seq in itertools.count(1):
            started = time.monotonic()
            message = {"room": self.room, "text": f"load {seq}"}
            outcome = await self._timed("POST", "/api/chat/messages", json=message, headers=auth)
            if outcome == 201:
                self.acknowledged.add(seq)
            else:
                self.failures[f"publish:{outcome}"] += 1
            await asyncio.sleep(max(0.0, started + PUBLISH_EVERY - time.monotonic()))

    async def _listen(self, client: WsClient) -> None:
        url = self.base_url.replace("https://", "wss://", 1) + "/ws"
        while True:
            query = {"room": self.room, "token": self.token, "since": str(client.last_id)}
            try:
                async with self.session.ws_connect(url, params=query, heartbeat=10) as ws:
                    client.reconnects += int(client.ready.is_set())
                    async for frame in ws:
                        if frame.type != aiohttp.WSMsgType.TEXT:
                            continue
                        data = json.loads(frame.data)
                        if data.get("type") == "ready":
                            client.ready.set()
                        elif data.get("type") == "message":
                            client.last_id = max(client.last_id, int(data["id"]))
                            seq = sequence_of(str(data.get("text", "")))
                            if seq is not None:
                                client.received.add(seq)
            except aiohttp.WSServerHandshakeError as exc:
                self.failures[f"ws:{exc.status}"] += 1
            except Exception as exc:  # keep reconnecting, whatever broke the connection
                self.failures[f"ws:{type(exc).__name__}"] += 1
            await asyncio.sleep(RECONNECT_EVERY)

    async def __aenter__(self) -> Load:
        host = urllib.parse.urlsplit(self.base_url).hostname or "localhost"
        resolver = PinnedResolver(host, self.connect_host) if self.connect_host else None
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        # limit=0: no client-side queue, so a slow backend cannot slow the schedule down.
        connector = aiohttp.TCPConnector(ssl=context, resolver=resolver, limit=0)
        self.session = aiohttp.ClientSession(connector=connector)
        try:
            if self.clients:
                await self._log_in()
                self.listeners = [asyncio.create_task(self._listen(c)) for c in self.clients]
                ready = [asyncio.create_task(c.ready.wait()) for c in self.clients]
                _, pending = await asyncio.wait(ready, timeout=10)
                for task in pending:
                    task.cancel()
                if pending:
                    raise LoadError(
                        f"{len(pending)} of {len(self.clients)} WebSockets not ready within 10 s:"
                        f" {dict(self.failures)}"
                    )
                self.drivers.append(asyncio.create_task(self._publish()))
            self.drivers.append(asyncio.create_task(self._schedule()))
        except BaseException:
            await self._stop(self.drivers + self.listeners)
            await self.session.close()
            raise
        return self

    async def _stop(self, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self._stop(self.drivers)
            await asyncio.gather(*self.in_flight, return_exceptions=True)
            deadline = time.monotonic() + STRAGGLERS_WAIT
            while self.clients and time.monotonic() < deadline:
                if not lost_messages(self.acknowledged, [c.received for c in self.clients]):
                    break
                await asyncio.sleep(0.1)
            await self._stop(self.listeners)
        finally:
            await self.session.close()

    def report(self) -> dict[str, Any]:
        """The numbers so far (final once the `async with` block has exited)."""
        lat = self.latencies
        http_failures = sum(n for k, n in self.failures.items() if not k.startswith("ws:"))
        return {
            "requests": len(lat),
            "failed": http_failures,
            "p50_ms": round(percentile(lat, 50), 1) if lat else 0.0,
            "p99_ms": round(percentile(lat, 99), 1) if lat else 0.0,
            "ws_clients": len(self.clients),
            "messages_sent": len(self.acknowledged),
            "messages_lost": lost_messages(self.acknowledged, [c.received for c in self.clients]),
            "ws_reconnects": sum(c.reconnects for c in self.clients),
            "retried": self.retried,
            "retry_closed": self.retry_closed,
            "failures": dict(self.failures),
            "samples": list(self.samples),
        }


class BackgroundLoad:
    """A Load in its own thread, for code that blocks meanwhile (waiting on a deploy):

    with BackgroundLoad(url, ca_file=ca) as background:
        subprocess.run(deploy)
    background.report  # final numbers
    """

    def __init__(self, base_url: str, **options: Any) -> None:
        import threading

        self.load = Load(base_url, **options)
        self.started = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.report: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            async with self.load:
                self.started.set()
                while not self.stop.is_set():
                    await asyncio.sleep(0.1)
            self.report = self.load.report()

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the caller's thread
            self.error = exc
        finally:
            self.started.set()

    def __enter__(self) -> BackgroundLoad:
        self.thread.start()
        self.started.wait(timeout=60)
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        if self.error is not None:
            raise self.error


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with Load(
        args.base_url, args.ca_file, args.rate, args.ws_clients, args.connect_host
    ) as load:
        await asyncio.sleep(args.seconds)
    return load.report()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url", help="public URL, e.g. https://localhost:8443")
    parser.add_argument("--ca-file", help="CA to trust (a local stack's tls/ca.pem)")
    parser.add_argument("--seconds", type=float, default=10, help="how long to load")
    parser.add_argument("--rate", type=float, default=50, help="HTTP requests per second")
    parser.add_argument("--ws-clients", type=int, default=5, help="WebSocket connections")
    parser.add_argument("--connect-host", help="IP to connect to, keeping the URL's host name")
    try:
        print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))
    except (LoadError, aiohttp.ClientError, OSError) as exc:
        sys.exit(f"loadgen: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
