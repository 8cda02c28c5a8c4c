"""The README's quickstart on this machine, then the whole stack checked from outside: smoke
suite through nginx over HTTPS, Mozilla intermediate TLS graded by sslyze, no-op and dry-run
deploys that change nothing, and a stopped service named by `smoke` and `status`.

The stack runs under its own compose project and ports, so it never touches another stack."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from deploysuite.config.layers import load_config
from deploysuite.core.events import Events
from deploysuite.core.runner import Runner
from deploysuite.edge import tls
from deploysuite.engines.state import remove_project
from deploysuite.images.recipes import base_image_ref
from deploysuite.monitoring.dashboards import dashboard_metrics

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SERVICES = {
    "nginx", "auth", "chat", "billing", "analytics", "orchestrator", "email-worker", "mailsink",
    "postgres", "redis", "rabbitmq", "prometheus", "alertmanager", "node-exporter",
    "postgres-exporter", "redis-exporter", "nginx-exporter", "blackbox-exporter",
}  # fmt: skip
HOOK = "hook-receiver"
ONCALL = "oncall@my-saas-chat.local"  # ALERT_EMAIL_TO's default: the local mail sink gets it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self) -> None:
        self.project = f"e2e{os.getpid()}"
        self.https = free_port()
        self.prometheus = free_port()
        self.env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": self.project,
            "HTTP_PORT": str(free_port()),
            "HTTPS_PORT": str(self.https),
            "PROMETHEUS_PORT": str(self.prometheus),
            "ALERTMANAGER_PORT": str(free_port()),
            "PUBLIC_URL": f"https://localhost:{self.https}",
            # alerts within a minute and a half of their cause, resolved ones soon after
            "PROMETHEUS_SCRAPE_INTERVAL": "5s",
            "ALERT_GROUP_WAIT": "5s",
            "ALERT_GROUP_INTERVAL": "10s",
            # the certificate test waits for its alert seconds, not the default 10 minutes
            "ALERT_CERT_EXPIRY_FOR": "10s",
            # a Slack-compatible receiver the test starts on the stack's egress network (Slack
            # itself cannot be reached from here): Alertmanager posts the alerts to it
            "NOTIFY_WEBHOOK_URL": f"http://{HOOK}:8080/alerts",
        }
        self.hook = f"{self.project}-hook"
        self.build_dir = REPO / "build" / "local" / self.project

    def run(self, *argv: str, timeout: int = 900, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                              env={**self.env, **env}, timeout=timeout)  # fmt: skip

    def inv(self, *args: str, timeout: int = 900, **env: str) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "invoke", "-r", str(REPO), *args, timeout=timeout,
                        **env)  # fmt: skip

    def containers(self) -> dict[str, str]:
        out = subprocess.run(
            ["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}",
             "--format", '{{.Label "com.docker.compose.service"}} {{.ID}}'],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return dict(line.split() for line in out.splitlines())

    def prometheus_api(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.prometheus}{path}", timeout=5) as r:
            return json.loads(r.read())["data"]

    def mails(self, to: str = ONCALL) -> list[dict]:
        script = (
            "import sys, urllib.parse, urllib.request; print(urllib.request.urlopen("
            "'http://127.0.0.1:8025/messages?to=' + urllib.parse.quote(sys.argv[1]), "
            "timeout=5).read().decode())"
        )
        out = subprocess.run(
            ["docker", "exec", self.containers()["mailsink"], "python3", "-c", script, to],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout  # fmt: skip
        return json.loads(out)["messages"]

    def start_hook(self) -> None:
        """The webhook receiver: prints every body it is posted, one line each."""
        script = (
            "import http.server, sys\n"
            "class H(http.server.BaseHTTPRequestHandler):\n"
            "    def do_POST(self):\n"
            "        body = self.rfile.read(int(self.headers['Content-Length'] or 0))\n"
            "        print(body.decode(errors='replace').replace('\\n', ' '), flush=True)\n"
            "        self.send_response(200); self.end_headers(); self.wfile.write(b'ok')\n"
            "    def log_message(self, *a): pass\n"
            "http.server.HTTPServer(('0.0.0.0', 8080), H).serve_forever()\n"
        )
        subprocess.run(
            ["docker", "run", "--detach", "--name", self.hook, "--network",
             f"{self.project}_egress", "--network-alias", HOOK, base_image_ref("python"),
             "python3", "-c", script],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip

    def hook_bodies(self) -> list[str]:
        out = subprocess.run(["docker", "logs", self.hook], capture_output=True, text=True,
                             timeout=30)  # fmt: skip
        return out.stdout.splitlines()

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "--force", self.hook], capture_output=True)
        remove_project(Runner(Events()), self.project)
        shutil.rmtree(self.build_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def stack():
    s = Stack()
    s.quickstart = s.run("./scripts/quickstart", timeout=2400)
    if s.quickstart.returncode == 0:
        s.start_hook()
    try:
        yield s
    finally:
        s.remove()


def table_rows(text: str, first_column: set[str]) -> dict[str, str]:
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] in first_column:
            rows[parts[0]] = line
    return rows


def test_quickstart_deploys_every_service_healthy_and_smoke_passes(stack):
    result = stack.quickstart
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = table_rows(result.stdout, SERVICES)
    assert set(rows) == SERVICES, result.stdout[-3000:]
    for row in rows.values():
        assert " running " in row and " healthy " in row, row
    assert f"https://localhost:{stack.https}" in rows["nginx"]
    assert "smoke tests:" in result.stdout and " FAIL " not in result.stdout
    assert "migrations of auth, chat, billing, analytics" in result.stderr


def test_smoke_suite_passes_every_check(stack):
    result = stack.inv("smoke", "--env=local", "--json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    doc = json.loads(result.stdout)
    checks = {row["check"]: row["result"] for row in doc["rows"]}
    assert doc["failed"] == 0 and all(v == "pass" for v in checks.values())
    for name in (
        "health:auth", "health:chat", "health:billing", "health:analytics", "health:orchestrator",
        "journey:register+login", "journey:chat+websocket", "journey:billing webhook",
        "journey:analytics count", "journey:job -> mail", "edge:security headers",
        "edge:http -> https", "tls:1.0 refused", "tls:1.1 refused", "edge:auth rate limit 429",
    ):  # fmt: skip
        assert name in checks


def query(stack: Stack, expr: str) -> list[dict]:
    return stack.prometheus_api("/api/v1/query?query=" + urllib.parse.quote(expr))["result"]


def test_every_scrape_target_is_up_and_every_alert_rule_is_loaded(stack):
    deadline = time.monotonic() + 120
    while True:
        targets = stack.prometheus_api("/api/v1/targets")["activeTargets"]
        down = {f"{t['labels']['job']} {t['scrapeUrl']}": t["lastError"]
                for t in targets if t["health"] != "up"}  # fmt: skip
        if (targets and not down) or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert targets and not down, down
    assert {t["labels"]["job"] for t in targets} == {
        "prometheus", "services", "node", "postgres", "redis", "nginx", "rabbitmq",
        "alertmanager", "blackbox",
    }  # fmt: skip
    rules = [r for g in stack.prometheus_api("/api/v1/rules")["groups"] for r in g["rules"]]
    alerting = [r for r in rules if r["type"] == "alerting"]
    assert len(alerting) >= 24 and all(r["health"] == "ok" for r in alerting), alerting
    # each exporter really reads its part: PostgreSQL through its read-only role, nginx's
    # stub_status, Redis, and the public endpoint's certificate through the probe
    # (the exporter's role is set at the end of the deploy: its first scrapes may fail)
    exprs = ("pg_up", "redis_up", "nginx_up", "probe_success")
    deadline = time.monotonic() + 60
    while True:
        values = {expr: [r["value"][1] for r in query(stack, expr)] for expr in exprs}
        if all(v == ["1"] for v in values.values()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert all(v == ["1"] for v in values.values()), values
    expiry = float(query(stack, "probe_ssl_earliest_cert_expiry")[0]["value"][1])
    assert expiry > time.time() + 14 * 86400
    role = subprocess.run(
        ["docker", "exec", stack.containers()["postgres"], "sh", "-c",
         'psql -U "$POSTGRES_USER" -d postgres -tAc "$1"', "sh",
         "SELECT rolsuper, pg_has_role('monitoring', 'pg_monitor', 'member') FROM pg_roles "
         "WHERE rolname = 'monitoring'"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert role == "f|t"
    # every metric a dashboard panel reads is one this stack exposes; not here: the backup
    # service's (profile `backup`, not in this stack: its own tests read its /metrics) and the
    # last rollback's time (a local stack is never rolled back)
    absent_here = {"deploysuite_last_rollback_timestamp_seconds"}
    wanted = {m: d for m, d in dashboard_metrics().items()
              if not m.startswith("backup_") and m not in absent_here}  # fmt: skip
    deadline = time.monotonic() + 60  # a few scrapes: the deploy's own textfile comes last
    while True:
        missing = {m: sorted(d) for m, d in wanted.items()
                   if not query(stack, f'count({{__name__="{m}"}})')}  # fmt: skip
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert not missing, f"not exposed (metric: dashboards): {missing}"
    shown = stack.inv("alerts", "--env=local", "--json")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert isinstance(json.loads(shown.stdout)["rows"], list)


def test_a_routing_test_reaches_the_mail_receiver(stack):
    result = stack.inv("alerts.test", "--env=local", "--json")
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert json.loads(result.stdout)["rows"] == [
        {"integration": "email", "result": "delivered"},
        {"integration": "slack", "result": "delivered"},
    ]
    assert any("DeploySuiteRoutingTest" in json.dumps(m) for m in stack.mails())
    assert any("DeploySuiteRoutingTest" in body for body in stack.hook_bodies())


def test_a_silence_is_listed_by_alertmanager_and_can_be_lifted(stack):
    bad = stack.inv("alerts.silence", "--env=local", "--match", "alertname=X")
    assert bad.returncode == 12 and "comment" in bad.stderr.splitlines()[-1]
    made = stack.inv("alerts.silence", "--env=local", "--match", "alertname=DiskFillingUp",
                     "--for", "10m", "--comment", "e2e maintenance", "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    silence_id = json.loads(made.stdout)["rows"][0]["silence"]
    listed = subprocess.run(
        ["docker", "exec", stack.containers()["alertmanager"], "amtool",
         "--alertmanager.url=http://127.0.0.1:9093", "silence", "query", "--quiet"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert silence_id in listed
    lifted = stack.inv("alerts.unsilence", "--env=local", "--id", silence_id)
    assert lifted.returncode == 0, lifted.stderr[-2000:]


def test_redis_answers_only_its_acl_user_and_no_password_is_on_a_command_line(stack):
    redis = stack.containers()["redis"]

    def in_redis(script: str) -> str:
        done = subprocess.run(["docker", "exec", redis, "sh", "-c", script + " 2>&1"],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        return done.stdout.strip()

    login = 'redis-cli --user "$REDIS_USER" --no-auth-warning ping'
    assert in_redis(f'REDISCLI_AUTH="$(cat "$REDIS_PASSWORD_FILE")" {login}') == "PONG"
    assert "WRONGPASS" in in_redis(f"REDISCLI_AUTH=wrong {login}")
    assert "NOAUTH" in in_redis("redis-cli ping")  # the passwordless default user is off
    password = in_redis('cat "$REDIS_PASSWORD_FILE"')
    assert len(password) >= 32
    pid = subprocess.run(["docker", "inspect", "--format", "{{.State.Pid}}", redis],
                         capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert password not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")


def test_no_secret_value_is_in_docker_inspect_and_each_file_is_its_readers_alone(stack):
    config = load_config("local", process_env=stack.env)
    values = {s.name: config.get(s.name) for s in config.schema.values() if s.is_secret}
    values = {k: v for k, v in values.items() if v and len(v) >= 8}
    assert {"POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "REDIS_PASSWORD"} <= set(values)
    containers = stack.containers()
    assert set(containers) >= SERVICES
    inspect = subprocess.run(["docker", "inspect", *containers.values()], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    assert [k for k, v in values.items() if v in inspect] == []
    # the files: 0400, owned by the user that reads them, holding the environment's value
    expected = {
        ("auth", "/run/secrets/postgres_password"): ("400 1001", "POSTGRES_PASSWORD"),
        ("postgres", "/run/secrets/postgres_password"): ("400 0", "POSTGRES_PASSWORD"),
        ("chat", "/run/secrets/redis_password"): ("400 1001", "REDIS_PASSWORD"),
        ("rabbitmq", "/etc/rabbitmq/conf.d/20-default-user.conf"): ("400 999", "RABBITMQ_PASSWORD"),
    }
    for (service, path), (mode_owner, key) in expected.items():
        reader = mode_owner.split()[1]  # as the reader (root has no capability to read it)
        done = subprocess.run(["docker", "exec", "--user", reader, containers[service], "sh", "-c",
                               f'stat -c "%a %u" {path} && cat {path}'],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        first, _, content = done.stdout.partition("\n")
        assert first == mode_owner, (service, path, done.stdout[:20], done.stderr)
        assert values[key] in content, (service, path)


def test_nginx_master_and_workers_run_as_nginx_with_no_capability(stack):
    nginx = stack.containers()["nginx"]
    pid = subprocess.run(["docker", "inspect", "--format", "{{.State.Pid}}", nginx],
                         capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    status = Path(f"/proc/{pid}/status").read_text()
    assert "nginx: master process" in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == ["101"] * 4
    effective = next(line for line in status.splitlines() if line.startswith("CapEff:"))
    assert effective.split()[1] == "0" * 16
    workers = subprocess.run(["pgrep", "-P", pid], capture_output=True, text=True).stdout.split()
    assert workers
    for worker in workers:
        line = next(x for x in Path(f"/proc/{worker}/status").read_text().splitlines()
                    if x.startswith("Uid:"))  # fmt: skip
        assert line.split()[1:] == ["101"] * 4
    key = subprocess.run(
        ["docker", "exec", nginx, "stat", "-c", "%a %u", "/etc/nginx/tls/privkey.pem"],
        capture_output=True, text=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    assert key in ("600 101", "400 101")


def test_second_deploy_changes_nothing(stack):
    before = stack.containers()
    again = stack.inv("deploy", "--env=local")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to do" in again.stderr
    assert stack.containers() == before


def test_a_password_the_data_store_does_not_hold_stops_the_deploy_before_any_change(stack):
    """A new POSTGRES_PASSWORD while the volume keeps the old one (a fresh clone's secrets, a
    rotation done only in the file): refused, named, nothing changed."""
    before = stack.containers()
    drifted = stack.inv("deploy", "--env=local", "--set",
                        f"POSTGRES_PASSWORD={secrets.token_urlsafe(32)}")  # fmt: skip
    assert drifted.returncode == 2, drifted.stderr[-3000:]
    last = drifted.stderr.strip().splitlines()[-1]
    assert "PostgreSQL's data volume holds another password than POSTGRES_PASSWORD" in last
    assert "stopped before changing anything" in last and "\\password" in last
    assert stack.containers() == before
    again = stack.inv("deploy", "--env=local", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] == {}, again.stderr[-2000:]


def test_dry_run_prints_commands_and_changes_nothing(stack):
    before = stack.containers()
    result = stack.inv("deploy", "--env=local", "--dry-run", "--set", "LOG_LEVEL=DEBUG")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "auth: configuration changed" in result.stderr
    assert f"[local] $ docker compose --project-name {stack.project}" in result.stdout
    assert "up --detach --wait" in result.stdout
    # the images did not change, so there is nothing to migrate
    assert "migrate" not in result.stdout
    assert stack.containers() == before


def test_sslyze_reports_mozilla_intermediate_compliance(stack):
    sslyze = Path(sys.executable).parent / "sslyze"
    ca = stack.build_dir / "tls" / "ca.pem"
    result = subprocess.run(
        [str(sslyze), "--mozilla_config=intermediate", "--certinfo_ca_file", str(ca),
         f"localhost:{stack.https}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert f"localhost:{stack.https}: OK - Compliant." in result.stdout, result.stdout[-3000:]


class Load:
    """Bounded load through nginx while a deploy runs: a few requests at a time to several
    services, every answer counted. Stops by itself after `seconds`."""

    PATHS = ("/health/auth", "/health/chat", "/api/billing/plans", "/health/analytics",
             "/health/orchestrator", "/api/analytics/counts?name=load")  # fmt: skip

    def __init__(self, stack, seconds: float = 240) -> None:
        import ssl
        import threading

        # The server name, as SNI and Host: nginx refuses a handshake by address (no SNI).
        self.url = f"https://localhost:{stack.https}"
        self.context = ssl.create_default_context(cafile=str(stack.build_dir / "tls" / "ca.pem"))
        self.deadline = time.monotonic() + seconds
        self.stop_event = threading.Event()
        self.results: list[tuple[str, int | str]] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        import urllib.error
        import urllib.request

        index = 0
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            path = self.PATHS[index % len(self.PATHS)]
            index += 1
            try:
                with urllib.request.urlopen(self.url + path, context=self.context, timeout=10) as r:
                    self.results.append((path, r.status))
            except urllib.error.HTTPError as exc:
                self.results.append((path, exc.code))
            except OSError as exc:
                self.results.append((path, type(exc).__name__))
            time.sleep(0.05)  # about 20 requests a second

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)

    @property
    def failures(self) -> list[tuple[str, int | str]]:
        return [(p, s) for p, s in self.results if s != 200]


def test_rolling_deploy_drops_no_request(stack):
    with Load(stack) as load:
        time.sleep(1)
        result = stack.inv("deploy", "--env=local", "--no-smoke", "--set", "LOG_LEVEL=WARNING")
        time.sleep(1)
    assert result.returncode == 0, result.stderr[-3000:]
    for service in ("auth", "chat", "billing", "analytics", "orchestrator", "email-worker"):
        assert f"roll {service} (configuration changed)" in result.stderr
    assert len(load.results) > 100
    assert load.failures == []
    # its own blips were silenced while it ran, and the silence is gone once it ended
    assert "alerts of expected blips silenced for the deploy" in result.stderr
    active = json.loads(subprocess.run(
        ["docker", "exec", stack.containers()["alertmanager"], "amtool",
         "--alertmanager.url=http://127.0.0.1:9093", "silence", "query", "--output", "json"],
        capture_output=True, text=True, check=True,
    ).stdout)  # fmt: skip
    assert [s["comment"] for s in active if "inv deploy" in s["comment"]] == []


ROTATED = ("POSTGRES_PASSWORD", "MONITORING_DB_PASSWORD", "RABBITMQ_PASSWORD", "REDIS_PASSWORD",
           "AUTH_TOKEN_SECRET")  # fmt: skip


def secret_values(stack) -> dict[str, str]:
    config = load_config("local", process_env=stack.env)
    return {name: config.get(name) or "" for name in (*ROTATED, "AUTH_TOKEN_SECRET_PREVIOUS")}


def log_in(stack) -> str:
    """A user's token, signed with the key AUTH_TOKEN_SECRET holds now."""
    import ssl
    import urllib.error

    context = ssl.create_default_context(cafile=str(stack.build_dir / "tls" / "ca.pem"))
    creds = json.dumps({"email": f"rot-{secrets.token_hex(4)}@example.com",
                        "password": secrets.token_urlsafe(16)}).encode()  # fmt: skip
    body: dict = {}
    for path in ("/api/auth/register", "/api/auth/login"):
        request = urllib.request.Request(f"https://localhost:{stack.https}{path}", data=creds,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        for attempt in range(10):  # the log-in rate limit (a smoke test's burst just before)
            try:
                with urllib.request.urlopen(request, context=context, timeout=10) as r:
                    body = json.loads(r.read())
                break
            except urllib.error.HTTPError as exc:
                if exc.code != 429 or attempt == 9:
                    raise
                time.sleep(1)
    return body["token"]


def me(stack, token: str) -> int:
    import ssl
    import urllib.error

    context = ssl.create_default_context(cafile=str(stack.build_dir / "tls" / "ca.pem"))
    request = urllib.request.Request(f"https://localhost:{stack.https}/api/auth/me",
                                     headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_rotation_stopped_half_way_puts_every_value_back_and_drops_no_request(stack):
    """Ctrl-C once the first batch of services runs with the new values: the stores take their
    old passwords back, the secrets file its old text, and the services that already took the
    new values return to the old ones, with no request failed."""
    import signal

    before = secret_values(stack)
    text = (REPO / "environments" / "local" / "secrets.env").read_text()
    with Load(stack) as load:
        time.sleep(1)
        # the live LOG_LEVEL (the rolling test's): the tests after these expect the stack as is;
        # --force: a rotation of the token key by an earlier run on this machine (its secrets
        # file is the environment's) does not matter here
        process = subprocess.Popen(
            [sys.executable, "-m", "invoke", "-r", str(REPO), "env.rotate", "--env=local",
             "--force"], cwd=REPO, env={**stack.env, "LOG_LEVEL": "WARNING"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        lines = []
        deadline = time.monotonic() + 300
        for line in process.stderr:  # the second batch starting: the first one went through
            lines.append(line)
            if "roll analytics" in line or time.monotonic() > deadline:
                break
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=600)
        result = subprocess.CompletedProcess(process.args, process.returncode, out,
                                             "".join(lines) + err)  # fmt: skip
        time.sleep(1)
    assert "roll analytics" in "".join(lines), result.stderr[-3000:]  # stopped half-way
    assert result.returncode != 0, result.stderr[-3000:]
    assert "interrupted: putting the old values back" in result.stderr
    assert "the stores and the secrets file get the old values back" in result.stderr
    # the batch that went through before Ctrl-C is returned to the old values too
    assert "put back: the stores, the secrets file and the services have the old values again" in (
        result.stderr
    )
    assert (REPO / "environments" / "local" / "secrets.env").read_text() == text
    assert secret_values(stack) == before
    assert len(load.results) > 50 and load.failures == []
    # the stores accept the old values again: a deploy finds no drift and nothing to change
    again = stack.inv("deploy", "--env=local", "--json", LOG_LEVEL="WARNING")
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] == {}, again.stderr[-2000:]


def test_rotation_under_load_drops_no_request_and_old_tokens_still_verify(stack):
    before = secret_values(stack)
    token = log_in(stack)
    with Load(stack) as load:
        time.sleep(1)
        result = stack.inv("env.rotate", "--env=local", "--json", "--force", LOG_LEVEL="WARNING")
        time.sleep(1)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["secret"]: r["result"] for r in json.loads(result.stdout)["rows"]}
    assert rows == dict.fromkeys(ROTATED, "rotated")
    after = secret_values(stack)
    assert all(after[n] and after[n] != before[n] for n in ROTATED)
    assert after["AUTH_TOKEN_SECRET_PREVIOUS"] == before["AUTH_TOKEN_SECRET"]
    assert not [v for v in after.values() if v in result.stdout + result.stderr]  # masked
    assert len(load.results) > 100
    assert load.failures == []
    # a token signed with the key before still verifies, and a new log-in works
    assert me(stack, token) == 200
    assert me(stack, log_in(stack)) == 200
    # every store holds the new value (no drift, nothing to change), Redis the new one alone
    again = stack.inv("deploy", "--env=local", "--json", LOG_LEVEL="WARNING")
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] == {}, again.stderr[-2000:]
    redis = stack.containers()["redis"]
    acl = subprocess.run(["docker", "exec", redis, "sh", "-c",
                          'REDISCLI_AUTH="$(cat "$REDIS_PASSWORD_FILE")" redis-cli --user '
                          '"$REDIS_USER" --no-auth-warning ACL GETUSER "$REDIS_USER"'],
                         capture_output=True, text=True, timeout=30).stdout  # fmt: skip
    hashes = [line for line in acl.split() if len(line) == 64]
    assert hashes == [hashlib.sha256(after["REDIS_PASSWORD"].encode()).hexdigest()]
    # a second rotation of the token key within a token's lifetime is refused, changing nothing
    refused = stack.inv("env.rotate", "--env=local", "--secret", "AUTH_TOKEN_SECRET",
                        LOG_LEVEL="WARNING")  # fmt: skip
    assert refused.returncode != 0 and "less than a token's lifetime ago" in refused.stderr
    assert secret_values(stack) == after


def test_broken_release_rolls_back_while_the_old_version_serves(stack):
    before = stack.containers()["auth"]
    with Load(stack) as load:
        broken = stack.inv(
            "deploy", "--env=local", "--no-smoke", "--wait-timeout", "120",
            "--set", "AUTH_DB_NAME=no_such_database",  # the new auth can never become ready
            "--set", "LOG_LEVEL=WARNING",  # as deployed by the test before
        )  # fmt: skip
    assert broken.returncode == 9, broken.stderr[-3000:]
    last = broken.stderr.strip().splitlines()[-1]
    assert last.startswith("error: auth: the new container did not become healthy")
    assert "kept serving" in last and "nothing was switched" in last
    assert "healthcheck of" in broken.stderr  # the failing check is shown, its cause named
    assert 'database "no_such_database" does not exist' in last, last
    assert stack.containers()["auth"] == before  # the old container is still the one
    assert load.failures == [] and len(load.results) > 50
    again = stack.inv("deploy", "--env=local", "--no-smoke", "--set", "LOG_LEVEL=WARNING")
    assert again.returncode == 0 and "nothing to do" in again.stderr, again.stderr[-2000:]


def test_a_failed_migration_changes_nothing_and_puts_the_environment_back(stack, tmp_path):
    """A new auth image whose migrations fail (one broken SQL file added to the real image):
    the deploy stops at the migration, every service keeps its container, and the services
    environment file is the one they run from again, not the new release's."""
    before = stack.containers()
    env_file = stack.build_dir / "services.env.yml"
    previous = env_file.read_text()
    image = subprocess.run(["docker", "inspect", "--format", "{{.Image}}", before["auth"]],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    broken = f"e2e-broken-auth:{os.getpid()}"
    (tmp_path / "Dockerfile").write_text(
        f"FROM {image}\nUSER root\nRUN test -d /app/service/migrations && printf "
        "'SELECT no_such_function();\\n' > /app/service/migrations/9999_broken.sql\n"
        "USER 1001:1001\n"
    )
    subprocess.run(["docker", "build", "-q", "-t", broken, str(tmp_path)], check=True,
                   capture_output=True)  # fmt: skip
    try:
        result = stack.inv(
            "deploy", "--env=local", "--no-smoke", "--set", f"AUTH_IMAGE={broken}",
            "--set", "LOG_LEVEL=ERROR",  # a new environment for every service
        )  # fmt: skip
    finally:
        subprocess.run(["docker", "rmi", "-f", broken], capture_output=True)
    assert result.returncode == 5, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "[local] auth: migrations failed (exit" in last, last
    assert "migrations are in services/auth/migrations" in last
    assert stack.containers() == before  # no service was replaced
    assert env_file.read_text() == previous  # what the running containers were made from
    again = stack.inv("deploy", "--env=local", "--no-smoke", "--set", "LOG_LEVEL=WARNING")
    assert again.returncode == 0 and "nothing to do" in again.stderr, again.stderr[-2000:]


def test_a_stopped_service_is_named_by_smoke_and_status_and_pages(stack):
    subprocess.run(
        ["docker", "stop", stack.containers()["billing"]], check=True, capture_output=True
    )
    stopped = time.monotonic()
    smoke = stack.inv("smoke", "--env=local")
    assert smoke.returncode != 0
    assert "health:billing" in smoke.stderr.strip().splitlines()[-1]
    failed = [line for line in smoke.stdout.splitlines() if " FAIL " in line]
    assert failed and all(
        line.split()[0].startswith(("health:billing", "journey:billing")) for line in failed
    )
    status = stack.inv("status", "--env=local")
    assert status.returncode != 0
    assert "not healthy: billing" in status.stderr
    # ServiceDown reaches the on-call mailbox within scrape + evaluation + for: + group_wait
    bound = 5 + 5 + 60 + 5
    seen = wait_for_mail(stack, "FIRING", "ServiceDown", "billing", timeout=bound + 60)
    posted = wait_for_hook(stack, "FIRING", "ServiceDown", "billing", timeout=30)
    print(f"ServiceDown of billing mailed {seen - stopped:.1f} s and posted to the webhook "
          f"{posted - stopped:.1f} s after the stop (bound {bound} s)")  # fmt: skip
    assert max(seen, posted) - stopped <= bound + 15
    restored = stack.inv("deploy", "--env=local", "--json", "--set", "LOG_LEVEL=WARNING")
    assert restored.returncode == 0, restored.stderr[-3000:]
    assert json.loads(restored.stdout)["changed"].get("billing") == "not running"
    wait_for_mail(stack, "RESOLVED", "ServiceDown", "billing", timeout=90)
    wait_for_hook(stack, "RESOLVED", "ServiceDown", "billing", timeout=30)
    # the incident view tells the same story: billing's alert fired and resolved, a deploy
    timeline = stack.inv("timeline", "--env=local", "--since", "1h", "--json")
    assert timeline.returncode == 0, timeline.stderr[-2000:]
    rows = json.loads(timeline.stdout)["rows"]
    kinds = {(r["kind"], r["what"] == "ServiceDown" and "billing" in r["detail"]) for r in rows}
    assert {("alert fired", True), ("alert resolved", True)} <= kinds, rows
    assert any(r["kind"] == "deploy" for r in rows), rows


def test_a_certificate_near_its_end_fires_the_expiry_alert(stack):
    """The stack's own CA signs a leaf for 3 days (the threshold is 14): blackbox reads its
    end through nginx, CertificateExpiringSoon reaches the webhook; the real one goes back."""
    tls_dir = stack.build_dir / "tls"
    kept = {name: (tls_dir / name).read_bytes() for name in (tls.CERT, tls.KEY)}
    nginx = stack.containers()["nginx"]
    try:
        for argv in (tls.leaf_request_argv(tls_dir, ("localhost",)),
                     tls.leaf_sign_argv(tls_dir, secrets.token_hex(16), days=3)):  # fmt: skip
            subprocess.run(argv, check=True, capture_output=True, timeout=60)
        subprocess.run(["docker", "exec", nginx, "nginx", "-s", "reload"], check=True,
                       capture_output=True, timeout=30)  # fmt: skip
        changed = time.monotonic()
        # probe (5 s) + evaluation (5 s) + for: 10 s + group_wait 5 s, and the reload itself
        posted = wait_for_hook(stack, "FIRING", "CertificateExpiringSoon", timeout=120)
        print(f"CertificateExpiringSoon posted {posted - changed:.1f} s after the reload")
        alerts = stack.prometheus_api("/api/v1/alerts")["alerts"]
        fired = [a for a in alerts if a["labels"]["alertname"] == "CertificateExpiringSoon"]
        assert fired and fired[0]["state"] == "firing", alerts
        left = float(fired[0]["value"]) / 86400
        assert 2.9 < left <= 3.0, left  # the probe read the new certificate's end
    finally:
        for name, data in kept.items():
            (tls_dir / name).write_bytes(data)
        subprocess.run(["docker", "exec", nginx, "nginx", "-s", "reload"], capture_output=True,
                       timeout=30)  # fmt: skip


def wait_for_hook(stack: Stack, *words: str, timeout: float) -> float:
    """The monotonic time a webhook body holding every word was seen (polled each second)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(all(w in body for w in words) for body in stack.hook_bodies()):
            return time.monotonic()
        time.sleep(1)
    pytest.fail(f"no webhook post with {words} in {timeout:.0f} s: {stack.hook_bodies()[-5:]}")


def wait_for_mail(stack: Stack, *words: str, timeout: float) -> float:
    """The monotonic time the first message holding every word was seen (polled each 2 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(all(w in json.dumps(m) for w in words) for m in stack.mails()):
            return time.monotonic()
        time.sleep(2)
    pytest.fail(
        f"no mail with {words} in {timeout:.0f} s: {[m.get('subject') for m in stack.mails()]}"
    )


def test_down_asks_before_deleting_data_then_removes_the_stack(stack):
    before = stack.containers()
    refused = stack.inv("down", "--env=local", "--volumes")  # no terminal, no --yes
    assert refused.returncode != 0
    assert "needs confirmation" in refused.stderr and "--yes" in refused.stderr
    assert stack.containers() == before
    done = stack.inv("down", "--env=local", "--volumes", "--yes")
    assert done.returncode == 0, done.stderr[-2000:]
    assert stack.containers() == {}
    volumes = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter",
         f"label=com.docker.compose.project={stack.project}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert volumes == []
