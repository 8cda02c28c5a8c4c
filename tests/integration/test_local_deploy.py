"""`inv deploy --env=local` against the real engine, in a compose project of its own."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SERVICES = {"postgres", "redis", "rabbitmq", "prometheus"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self) -> None:
        self.project = f"dstest{os.getpid()}"
        self.port = free_port()
        self.env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": self.project,
            "PROMETHEUS_PORT": str(self.port),
            # The test's own secrets, so it neither needs nor touches environments/local/secrets.env
            "POSTGRES_PASSWORD": secrets.token_urlsafe(32),
            "RABBITMQ_PASSWORD": secrets.token_urlsafe(32),
        }

    def inv(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "invoke", "-r", str(REPO), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )

    def container_ids(self) -> dict[str, str]:
        out = subprocess.run(
            ["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}",
             "--format", '{{.Label "com.docker.compose.service"}} {{.ID}}'],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return dict(line.split() for line in out.splitlines())

    def down(self) -> None:
        subprocess.run(
            ["docker", "compose", "--project-name", self.project,
             "--file", str(REPO / "docker-compose.prod.yml"),
             "down", "--volumes", "--remove-orphans"],
            env=self.env, capture_output=True, timeout=180, check=False,
        )  # fmt: skip


@pytest.fixture(scope="module")
def stack(base_images):
    s = Stack()
    first = s.inv("deploy", "--env=local")
    s.first = first
    try:
        yield s
    finally:
        s.down()


def test_first_deploy_brings_every_service_up_healthy(stack):
    assert stack.first.returncode == 0, stack.first.stderr[-3000:]
    out = stack.first.stdout
    for service in SERVICES:
        row = next(line for line in out.splitlines() if line.startswith(service + " "))
        assert "running" in row and "healthy" in row, row
    assert f"http://127.0.0.1:{stack.port}" in out
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.port}/-/ready", timeout=10) as resp:
        assert resp.status == 200
    assert stack.env["POSTGRES_PASSWORD"] not in stack.first.stdout + stack.first.stderr


def test_second_deploy_changes_nothing(stack):
    before = stack.container_ids()
    again = stack.inv("deploy", "--env=local")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "nothing to do" in again.stderr
    assert stack.container_ids() == before


def test_dry_run_prints_the_command_and_changes_nothing(stack):
    before = stack.container_ids()
    other_port = str(free_port())
    result = stack.inv(
        "deploy", "--env=local", "--dry-run", "--set", f"PROMETHEUS_PORT={other_port}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "prometheus: configuration changed" in result.stderr
    assert f"[local] $ docker compose --project-name {stack.project}" in result.stdout
    assert "up --detach --wait" in result.stdout
    assert stack.container_ids() == before


def test_status_names_a_stopped_service_and_deploy_restores_it(stack):
    subprocess.run(["docker", "stop", "-t", "5", stack.container_ids()["redis"]], check=True,
                   capture_output=True)  # fmt: skip
    status = stack.inv("status", "--env=local")
    assert status.returncode != 0
    assert "not healthy: redis" in status.stderr
    redeploy = stack.inv("deploy", "--env=local", "--json")
    assert redeploy.returncode == 0, redeploy.stderr[-2000:]
    doc = json.loads(redeploy.stdout)
    assert doc["changed"] == {"redis": "not running"}
    assert {r["service"]: r["health"] for r in doc["rows"]}["redis"] == "healthy"
    assert stack.inv("status", "--env=local").returncode == 0
