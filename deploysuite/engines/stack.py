"""The compose stack: which project and files, parsers for `compose ps` / `config --hash`, and the
pure decision of what an `up` would change."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploysuite.config.layers import Config

COMPOSE_FILE = "docker-compose.prod.yml"
SERVICES_ENV_FILE = "services.env.yml"


@dataclass(frozen=True)
class Stack:
    project: str
    files: tuple[Path, ...]
    profiles: tuple[str, ...]


def build_dir(config: Config) -> Path:
    """Generated files of one stack: per environment and compose project, so that a second
    stack on the same machine (a test's, a benchmark's) never rewrites another one's files."""
    return config.root / "build" / config.env / config.require("COMPOSE_PROJECT_NAME")


def services_env_file(config: Config) -> Path:
    """The generated compose file holding each service's environment (mode 0600)."""
    return build_dir(config) / SERVICES_ENV_FILE


def compose_profiles(config: Config) -> tuple[str, ...]:
    """COMPOSE_PROFILES as the profiles it names (comma separated, blanks dropped)."""
    return tuple(p for p in (config.get("COMPOSE_PROFILES") or "").split(",") if p)


def stack_for(config: Config) -> Stack:
    profiles = compose_profiles(config)
    files = [config.root / COMPOSE_FILE]
    if services_env_file(config).exists():
        files.append(services_env_file(config))
    return Stack(
        project=config.require("COMPOSE_PROJECT_NAME"),
        files=tuple(files),
        profiles=profiles,
    )


@dataclass(frozen=True)
class ContainerState:
    service: str
    name: str
    image: str
    state: str  # running, exited, created, restarting, ...
    health: str  # healthy, unhealthy, starting, or "" without a healthcheck
    exit_code: int
    ports: tuple[str, ...]
    config_hash: str
    image_id: str  # the image compose created the container from (its tag may have moved since)

    @property
    def ok(self) -> bool:
        return self.state == "running" and self.health in ("", "healthy")


# `compose ps` joins labels with commas, and other labels' values may hold commas: match the two
# that matter by their exact shape instead of splitting.
CONFIG_HASH_RE = re.compile(r"(?:^|,)com\.docker\.compose\.config-hash=([0-9a-f]{64})(?:,|$)")
IMAGE_ID_RE = re.compile(r"(?:^|,)com\.docker\.compose\.image=(sha256:[0-9a-f]{64})(?:,|$)")


def label_match(pattern: re.Pattern[str], labels: str) -> str:
    match = pattern.search(labels)
    return match.group(1) if match else ""


def published_ports(publishers: Sequence[Mapping[str, object]] | None) -> tuple[str, ...]:
    ports = []
    for p in publishers or ():
        if p.get("PublishedPort"):
            ports.append(f"{p.get('URL') or '0.0.0.0'}:{p['PublishedPort']}->{p.get('TargetPort')}")
    return tuple(sorted(set(ports)))


def parse_ps(text: str) -> list[ContainerState]:
    """`docker compose ps --format json`: one JSON object per line (v2.21+) or one JSON array."""
    text = text.strip()
    if not text:
        return []
    items = (
        json.loads(text)
        if text.startswith("[")
        else [json.loads(line) for line in text.splitlines() if line.strip()]
    )
    out = []
    for item in items:
        labels = str(item.get("Labels", ""))
        out.append(
            ContainerState(
                service=str(item.get("Service", "")),
                name=str(item.get("Name", "")),
                image=str(item.get("Image", "")),
                state=str(item.get("State", "")),
                health=str(item.get("Health", "")),
                exit_code=int(item.get("ExitCode", 0) or 0),
                ports=published_ports(item.get("Publishers")),  # type: ignore[arg-type]
                config_hash=label_match(CONFIG_HASH_RE, labels),
                image_id=label_match(IMAGE_ID_RE, labels),
            )
        )
    return sorted(out, key=lambda c: (c.service, c.name))


def parse_config_hashes(text: str) -> dict[str, str]:
    """`docker compose config --hash '*'`: `service hash` per line."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


@dataclass(frozen=True)
class UpPlan:
    changes: Mapping[str, str]  # service -> why it will be (re)created or started
    unchanged: tuple[str, ...]

    @property
    def nothing_to_do(self) -> bool:
        return not self.changes


def plan_up(
    wanted: Mapping[str, str],
    containers: Sequence[ContainerState],
    images: Mapping[str, str],
    image_ids: Mapping[str, str],
) -> UpPlan:
    """Pure: compare the config hashes and image ids compose would use with what runs.

    wanted: service -> config hash; images: service -> image ref in the compose file;
    image_ids: image ref -> the id its tag points to now.
    """
    by_service: dict[str, list[ContainerState]] = {}
    for c in containers:
        by_service.setdefault(c.service, []).append(c)
    changes: dict[str, str] = {}
    unchanged = []
    for service, config_hash in sorted(wanted.items()):
        running = by_service.get(service, [])
        if not running:
            changes[service] = "not created"
        elif any(c.config_hash != config_hash for c in running):
            changes[service] = "configuration changed"
        elif any(
            c.image_id and image_ids.get(images.get(service, "")) not in (None, c.image_id)
            for c in running
        ):
            changes[service] = "image changed"
        elif any(c.state != "running" for c in running):
            changes[service] = "not running"
        elif any(c.health == "unhealthy" for c in running):
            changes[service] = "unhealthy"
        else:
            unchanged.append(service)
    for service in sorted(set(by_service) - set(wanted)):
        changes[service] = "orphan: no longer in the compose file"
    return UpPlan(changes, tuple(unchanged))


# What the services depend on: changed, they are replaced before the services (engines/compose).
DATA_STORES = ("postgres", "redis", "rabbitmq")

SERVICE_IMAGE_VARS = {
    "auth": "AUTH_IMAGE",
    "chat": "CHAT_IMAGE",
    "billing": "BILLING_IMAGE",
    "analytics": "ANALYTICS_IMAGE",
    "orchestrator": "ORCHESTRATOR_IMAGE",
    "email-worker": "EMAIL_WORKER_IMAGE",
    "mailsink": "MAILSINK_IMAGE",
    "backup": "BACKUP_IMAGE",
}
