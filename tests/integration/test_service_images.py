"""The service images built by `inv images.build`, run as real containers.

One stack per module on a user-defined bridge network of its own: PostgreSQL, Redis, RabbitMQ
and the mail sink under the names the services expect (``postgres``, ``redis``, ``rabbitmq``,
``mailsink``), then auth, chat, billing, analytics, orchestrator and the email worker with their
ports published on 127.0.0.1 only. Secrets are generated per run. Nothing is mocked: the tests
drive the images over HTTP from the host, stop and start the dependencies, and stop services
with SIGTERM. Every container, its anonymous volumes and the network are removed at the end,
also after a failure.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import http.client
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any, TypeVar

import docker.errors
import pytest
from conftest import run_task
from docker.models.containers import Container

from deploysuite.images.build import images_file

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LABEL_KEY = "com.mysaaschat.test.service-images"

DATABASE_SERVICES = ("auth", "chat", "billing", "analytics")
HTTP_SERVICES = (*DATABASE_SERVICES, "orchestrator")
# Every long-running process of the suite: the HTTP services, the worker and the mail sink.
SERVING = (*HTTP_SERVICES, "email-worker", "mailsink")
ALL_IMAGES = frozenset(SERVING)
DB_NAME_VARIABLES = {
    "auth": "AUTH_DB_NAME",
    "chat": "CHAT_DB_NAME",
    "billing": "BILLING_DB_NAME",
    "analytics": "ANALYTICS_DB_NAME",
}
# The checks each process reports in /health/detailed (besides the draft's "uptime" entry).
EXPECTED_CHECKS = {
    "auth": {"postgresql:responseTime", "schema:version"},
    "chat": {"postgresql:responseTime", "schema:version", "redis:responseTime"},
    "billing": {"postgresql:responseTime", "schema:version"},
    "analytics": {"postgresql:responseTime", "schema:version"},
    "orchestrator": {"rabbitmq:responseTime"},
    "email-worker": {"rabbitmq:responseTime", "smtp:responseTime"},
    "mailsink": {"smtp:responseTime"},
}
SERVICE_PORT = {name: 8025 if name == "mailsink" else 8000 for name in SERVING}
CHECK_KEY = re.compile(r"^[a-z][a-z0-9_-]*:[A-Za-z][A-Za-z0-9_]*$")
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
PROM_SAMPLE = re.compile(
    r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? (-?[0-9.e+-]+|NaN|[+-]Inf)( -?\d+)?$"
)
HEALTH_CONTENT_TYPE = "application/health+json"
MIGRATION_ROWS = (
    "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
)

T = TypeVar("T")


# --------------------------------------------------------------------------- small helpers


def shipped_migrations(service: str) -> list[str]:
    return sorted(p.name for p in (REPO / "services" / service / "migrations").glob("*.sql"))


def wait_for(
    what: str, probe: Callable[[], tuple[bool, Any]], timeout: float, interval: float = 0.5
) -> Any:
    """Call ``probe`` until it returns ``(True, value)``; fail after ``timeout`` seconds,
    showing the last value observed."""
    deadline = time.monotonic() + timeout
    while True:
        ok, observed = probe()
        if ok:
            return observed
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not reached within {timeout:.0f} s; last observed: {observed!r}")
        time.sleep(interval)


def parallel(calls: dict[str, Callable[[], T]]) -> dict[str, T]:
    """Run the calls in threads; the results by key (the first exception is raised)."""
    with ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        futures = {key: pool.submit(call) for key, call in calls.items()}
        return {key: future.result() for key, future in futures.items()}


def log_entries(logs: str) -> list[dict[str, Any]]:
    """The JSON log lines of a process (one object per line on stdout)."""
    entries = []
    for line in logs.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                entries.append(json.loads(line))
    return entries


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body[:600]!r})"


def http_call(
    port: int,
    method: str,
    path: str,
    *,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """One HTTP request to 127.0.0.1:``port``; JSON ``body`` or ``raw`` bytes."""
    sent_headers = dict(headers or {})
    data = raw
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        sent_headers.setdefault("Content-Type", "application/json")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=data, headers=sent_headers)
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def try_http(port: int, method: str, path: str, **kwargs: Any) -> Reply | None:
    """Like http_call, but None while nothing answers (starting, restarting)."""
    try:
        return http_call(port, method, path, **kwargs)
    except (OSError, http.client.HTTPException):
        return None


def wait_http(
    what: str, port: int, path: str, accept: Callable[[Reply], bool], timeout: float
) -> Reply:
    """GET ``path`` until ``accept`` holds for the reply; that reply."""

    def probe() -> tuple[bool, Reply | None]:
        reply = try_http(port, "GET", path, timeout=5)
        return reply is not None and accept(reply), reply

    return wait_for(what, probe, timeout)


def status_of(reply: Reply | None) -> int | None:
    return None if reply is None else reply.status


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------- the stack


@dataclass
class MigrateRun:
    exit_code: int
    logs: str

    def messages(self, text: str) -> list[dict[str, Any]]:
        return [e for e in log_entries(self.logs) if e.get("message") == text]


@dataclass(repr=False)
class Stack:
    client: docker.DockerClient
    refs: dict[str, str]
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    containers: dict[str, Container] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    first_migrations: dict[str, MigrateRun] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Stack({self.run_id})"

    def __post_init__(self) -> None:
        self.prefix = f"svcimg-{self.run_id}"
        self.network = self.prefix
        self.labels = {LABEL_KEY: self.run_id}
        self.pg_user = "saaschat"
        self.pg_password = secrets.token_urlsafe(32)
        self.rabbit_user = "saaschat"
        self.rabbit_password = secrets.token_urlsafe(32)
        self.token_secret = secrets.token_urlsafe(32)
        self.webhook_secret = secrets.token_urlsafe(32)
        self.db_names = {s: f"{s}_{self.run_id}" for s in DATABASE_SERVICES}

    # ------------------------------------------------------------ containers

    def start(
        self,
        key: str,
        image: str,
        command: list[str] | None = None,
        *,
        alias: str | None = None,
        environment: dict[str, str] | None = None,
        port: int | None = None,
    ) -> Container:
        """Run a container on the stack's network, reachable by ``alias``, with ``port``
        published on 127.0.0.1 at a random host port."""
        kwargs: dict[str, Any] = {}
        if alias:
            kwargs["networking_config"] = {
                self.network: self.client.api.create_endpoint_config(aliases=[alias])
            }
        if port:
            kwargs["ports"] = {f"{port}/tcp": ("127.0.0.1", None)}
        container = self.client.containers.run(
            image,
            command,
            name=f"{self.prefix}-{key}",
            detach=True,
            network=self.network,
            environment=environment or {},
            labels=self.labels,
            **kwargs,
        )
        self.containers[key] = container
        if port:
            self.ports[key] = self.published_port(container, port)
        return container

    @staticmethod
    def published_port(container: Container, port: int) -> int:
        container.reload()
        bindings = container.ports.get(f"{port}/tcp") or []
        for binding in bindings:
            if binding.get("HostIp") == "127.0.0.1":
                return int(binding["HostPort"])
        raise AssertionError(f"{container.name}: port {port} not published on 127.0.0.1")

    def service_env(self) -> dict[str, str]:
        env = {
            "POSTGRES_HOST": "postgres",
            "POSTGRES_PORT": "5432",
            "POSTGRES_USER": self.pg_user,
            "POSTGRES_PASSWORD": self.pg_password,
            "REDIS_HOST": "redis",
            "RABBITMQ_HOST": "rabbitmq",
            "RABBITMQ_USER": self.rabbit_user,
            "RABBITMQ_PASSWORD": self.rabbit_password,
            "AUTH_TOKEN_SECRET": self.token_secret,
            "BILLING_WEBHOOK_SECRET": self.webhook_secret,
            "SMTP_HOST": "mailsink",
            "SMTP_PORT": "1025",
            "HEALTH_CHECK_TIMEOUT_SECONDS": "2",
            "HEALTH_INTERVAL_SECONDS": "1",
            "BREAKER_RESET_SECONDS": "2",
            "SHUTDOWN_DRAIN_SECONDS": "1",
            "SHUTDOWN_GRACE_SECONDS": "10",
            "MIGRATE_WAIT_SECONDS": "60",
            "RELEASE_ID": f"test-{self.run_id}",
        }
        env.update({DB_NAME_VARIABLES[s]: name for s, name in self.db_names.items()})
        return env

    def start_service(self, service: str, key: str | None = None) -> Container:
        return self.start(
            key or service,
            self.refs[service],
            alias=None if key else service,
            environment=self.service_env(),
            port=SERVICE_PORT[service],
        )

    def migrate(self, service: str) -> MigrateRun:
        """``docker run IMAGE migrate`` to completion."""
        container = self.client.containers.run(
            self.refs[service],
            ["migrate"],
            name=f"{self.prefix}-{service}-migrate-{uuid.uuid4().hex[:6]}",
            detach=True,
            network=self.network,
            environment=self.service_env(),
            labels=self.labels,
        )
        try:
            result = container.wait(timeout=120)
            logs = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
        finally:
            container.remove(force=True, v=True)
        return MigrateRun(int(result["StatusCode"]), logs)

    def sql(self, database: str, query: str) -> list[list[str]]:
        """Rows of ``query`` run with psql inside the postgres container."""
        code, output = self.containers["postgres"].exec_run(
            [
                "psql",
                "-U",
                self.pg_user,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-tA",
                "-F",
                "|",
                "-c",
                query,
            ],
            environment={"PGPASSWORD": self.pg_password},
        )
        text = output.decode("utf-8", "replace")
        assert code == 0, f"psql failed ({code}): {text}"
        return [line.split("|") for line in text.splitlines() if line]

    # ------------------------------------------------------------ waiting

    def wait_postgres(self, timeout: float = 90) -> None:
        def probe() -> tuple[bool, str]:
            code, out = self.containers["postgres"].exec_run(
                ["pg_isready", "-h", "127.0.0.1", "-U", self.pg_user, "-d", "postgres"]
            )
            return code == 0, out.decode("utf-8", "replace")

        wait_for("postgres accepts TCP connections", probe, timeout)

    def wait_rabbitmq(self, timeout: float = 120) -> None:
        def probe() -> tuple[bool, str]:
            code, out = self.containers["rabbitmq"].exec_run(
                ["rabbitmq-diagnostics", "-q", "check_port_connectivity"]
            )
            return code == 0, out.decode("utf-8", "replace")[-300:]

        wait_for("rabbitmq listeners accept connections", probe, timeout, interval=1.0)

    def wait_ready(self, key: str, timeout: float = 60) -> None:
        port = self.ports[key]

        def probe() -> tuple[bool, Any]:
            container = self.containers[key]
            container.reload()
            if container.status not in ("created", "running"):
                logs = container.logs(tail=30).decode("utf-8", "replace")
                pytest.fail(f"{key} exited ({container.status}): {logs}")
            reply = try_http(port, "GET", "/health/ready", timeout=5)
            return status_of(reply) == 200, reply

        wait_for(f"{key} /health/ready 200", probe, timeout)

    def health_status(self, key: str) -> str | None:
        container = self.containers[key]
        container.reload()
        return (container.attrs["State"].get("Health") or {}).get("Status")

    # ------------------------------------------------------------ teardown

    def remove_all(self) -> None:
        """Every container of this run (with anonymous volumes), then the network."""
        listed = self.client.containers.list(
            all=True, filters={"label": f"{LABEL_KEY}={self.run_id}"}
        )
        ids = {c.id for c in listed} | {c.id for c in self.containers.values()}
        for container_id in ids:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_container(container_id, v=True, force=True)
        for network in self.client.networks.list(names=[self.network]):
            with contextlib.suppress(docker.errors.NotFound):
                network.remove()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def service_images() -> dict[str, str]:
    """The service images as ``{service: image_ref}``, made by `inv images.build` (no-op when
    every image matches its source) and read from the images file of the repository."""
    run_task("images.build", timeout=1800)
    built = json.loads(images_file(REPO, "mysaaschat").read_text(encoding="utf-8"))
    refs = {name: entry["ref"] for name, entry in built.items()}
    missing = ALL_IMAGES - refs.keys()
    assert not missing, f"the images file lacks {sorted(missing)}"
    return {name: refs[name] for name in ALL_IMAGES}


@pytest.fixture(scope="module")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env(timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="module")
def stack(
    docker_client: docker.DockerClient,
    base_images: dict[str, str],
    service_images: dict[str, str],
) -> Iterator[Stack]:
    """Dependencies, first `migrate` of each database service, then every service, all ready
    and reporting healthy. Torn down completely, whatever happened."""
    s = Stack(docker_client, service_images)
    docker_client.networks.create(s.network, driver="bridge", labels=s.labels)
    try:
        s.start(
            "postgres",
            base_images["postgres"],
            alias="postgres",
            environment={
                "POSTGRES_USER": s.pg_user,
                "POSTGRES_PASSWORD": s.pg_password,
                "POSTGRES_DB": "saaschat",
            },
        )
        s.start("redis", base_images["redis"], alias="redis")
        s.start(
            "rabbitmq",
            base_images["rabbitmq"],
            alias="rabbitmq",
            environment={
                "RABBITMQ_DEFAULT_USER": s.rabbit_user,
                "RABBITMQ_DEFAULT_PASS": s.rabbit_password,
            },
        )
        s.start_service("mailsink")
        s.wait_postgres()
        s.first_migrations = parallel(
            {name: (lambda name=name: s.migrate(name)) for name in DATABASE_SERVICES}
        )
        broken = {n: r.logs for n, r in s.first_migrations.items() if r.exit_code != 0}
        if broken:
            pytest.fail(f"migrate failed: {broken}")
        for name in DATABASE_SERVICES:
            s.start_service(name)
        s.wait_rabbitmq()
        for name in ("orchestrator", "email-worker"):
            s.start_service(name)
        for name in SERVING:
            s.wait_ready(name, timeout=60)
        yield s
    finally:
        s.remove_all()


# --------------------------------------------------------------------------- journey helpers


@dataclass
class Account:
    user_id: int
    email: str
    bearer: dict[str, str]


def new_account(stack: Stack) -> Account:
    """Register a fresh user on auth and log in."""
    auth = stack.ports["auth"]
    email = f"user-{uuid.uuid4().hex[:12]}@example.com"
    password = secrets.token_urlsafe(18)
    credentials = {"email": email, "password": password}
    created = http_call(auth, "POST", "/api/auth/register", body=credentials)
    assert created.status == 201, created
    login = http_call(auth, "POST", "/api/auth/login", body=credentials)
    assert login.status == 200, login
    token = login.json()["token"]
    return Account(created.json()["id"], email, {"Authorization": f"Bearer {token}"})


def post_chat_message(stack: Stack, account: Account, room: str, text: str) -> dict[str, Any]:
    body = {"room": room, "text": text}
    posted = http_call(
        stack.ports["chat"], "POST", "/api/chat/messages", body=body, headers=account.bearer
    )
    assert posted.status == 201, posted
    return posted.json()


def mail_through_the_queue(stack: Stack, recipient: str, subject: str, body: str) -> dict[str, Any]:
    """Submit an email job to the orchestrator; the mail the worker delivered to the sink."""
    job = {"type": "email", "to": recipient, "subject": subject, "body": body}
    accepted = http_call(stack.ports["orchestrator"], "POST", "/api/orchestrator/jobs", body=job)
    assert accepted.status == 202, accepted
    job_id = accepted.json()["job_id"]
    assert job_id

    def delivered() -> tuple[bool, Any]:
        reply = try_http(stack.ports["mailsink"], "GET", f"/messages?to={recipient}")
        if reply is None or reply.status != 200:
            return False, reply
        messages = reply.json()["messages"]
        return bool(messages), messages

    messages = wait_for(f"mail of job {job_id} in the mail sink", delivered, timeout=45)
    assert len(messages) == 1, messages
    mail = messages[0]
    assert mail["headers"].get("X-Job-ID") == job_id, mail
    return mail


# --------------------------------------------------------------------------- migrations


@pytest.mark.parametrize("service", DATABASE_SERVICES)
def test_migrate_applies_every_migration_once_and_a_second_run_applies_nothing(
    stack: Stack, service: str
) -> None:
    shipped = shipped_migrations(service)
    assert shipped, f"services/{service}/migrations has no migration"
    database = stack.db_names[service]

    first = stack.first_migrations[service]
    assert first.exit_code == 0, first.logs
    assert [e["migration"] for e in first.messages("migration applied")] == shipped, first.logs
    rows = stack.sql(database, MIGRATION_ROWS)
    assert [f"{int(r[0]):04d}_{r[1]}.sql" for r in rows] == shipped

    second = stack.migrate(service)
    assert second.exit_code == 0, second.logs
    assert second.messages("migration applied") == [], second.logs
    up_to_date = second.messages("schema up to date, nothing to apply")
    assert len(up_to_date) == 1, second.logs
    assert up_to_date[0]["schema_version"] == int(shipped[-1][:4])
    again = stack.sql(database, MIGRATION_ROWS)
    assert again == rows, "a second migrate changed schema_migrations"


# --------------------------------------------------------------------------- health contract


@pytest.mark.parametrize("service", SERVING)
def test_health_endpoints_metrics_and_docker_healthcheck(stack: Stack, service: str) -> None:
    port = stack.ports[service]
    container = stack.containers[service]
    assert container.attrs["Config"]["User"] == "1001:1001"

    live = http_call(port, "GET", "/health/live")
    assert live.status == 200 and live.json()["status"] == "pass", live

    ready = http_call(port, "GET", "/health/ready")
    assert ready.status == 200 and ready.json()["status"] == "pass", ready

    detailed = http_call(port, "GET", "/health/detailed")
    assert detailed.status == 200, detailed
    assert detailed.content_type.split(";")[0].strip() == HEALTH_CONTENT_TYPE
    document = detailed.json()
    assert document["status"] == "pass", document
    assert document["serviceId"] == service
    assert document["releaseId"] == f"test-{stack.run_id}"
    checks = document["checks"]
    assert set(checks) == EXPECTED_CHECKS[service] | {"uptime"}, checks
    for key, entries in checks.items():
        # "uptime" is the draft's own system entry; every dependency check is component:measure.
        assert key == "uptime" or CHECK_KEY.match(key), key
        assert isinstance(entries, list) and entries, (key, entries)
        for entry in entries:
            for attribute in ("componentType", "observedValue", "observedUnit", "status", "time"):
                assert attribute in entry, f"{service} {key} lacks {attribute}: {entry}"
            assert entry["status"] == "pass", (key, entry)
            assert RFC3339_UTC.match(entry["time"]), entry["time"]
            dt.datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
        if key.endswith(":responseTime"):
            assert entries[0]["observedUnit"] == "ms"
            assert isinstance(entries[0]["observedValue"], int | float)
    assert checks["uptime"][0]["componentType"] == "system"
    if service in DATABASE_SERVICES:
        latest = int(shipped_migrations(service)[-1][:4])
        assert checks["schema:version"][0]["observedValue"] == latest

    metrics = http_call(port, "GET", "/metrics")
    assert metrics.status == 200, metrics
    assert metrics.content_type.startswith("text/plain"), metrics.content_type
    assert "version=0.0.4" in metrics.content_type
    text = metrics.body.decode("utf-8")
    types = re.findall(r"^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$", text, re.M)
    assert types, text[:500]
    names = {name for name, _ in types}
    assert {"http_requests_total", "service_info", "dependency_up"} <= names, names
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert PROM_SAMPLE.match(line), f"not a Prometheus sample: {line!r}"
    for check in EXPECTED_CHECKS[service]:
        component, measurement = check.split(":")
        if measurement == "responseTime":
            assert f'dependency_up{{dependency="{component}"}} 1' in text, text

    def settled() -> tuple[bool, str | None]:
        health = stack.health_status(service)
        return health in ("healthy", "unhealthy"), health

    status = wait_for(f"{service} Docker HEALTHCHECK settled", settled, timeout=60)
    assert status == "healthy"


# --------------------------------------------------------------------------- a real journey
# Runs before the outage tests, on a stack nobody has disturbed yet.


def test_register_login_and_chat(stack: Stack) -> None:
    auth, chat = stack.ports["auth"], stack.ports["chat"]
    email = f"User-{stack.run_id}@Example.com"
    password = secrets.token_urlsafe(18)

    created = http_call(
        auth, "POST", "/api/auth/register", body={"email": email, "password": password}
    )
    assert created.status == 201, created
    assert created.json()["email"] == email.lower()
    again = http_call(
        auth, "POST", "/api/auth/register", body={"email": email, "password": password}
    )
    assert again.status == 409, again

    wrong = http_call(
        auth, "POST", "/api/auth/login", body={"email": email, "password": password + "x"}
    )
    assert wrong.status == 401, wrong
    login = http_call(auth, "POST", "/api/auth/login", body={"email": email, "password": password})
    assert login.status == 200, login
    token = login.json()["token"]
    assert login.json()["token_type"] == "Bearer"
    bearer = {"Authorization": f"Bearer {token}"}
    me = http_call(auth, "GET", "/api/auth/me", headers=bearer)
    assert me.status == 200 and me.json()["email"] == email.lower(), me

    room = f"room-{stack.run_id}"
    text = f"hello from {stack.run_id}"
    denied = http_call(chat, "POST", "/api/chat/messages", body={"room": room, "text": text})
    assert denied.status == 401, denied
    posted = http_call(
        chat, "POST", "/api/chat/messages", body={"room": room, "text": text}, headers=bearer
    )
    assert posted.status == 201, posted
    message = posted.json()
    assert message["text"] == text and message["room"] == room
    listed = http_call(chat, "GET", f"/api/chat/messages?room={room}", headers=bearer)
    assert listed.status == 200, listed
    found = [m for m in listed.json()["messages"] if m["id"] == message["id"]]
    assert len(found) == 1 and found[0]["text"] == text, listed
    assert found[0]["user_id"] == created.json()["id"]


def test_billing_webhook_signature_and_replay(stack: Stack) -> None:
    billing = stack.ports["billing"]
    plans = http_call(billing, "GET", "/api/billing/plans")
    assert plans.status == 200, plans
    assert {"free", "pro", "team"} <= {p["id"] for p in plans.json()["plans"]}

    customer = f"cus_{stack.run_id}"
    event = {
        "id": f"evt_{stack.run_id}",
        "type": "subscription.created",
        "data": {"customer_id": customer, "plan_id": "pro"},
    }
    raw = json.dumps(event).encode("utf-8")
    signed = {"X-Signature": sign(raw, stack.webhook_secret), "Content-Type": "application/json"}

    first = http_call(billing, "POST", "/api/billing/webhook", raw=raw, headers=signed)
    assert first.status == 200, first
    assert first.json()["duplicate"] is False
    replay = http_call(billing, "POST", "/api/billing/webhook", raw=raw, headers=signed)
    assert replay.status == 200, replay
    assert replay.json()["duplicate"] is True

    forged = {"X-Signature": sign(raw, secrets.token_urlsafe(32))}
    bad = http_call(billing, "POST", "/api/billing/webhook", raw=raw, headers=forged)
    assert bad.status == 401, bad
    unsigned = http_call(billing, "POST", "/api/billing/webhook", raw=raw)
    assert unsigned.status == 401, unsigned

    database = stack.db_names["billing"]
    rows = stack.sql(
        database,
        "SELECT plan_id, status, last_event_id FROM subscriptions "
        f"WHERE customer_id = '{customer}'",
    )
    assert rows == [["pro", "active", event["id"]]]
    stored = stack.sql(
        database, f"SELECT count(*) FROM webhook_events WHERE event_id = '{event['id']}'"
    )
    assert stored == [["1"]]


def test_analytics_events_are_counted(stack: Stack) -> None:
    analytics = stack.ports["analytics"]
    name = f"signup.{stack.run_id}"
    before = http_call(analytics, "GET", f"/api/analytics/counts?name={name}")
    assert before.status == 200 and before.json()["count"] == 0, before
    for plan in ("free", "pro", "pro"):
        event = {"name": name, "properties": {"plan": plan}}
        added = http_call(analytics, "POST", "/api/analytics/events", body=event)
        assert added.status == 201 and added.json()["name"] == name, added
    invalid = http_call(analytics, "POST", "/api/analytics/events", body={"name": ""})
    assert invalid.status == 400, invalid
    after = http_call(analytics, "GET", f"/api/analytics/counts?name={name}")
    assert after.status == 200 and after.json() == {"name": name, "count": 3}, after


def test_orchestrator_job_is_mailed_by_the_worker(stack: Stack) -> None:
    invalid = http_call(
        stack.ports["orchestrator"],
        "POST",
        "/api/orchestrator/jobs",
        body={"type": "email", "to": "nobody", "subject": "x", "body": ""},
    )
    assert invalid.status == 400, invalid

    recipient = f"welcome-{stack.run_id}@example.com"
    subject = f"Welcome {stack.run_id}"
    body = f"Hello,\nthis is job mail {stack.run_id}."
    mail = mail_through_the_queue(stack, recipient, subject, body)
    assert mail["to"] == [recipient]
    assert mail["subject"] == subject
    assert mail["body"] == body
    assert mail["from"], mail


# --------------------------------------------------------------------------- dependency outage


@pytest.mark.parametrize(
    ("dependency", "service", "check", "recovery_seconds"),
    [
        ("postgres", "auth", "postgresql:responseTime", 30),
        ("redis", "chat", "redis:responseTime", 30),
        ("rabbitmq", "orchestrator", "rabbitmq:responseTime", 60),
    ],
    ids=["postgres-auth", "redis-chat", "rabbitmq-orchestrator"],
)
def test_dependency_outage_and_recovery(
    stack: Stack, dependency: str, service: str, check: str, recovery_seconds: float
) -> None:
    port = stack.ports[service]
    dep = stack.containers[dependency]
    assert status_of(try_http(port, "GET", "/health/ready")) == 200

    dep.stop(timeout=20)
    try:
        failed = wait_http(
            f"{service} /health/ready 503 with {dependency} stopped",
            port,
            "/health/ready",
            lambda r: r.status == 503,
            timeout=20,
        )
        assert check in failed.json()["failed"], failed
        assert "output" not in failed.json()  # asked over the network: the names only
        # asked from inside the container (its healthcheck does): how the dependency failed
        ask = ("import urllib.request as u, urllib.error as e\ntry:\n    u.urlopen("
               "'http://127.0.0.1:8000/health/ready', timeout=5)\nexcept e.HTTPError as x:\n"
               "    print(x.read().decode())")  # fmt: skip
        inside = stack.containers[service].exec_run(["python3", "-c", ask])
        assert json.loads(inside.output)["output"].startswith(f"{check}: "), inside.output

        detailed = http_call(port, "GET", "/health/detailed")
        assert detailed.status == 503, detailed
        assert detailed.content_type.split(";")[0].strip() == HEALTH_CONTENT_TYPE
        document = detailed.json()
        assert document["status"] == "fail", document
        assert document["checks"][check][0]["status"] == "fail", document
        assert check in document["output"], document

        live = http_call(port, "GET", "/health/live")
        assert live.status == 200, live
        stack.containers[service].reload()
        assert stack.containers[service].status == "running"
    finally:
        dep.reload()
        if dep.status != "running":
            dep.start()

    wait_http(
        f"{service} /health/ready 200 after {dependency} restarted",
        port,
        "/health/ready",
        lambda r: r.status == 200,
        timeout=recovery_seconds,
    )
    # A breaker may still report warn for a moment; pass must follow.
    document = wait_http(
        f"{service} /health/detailed pass after {dependency} restarted",
        port,
        "/health/detailed",
        lambda r: r.status == 200 and r.json()["status"] == "pass",
        timeout=30,
    )
    assert document.json()["checks"][check][0]["status"] == "pass"
    assert status_of(try_http(port, "GET", "/health/live")) == 200
    # Ready means serving: the dependency is used for real again.
    WORK_AFTER_RECOVERY[dependency](stack)


def _auth_works(stack: Stack) -> None:
    account = new_account(stack)
    me = http_call(stack.ports["auth"], "GET", "/api/auth/me", headers=account.bearer)
    assert me.status == 200 and me.json()["email"] == account.email, me


def _chat_works(stack: Stack) -> None:
    account = new_account(stack)
    room = f"recovery-{stack.run_id}"
    message = post_chat_message(stack, account, room, "after the redis restart")
    listed = http_call(
        stack.ports["chat"], "GET", f"/api/chat/messages?room={room}", headers=account.bearer
    )
    assert listed.status == 200, listed
    assert message["id"] in [m["id"] for m in listed.json()["messages"]], listed


def _queue_works(stack: Stack) -> None:
    recipient = f"recovery-{stack.run_id}@example.com"
    mail = mail_through_the_queue(stack, recipient, "After the restart", "still delivered")
    assert mail["subject"] == "After the restart" and mail["body"] == "still delivered", mail


WORK_AFTER_RECOVERY: dict[str, Callable[[Stack], None]] = {
    "postgres": _auth_works,
    "redis": _chat_works,
    "rabbitmq": _queue_works,
}


# --------------------------------------------------------------------------- graceful shutdown
# Uses containers of its own, so the module's stack stays up whatever runs after it.


def test_sigterm_stops_every_service_with_exit_code_zero(stack: Stack) -> None:
    """A fresh container of each image, serving and connected to its dependencies, is stopped
    with SIGTERM (docker stop, 15 s before SIGKILL) and must exit 0 by itself."""
    keys = {service: f"{service}-shutdown" for service in SERVING}
    for service, key in keys.items():
        stack.start_service(service, key=key)
    for key in keys.values():
        stack.wait_ready(key, timeout=90)

    def stop(key: str) -> tuple[int, str]:
        container = stack.containers[key]
        container.stop(timeout=15)
        container.reload()
        return container.attrs["State"]["ExitCode"], container.logs().decode("utf-8", "replace")

    results = parallel({key: (lambda key=key: stop(key)) for key in keys.values()})
    failures = {key: logs for key, (code, logs) in results.items() if code != 0}
    assert not failures, {key: (results[key][0], logs) for key, logs in failures.items()}
    for key, (_, logs) in results.items():
        messages = [e.get("message") for e in log_entries(logs)]
        assert "shutdown complete" in messages, (key, logs)
