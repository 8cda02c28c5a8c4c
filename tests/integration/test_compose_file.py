"""docker-compose.prod.yml, as Compose v2 itself resolves it for every environment and profile:
topology, networks, hardening, health, limits. Runs the real `docker compose config`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from deploysuite.config.layers import load_config
from deploysuite.config.service_env import SERVICE_VARIABLES, render_services_env
from deploysuite.engines.stack import SERVICE_IMAGE_VARS

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.prod.yml"
PROFILES = ("local-mail", "acme", "unavailable", "backup", "monitoring")
DATA_STORES = {"postgres", "redis", "rabbitmq", "mongodb", "clickhouse"}
TOPOLOGY = {
    "nginx", "certbot", "auth", "chat", "billing", "analytics", "orchestrator", "email-worker",
    "mailsink", "postgres", "mongodb", "redis", "clickhouse", "rabbitmq", "kong", "jaeger",
    "prometheus", "grafana", "backup", "alertmanager", "node-exporter", "postgres-exporter",
    "redis-exporter", "nginx-exporter", "blackbox-exporter",
}  # fmt: skip
NOT_OBTAINABLE_HERE = {"mongodb", "clickhouse", "kong", "jaeger", "grafana"}


SERVICES_ENV = Path(tempfile.mkdtemp(prefix="compose-env-")) / "services.env.yml"
SERVICES_ENV.write_text(render_services_env({s: {"LOG_LEVEL": "INFO"} for s in SERVICE_VARIABLES}))


def compose_env(env: str) -> dict[str, str]:
    """The variables the deploy would pass, with stand-ins for secrets and built images."""
    config = load_config(env, process_env={})
    values = {**os.environ, **config.as_env()}
    for spec in config.schema.values():
        if spec.is_secret and not values.get(spec.name):
            values[spec.name] = "x" * 43
    for var in SERVICE_IMAGE_VARS.values():
        values.setdefault(var, f"registry.example/{var.lower()}:test")
    values.update(NGINX_RENDERED_DIR="/srv/nginx", TLS_DIR="/srv/tls")
    return values


def resolved(env: str, *args: str) -> subprocess.CompletedProcess[str]:
    profiles = [a for p in PROFILES for a in ("--profile", p)]
    return subprocess.run(
        ["docker", "compose", "--file", str(COMPOSE), "--file", str(SERVICES_ENV), *profiles,
         "config", *args],
        capture_output=True, text=True, env=compose_env(env), timeout=60,
    )  # fmt: skip


@pytest.fixture(scope="module")
def model() -> dict:
    result = resolved("production", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("env", ["local", "staging", "production"])
def test_every_environment_and_profile_validates(env: str):
    result = resolved(env, "--quiet")
    assert result.returncode == 0, result.stderr


def test_topology_of_the_seed_document(model: dict):
    assert set(model["services"]) == TOPOLOGY
    assert {n.split("_")[-1] for n in model["networks"]} == {
        "frontend", "backend", "monitoring", "egress",
    }  # fmt: skip
    assert model["networks"]["backend"].get("internal") is True


def test_components_that_cannot_be_pulled_here_sit_behind_a_profile(model: dict):
    for name in NOT_OBTAINABLE_HERE:
        assert model["services"][name].get("profiles") == ["unavailable"], name


def test_data_stores_never_join_frontend(model: dict):
    for name in DATA_STORES:
        assert "frontend" not in model["services"][name]["networks"], name


def test_every_service_is_limited_healthchecked_restarted_and_hardened(model: dict):
    for name, service in model["services"].items():
        assert service["deploy"]["resources"]["limits"]["memory"], name
        assert service["deploy"]["resources"]["limits"]["cpus"], name
        assert service["deploy"]["resources"]["limits"]["pids"] == 512, name
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert service.get("restart") == "unless-stopped", name
        assert "no-new-privileges:true" in service.get("security_opt", []), name


def test_only_nginx_publishes_and_uis_bind_to_loopback(model: dict):
    for name, service in model["services"].items():
        for port in service.get("ports", []):
            if name == "nginx":
                assert port["target"] in (80, 443)
            else:
                assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port}"


def test_services_drop_capabilities_and_run_read_only(model: dict):
    for name in ("auth", "chat", "billing", "analytics", "orchestrator", "email-worker", "nginx"):
        service = model["services"][name]
        assert service["cap_drop"] == ["ALL"], name
        assert service.get("read_only") is True, name


def test_dependencies_wait_for_health(model: dict):
    for name, service in model["services"].items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert spec["condition"] == "service_healthy", f"{name} -> {dependency}"
    assert set(model["services"]["nginx"]["depends_on"]) == {
        "auth", "chat", "billing", "analytics", "orchestrator",
    }  # fmt: skip


def test_every_image_is_a_variable():
    images = re.findall(r"^\s+image:\s*(\S+)", COMPOSE.read_text(), flags=re.MULTILINE)
    assert len(images) == len(TOPOLOGY)
    assert all(i.startswith("${") for i in images), images


def test_services_get_their_environment_from_the_generated_file(model: dict):
    text = COMPOSE.read_text()
    for name in SERVICE_VARIABLES:
        service = model["services"][name]
        assert service["environment"].get("LOG_LEVEL") == "INFO", name  # from the generated file
    for secret in ("AUTH_TOKEN_SECRET", "BILLING_WEBHOOK_SECRET", "SMTP_PASSWORD"):
        assert secret not in text, f"{secret} is wired in the compose file, not per service"


def test_the_backup_service_shares_only_the_socket_and_the_spool_with_postgres(model: dict):
    backup, postgres = model["services"]["backup"], model["services"]["postgres"]
    # egress: S3 and the webhook; monitoring: Prometheus scrapes its /metrics. PostgreSQL is on
    # neither: the two share no network, only the socket and the spool.
    assert set(backup["networks"]) == {"egress", "monitoring"}
    assert not set(backup["networks"]) & set(postgres["networks"])
    shared = {v["source"] for v in backup["volumes"]} & {v["source"] for v in postgres["volumes"]}
    assert shared == {"postgres-socket", "postgres-wal-spool"}
    assert backup["profiles"] == ["backup"]
    assert backup["healthcheck"]["test"][-2:] == ["deploysuite.backup.agent", "health"]
    command = " ".join(postgres["command"])
    assert "archive_command=test ! -f /var/lib/postgresql/wal-spool/%f" in command
    assert "archive_mode=off" in command  # on only where the backup service runs
