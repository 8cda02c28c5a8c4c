"""The README's quickstart on this machine, then the whole stack checked from outside: smoke
suite through nginx over HTTPS, Mozilla intermediate TLS graded by sslyze, no-op and dry-run
deploys that change nothing, and a stopped service named by `smoke` and `status`.

The stack runs under its own compose project and ports, so it never touches another stack."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploysuite.core.events import Events
from deploysuite.core.runner import Runner
from deploysuite.engines.state import remove_project

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SERVICES = {
    "nginx", "auth", "chat", "billing", "analytics", "orchestrator", "email-worker", "mailsink",
    "postgres", "redis", "rabbitmq", "prometheus",
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self) -> None:
        self.project = f"e2e{os.getpid()}"
        self.https = free_port()
        self.env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": self.project,
            "HTTP_PORT": str(free_port()),
            "HTTPS_PORT": str(self.https),
            "PROMETHEUS_PORT": str(free_port()),
            "PUBLIC_URL": f"https://localhost:{self.https}",
        }
        self.build_dir = REPO / "build" / "local" / self.project

    def run(self, *argv: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, cwd=REPO, capture_output=True, text=True, env=self.env, timeout=timeout
        )

    def inv(self, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "invoke", "-r", str(REPO), *args, timeout=timeout)

    def containers(self) -> dict[str, str]:
        out = subprocess.run(
            ["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}",
             "--format", '{{.Label "com.docker.compose.service"}} {{.ID}}'],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return dict(line.split() for line in out.splitlines())

    def remove(self) -> None:
        remove_project(Runner(Events()), self.project)
        shutil.rmtree(self.build_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def stack():
    s = Stack()
    s.quickstart = s.run("./scripts/quickstart", timeout=2400)
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
    assert f"https://127.0.0.1:{stack.https}" in rows["nginx"]
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


def test_second_deploy_changes_nothing(stack):
    before = stack.containers()
    again = stack.inv("deploy", "--env=local")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to do" in again.stderr
    assert stack.containers() == before


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

        self.url = f"https://127.0.0.1:{stack.https}"
        self.context = ssl.create_default_context(cafile=str(stack.build_dir / "tls" / "ca.pem"))
        self.context.check_hostname = False
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
    assert "the old one kept serving" in last
    assert "last healthcheck of" in broken.stderr  # the failing check is shown
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


def test_a_stopped_service_is_named_by_smoke_and_status(stack):
    subprocess.run(
        ["docker", "stop", stack.containers()["billing"]], check=True, capture_output=True
    )
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
    restored = stack.inv("deploy", "--env=local", "--json", "--set", "LOG_LEVEL=WARNING")
    assert restored.returncode == 0, restored.stderr[-3000:]
    assert json.loads(restored.stdout)["changed"].get("billing") == "not running"


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
