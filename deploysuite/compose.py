"""The compose stack: which project and files, parsers for `compose ps` / `config --hash`, and the
pure decision of what an `up` would change."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploysuite.config import Config

COMPOSE_FILE = "docker-compose.prod.yml"
CONFIG_HASH_LABEL = "com.docker.compose.config-hash"


@dataclass(frozen=True)
class Stack:
    project: str
    files: tuple[Path, ...]
    profiles: tuple[str, ...]


def stack_for(config: Config) -> Stack:
    profiles = tuple(p for p in (config.get("COMPOSE_PROFILES") or "").split(",") if p)
    return Stack(
        project=config.require("COMPOSE_PROJECT_NAME"),
        files=(config.root / COMPOSE_FILE,),
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

    @property
    def ok(self) -> bool:
        return self.state == "running" and self.health in ("", "healthy")


def parse_labels(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if sep:
            out[key.strip()] = value
    return out


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
        labels = parse_labels(str(item.get("Labels", "")))
        out.append(
            ContainerState(
                service=str(item.get("Service", "")),
                name=str(item.get("Name", "")),
                image=str(item.get("Image", "")),
                state=str(item.get("State", "")),
                health=str(item.get("Health", "")),
                exit_code=int(item.get("ExitCode", 0) or 0),
                ports=published_ports(item.get("Publishers")),  # type: ignore[arg-type]
                config_hash=labels.get(CONFIG_HASH_LABEL, ""),
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
    image_ids: Mapping[str, str],
    container_image_ids: Mapping[str, str],
) -> UpPlan:
    """Pure: compare the config hashes and image ids compose would use with what runs.

    wanted: service -> config hash; image_ids: image ref -> current id of that tag;
    container_image_ids: container name -> id of the image it runs.
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
            image_ids.get(c.image) and container_image_ids.get(c.name) != image_ids.get(c.image)
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
