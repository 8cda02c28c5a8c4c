"""Smoke tests through nginx over HTTPS at the environment's public URL.

Each check is one row: name, pass/fail, what was seen, milliseconds. The user journey exercises
every service for real: register, log in, post a chat message and receive it over the WebSocket,
a signed billing webhook (and its replay), an analytics event counted, an orchestrator job
delivered as mail.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import socket
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

HTTP_SERVICES = ("auth", "chat", "billing", "analytics", "orchestrator")
SECURITY_HEADERS = (
    "Strict-Transport-Security",
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "Permissions-Policy",
)
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=15)


@dataclass(frozen=True)
class CheckResult:
    check: str
    ok: bool
    detail: str
    ms: float

    def as_row(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "result": "pass" if self.ok else "FAIL",
            "detail": self.detail,
            "ms": f"{self.ms:.0f}",
        }


class CheckFailed(Exception):
    """A check's expectation was not met; the message says what was seen."""


@dataclass
class SmokeTarget:
    """Where and how to reach the stack."""

    public_url: str
    http_port: int
    ca_file: Path | None  # a self-signed local certificate; None: the system's CAs
    webhook_secret: str
    mail_reader: Callable[[str], Awaitable[list[dict[str, Any]]]] | None = None
    connect_host: str | None = None  # e.g. 127.0.0.1 when the public name is not in DNS
    services: Sequence[str] = HTTP_SERVICES
    results: list[CheckResult] = field(default_factory=list)

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.public_url).hostname or "localhost"

    @property
    def https_port(self) -> int:
        return urllib.parse.urlsplit(self.public_url).port or 443

    def url(self, path: str) -> str:
        return self.public_url.rstrip("/") + path

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)


def expect(condition: bool, seen: str) -> None:
    if not condition:
        raise CheckFailed(seen)


async def run_check(
    target: SmokeTarget, name: str, body: Callable[[], Awaitable[str]]
) -> CheckResult:
    started = time.monotonic()
    try:
        detail = await body()
        ok = True
    except CheckFailed as exc:
        detail, ok = str(exc), False
    except (aiohttp.ClientError, OSError, TimeoutError, ssl.SSLError) as exc:
        detail, ok = f"{type(exc).__name__}: {exc}"[:200], False
    result = CheckResult(name, ok, detail, (time.monotonic() - started) * 1000)
    target.results.append(result)
    return result


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Journey:
    """State carried from one journey step to the next (the user's token)."""

    def __init__(self, target: SmokeTarget, session: aiohttp.ClientSession) -> None:
        self.target = target
        self.session = session
        self.email = f"smoke-{secrets.token_hex(6)}@example.com"
        self.password = secrets.token_urlsafe(18)
        self.token = ""

    async def request(
        self, method: str, path: str, expect_status: int | tuple[int, ...], **kw: Any
    ) -> tuple[int, Any]:
        # A 429 here is the rate limit still counting an earlier burst from this address (a
        # previous smoke run's last check): wait for the bucket to drain, a few seconds at most.
        for _ in range(10):
            async with self.session.request(method, self.target.url(path), **kw) as response:
                text = await response.text()
                if response.status != 429:
                    break
            await asyncio.sleep(0.5)
        wanted = (expect_status,) if isinstance(expect_status, int) else expect_status
        expect(response.status in wanted, f"{method} {path} -> {response.status}: {text[:120]}")
        try:
            return response.status, json.loads(text) if text else None
        except ValueError:
            return response.status, text

    async def health(self, service: str) -> str:
        path = "/health" if service == "nginx" else f"/health/{service}"
        await self.request("GET", path, 200)
        return f"GET {path} 200"

    async def register_and_login(self) -> str:
        creds = {"email": self.email, "password": self.password}
        await self.request("POST", "/api/auth/register", 201, json=creds)
        _, body = await self.request("POST", "/api/auth/login", 200, json=creds)
        self.token = body["token"]
        _, me = await self.request(
            "GET", "/api/auth/me", 200, headers={"Authorization": f"Bearer {self.token}"}
        )
        expect(me.get("email") == self.email, f"/me answered {me}")
        return f"registered and logged in {self.email}"

    async def chat_over_websocket(self) -> str:
        expect(bool(self.token), "no token: log-in failed")
        room = f"smoke-{secrets.token_hex(4)}"
        text = f"hello {secrets.token_hex(4)}"
        ws_url = self.target.url("/ws").replace("https://", "wss://", 1)
        query = {"room": room, "token": self.token}
        async with self.session.ws_connect(ws_url, params=query, heartbeat=10) as ws:
            await self.request(
                "POST",
                "/api/chat/messages",
                201,
                json={"room": room, "text": text},
                headers={"Authorization": f"Bearer {self.token}"},
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                message = await ws.receive(timeout=deadline - time.monotonic())
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise CheckFailed(f"WebSocket closed: {message.type.name}")
                frame = json.loads(message.data)
                if frame.get("type") == "message" and frame.get("text") == text:
                    return f"posted to {room}, received over the WebSocket (id {frame.get('id')})"
        raise CheckFailed("message not received over the WebSocket within 10 s")

    async def billing_webhook(self) -> str:
        event = {"id": f"evt_{secrets.token_hex(8)}", "type": "invoice.paid", "data": {}}
        body = json.dumps(event).encode()
        headers = {"Content-Type": "application/json"}
        good = {**headers, "X-Signature": sign(self.target.webhook_secret, body)}
        _, first = await self.request("POST", "/api/billing/webhook", 200, data=body, headers=good)
        _, replay = await self.request("POST", "/api/billing/webhook", 200, data=body, headers=good)
        expect(replay.get("duplicate") is True, f"replay answered {replay}")
        expect(not first.get("duplicate"), f"first delivery answered {first}")
        bad = {**headers, "X-Signature": sign("wrong-secret", body)}
        await self.request("POST", "/api/billing/webhook", 401, data=body, headers=bad)
        return "accepted once, replay marked duplicate, bad signature 401"

    async def analytics_counted(self) -> str:
        name = f"smoke_{secrets.token_hex(4)}"
        await self.request("POST", "/api/analytics/events", 201, json={"name": name})
        await self.request("POST", "/api/analytics/events", 201, json={"name": name})
        _, counts = await self.request("GET", f"/api/analytics/counts?name={name}", 200)
        expect(counts.get("count") == 2, f"counts answered {counts}")
        return f"2 events of {name} counted"

    async def orchestrator_mail(self) -> str:
        to = f"smoke-{secrets.token_hex(5)}@example.com"
        subject = f"smoke {secrets.token_hex(4)}"
        job = {"type": "email", "to": to, "subject": subject, "body": "smoke test"}
        _, accepted = await self.request("POST", "/api/orchestrator/jobs", 202, json=job)
        reader = self.target.mail_reader
        if reader is None:
            return f"job {accepted.get('job_id')} accepted (no mail sink in this environment)"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            messages = await reader(to)
            if any(m.get("subject") == subject for m in messages):
                return f"job {accepted.get('job_id')} delivered to the mail sink"
            await asyncio.sleep(0.5)
        raise CheckFailed(f"job {accepted.get('job_id')} accepted but no mail within 30 s")

    async def security_headers(self) -> str:
        missing = []
        for path in ("/health", "/api/billing/plans", "/no-such-page"):
            async with self.session.get(self.target.url(path)) as response:
                missing += [f"{h} on {path}" for h in SECURITY_HEADERS if h not in response.headers]
        expect(not missing, "missing: " + ", ".join(missing))
        return "all six headers on proxied, own and 404 responses"

    async def http_redirects(self) -> str:
        host = self.target.connect_host or self.target.host
        url = f"http://{host}:{self.target.http_port}/api/auth/x?y=1"
        async with self.session.get(
            url, allow_redirects=False, headers={"Host": self.target.host}
        ) as response:
            location = response.headers.get("Location", "")
        want = self.target.url("/api/auth/x?y=1")
        expect(response.status == 301 and location == want, f"{response.status} -> {location!r}")
        return f"301 -> {location}"

    async def auth_rate_limited(self) -> str:
        async def one() -> int:
            async with self.session.post(
                self.target.url("/api/auth/login"), json={"email": "x@example.com", "password": "x"}
            ) as response:
                return response.status

        statuses = await asyncio.gather(*(one() for _ in range(40)))
        limited = statuses.count(429)
        expect(limited > 0, f"no 429 in a burst of 40: {sorted(set(statuses))}")
        return f"{limited} of 40 burst requests answered 429"


def tls_handshake(host: str, port: int, version: ssl.TLSVersion, server_name: str) -> str:
    """Protocol negotiated with exactly `version`; raises ssl.SSLError when refused."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = version
    context.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer it; the server decides
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        return tls.version() or ""


async def tls_versions(target: SmokeTarget) -> None:
    host = target.connect_host or target.host

    def accepted(version: ssl.TLSVersion) -> Callable[[], Awaitable[str]]:
        async def body() -> str:
            got = await asyncio.to_thread(
                tls_handshake, host, target.https_port, version, target.host
            )
            return f"negotiated {got}"

        return body

    def refused(version: ssl.TLSVersion) -> Callable[[], Awaitable[str]]:
        async def body() -> str:
            try:
                got = await asyncio.to_thread(
                    tls_handshake, host, target.https_port, version, target.host
                )
            except ssl.SSLError as exc:
                reason = exc.reason or str(exc)
                # The server's protocol_version alert, not the client refusing to try.
                expect(
                    "VERSION" in reason.upper(), f"handshake failed for another reason: {reason}"
                )
                return f"refused by the server ({reason})"
            raise CheckFailed(f"server accepted {got}")

        return body

    await run_check(target, "tls:1.2 accepted", accepted(ssl.TLSVersion.TLSv1_2))
    await run_check(target, "tls:1.3 accepted", accepted(ssl.TLSVersion.TLSv1_3))
    await run_check(target, "tls:1.0 refused", refused(ssl.TLSVersion.TLSv1))
    await run_check(target, "tls:1.1 refused", refused(ssl.TLSVersion.TLSv1_1))


class PinnedResolver(aiohttp.abc.AbstractResolver):
    """Resolves the public host name to one address (a local stack's 127.0.0.1)."""

    def __init__(self, host: str, address: str) -> None:
        self.host, self.address = host, address
        self.fallback = aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list:
        if host == self.host:
            return [
                {
                    "hostname": host,
                    "host": self.address,
                    "port": port,
                    "family": socket.AF_INET,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            ]
        return await self.fallback.resolve(host, port, family)

    async def close(self) -> None:
        await self.fallback.close()


async def run_smoke(target: SmokeTarget) -> list[CheckResult]:
    target.results.clear()
    resolver = PinnedResolver(target.host, target.connect_host) if target.connect_host else None
    connector = aiohttp.TCPConnector(ssl=target.ssl_context(), resolver=resolver, limit=50)
    async with aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT) as session:
        journey = Journey(target, session)
        for service in ("nginx", *target.services):
            await run_check(target, f"health:{service}", lambda s=service: journey.health(s))
        await run_check(target, "journey:register+login", journey.register_and_login)
        await run_check(target, "journey:chat+websocket", journey.chat_over_websocket)
        await run_check(target, "journey:billing webhook", journey.billing_webhook)
        await run_check(target, "journey:analytics count", journey.analytics_counted)
        await run_check(target, "journey:job -> mail", journey.orchestrator_mail)
        await run_check(target, "edge:security headers", journey.security_headers)
        await run_check(target, "edge:http -> https", journey.http_redirects)
        await tls_versions(target)
        # Last: the burst uses up this address's auth allowance for a few seconds.
        await run_check(target, "edge:auth rate limit 429", journey.auth_rate_limited)
    return list(target.results)
