"""Read and converge the compose stack on this machine's engine (the `local` environment)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from deploysuite import commands
from deploysuite.compose import (
    ContainerState,
    Stack,
    UpPlan,
    parse_config_hashes,
    parse_ps,
    plan_up,
)
from deploysuite.errors import EngineUnavailable, SuiteError
from deploysuite.runner import Command, Runner


def engine_version(runner: Runner) -> str:
    result = runner.run(Command(commands.docker_server_version(), mutates=False), check=False)
    if not result.ok or not result.stdout.strip():
        raise EngineUnavailable(
            "the Docker engine does not answer (docker version found no server)",
            "start it: ./scripts/quickstart (or: dockerd > /var/log/dockerd.log 2>&1 &)",
        )
    return result.stdout.strip()


@dataclass(frozen=True)
class StackState:
    wanted: Mapping[str, str]
    containers: tuple[ContainerState, ...]
    images: Mapping[str, str]  # service -> image ref from the compose file
    image_ids: Mapping[str, str]
    container_image_ids: Mapping[str, str]

    def plan(self) -> UpPlan:
        return plan_up(self.wanted, self.containers, self.image_ids, self.container_image_ids)


def read(runner: Runner, stack: Stack, env: Mapping[str, str]) -> StackState:
    """Everything `plan_up` needs, by read-only commands."""

    def query(argv: tuple[str, ...], fix: str | None = None) -> str:
        return runner.run(Command(argv, env=env, mutates=False), fix=fix).stdout

    fix = "run inv env.check, then docker compose config to see the error"
    wanted = parse_config_hashes(
        query(commands.compose_config_hashes(stack.project, stack.files, stack.profiles), fix)
    )
    images_text = query(
        commands.compose(
            stack.project, stack.files, "config", "--format", "json", profiles=stack.profiles
        )
    )
    import json

    model = json.loads(images_text)
    images = {name: svc.get("image", "") for name, svc in model.get("services", {}).items()}
    containers = tuple(
        parse_ps(query(commands.compose_ps(stack.project, stack.files, stack.profiles)))
    )
    image_ids: dict[str, str] = {}
    for ref in sorted(set(images.values()) | {c.image for c in containers}):
        result = runner.run(
            Command(("docker", "image", "inspect", "--format", "{{.Id}}", ref), mutates=False),
            check=False,
        )
        if result.ok:
            image_ids[ref] = result.stdout.strip()
    container_image_ids: dict[str, str] = {}
    if containers:
        out = query(
            ("docker", "inspect", "--format", "{{.Name}} {{.Image}}", *(c.name for c in containers))
        )
        for line in out.splitlines():
            name, _, image_id = line.strip().partition(" ")
            container_image_ids[name.lstrip("/")] = image_id
    return StackState(wanted, containers, images, image_ids, container_image_ids)


def missing_images(state: StackState) -> list[str]:
    return sorted({ref for ref in state.images.values() if ref and ref not in state.image_ids})


def converge(runner: Runner, stack: Stack, env: Mapping[str, str], wait_timeout: int) -> None:
    runner.run(
        Command(
            commands.compose_up(
                stack.project, stack.files, wait_timeout=wait_timeout, profiles=stack.profiles
            ),
            env=env,
            timeout=wait_timeout + 120,
        ),
        fix="inv status --env=local names the failing service; inv logs --service NAME",
    )


def require_images(state: StackState, env_name: str) -> None:
    missing = missing_images(state)
    if missing:
        raise SuiteError(
            f"image(s) not on this engine: {', '.join(missing)}",
            "inv images.bootstrap" if env_name == "local" else "inv images.build",
        )


def status_rows(containers: tuple[ContainerState, ...]) -> list[dict[str, str]]:
    rows = []
    for c in containers:
        urls = ["http://" + p.split("->")[0].replace("0.0.0.0", "127.0.0.1") for p in c.ports]
        rows.append(
            {
                "service": c.service,
                "image": c.image,
                "state": c.state if c.state == "running" else f"{c.state} ({c.exit_code})",
                "health": c.health or "no healthcheck",
                "url": " ".join(urls) or "-",
            }
        )
    return rows
