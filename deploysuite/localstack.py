"""Read and converge the compose stack on this machine's engine (the `local` environment)."""

from __future__ import annotations

import json
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

    def plan(self) -> UpPlan:
        return plan_up(self.wanted, self.containers, self.images, self.image_ids)


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
    model = json.loads(images_text)
    images = {name: svc.get("image", "") for name, svc in model.get("services", {}).items()}
    containers = tuple(
        parse_ps(query(commands.compose_ps(stack.project, stack.files, stack.profiles)))
    )
    image_ids: dict[str, str] = {}
    for ref in sorted(set(images.values())):
        result = runner.run(
            Command(("docker", "image", "inspect", "--format", "{{.Id}}", ref), mutates=False),
            check=False,
        )
        if result.ok:
            image_ids[ref] = result.stdout.strip()
    return StackState(wanted, containers, images, image_ids)


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


def port_url(published: str) -> str:
    """`127.0.0.1:8443->443` -> `https://127.0.0.1:8443`: the scheme follows the container port."""
    host_port, _, target = published.partition("->")
    scheme = "https" if target == "443" else "http"
    return f"{scheme}://" + host_port.replace("0.0.0.0", "127.0.0.1")


def status_rows(state: StackState) -> list[dict[str, str]]:
    rows = []
    for c in state.containers:
        urls = [port_url(p) for p in c.ports]
        ref = state.images.get(c.service, c.image)
        outdated = c.image_id and state.image_ids.get(ref) not in (None, c.image_id)
        rows.append(
            {
                "service": c.service,
                "image": ref + (" (outdated)" if outdated else ""),
                "state": c.state if c.state == "running" else f"{c.state} ({c.exit_code})",
                "health": c.health or "no healthcheck",
                "url": " ".join(urls) or "-",
            }
        )
    missing = sorted(set(state.wanted) - {c.service for c in state.containers})
    rows += [
        {
            "service": m,
            "image": state.images.get(m, ""),
            "state": "absent",
            "health": "-",
            "url": "-",
        }
        for m in missing
    ]
    return rows


def unhealthy(state: StackState) -> list[str]:
    """Services that are absent, stopped or failing their healthcheck."""
    bad = {c.service for c in state.containers if not c.ok}
    bad |= set(state.wanted) - {c.service for c in state.containers}
    return sorted(bad)


def diagnose(runner: Runner, stack: Stack, env: Mapping[str, str], state: StackState) -> list[str]:
    """For each unhealthy service: its last healthcheck output and last log lines, masked."""
    lines: list[str] = []
    for c in state.containers:
        if c.ok:
            continue
        health = runner.run(
            Command(
                ("docker", "inspect", "--format", "{{json .State.Health}}", c.name), mutates=False
            ),
            check=False,
        ).stdout.strip()
        probe = ""
        if health and health != "null":
            log = json.loads(health).get("Log") or []
            if log:
                probe = f"exit {log[-1].get('ExitCode')}: {log[-1].get('Output', '').strip()[:300]}"
        lines.append(f"{c.service}: state {c.state}, health {c.health or '-'}")
        if probe:
            lines.append(f"  last healthcheck: {probe}")
        logs = runner.run(
            Command(
                commands.compose_logs(stack.project, stack.files, [c.service], tail=15),
                env=env,
                mutates=False,
            ),
            check=False,
        )
        lines += [f"  | {line}" for line in logs.stdout.splitlines()[-15:]]
    return [runner.masker(line) for line in lines]
