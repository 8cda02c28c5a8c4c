"""Rolling replacement of one service without dropping a request.

    1. start the new container beside the old one (compose --scale N*2 --no-recreate);
    2. wait for its healthcheck (readiness: dependencies reachable);
    3. reload nginx: the service name now resolves to old and new;
    4. stop the old container gracefully (it reports not-ready, drains, finishes in-flight
       requests, closes WebSockets with 1001) and remove it;
    5. reload nginx again: only the new one is left.

If the new container never becomes healthy, it is removed and nginx is not switched: the old
container served throughout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from deploysuite.core import commands
from deploysuite.core.errors import SuiteError
from deploysuite.core.runner import Command, Runner
from deploysuite.engines.stack import Stack

ROLLING_SERVICES = ("auth", "chat", "billing", "analytics", "orchestrator", "email-worker")
POLL_SECONDS = 1.0
STOP_GRACE_SECONDS = 20  # the compose file's stop_grace_period of the services


class RolloutFailed(SuiteError):
    exit_code = 9


def containers_argv(project: str, service: str) -> commands.Argv:
    return (
        "docker", "ps", "--all", "--format", "{{.Names}}",
        "--filter", f"label=com.docker.compose.project={project}",
        "--filter", f"label=com.docker.compose.service={service}",
    )  # fmt: skip


def scale_argv(stack: Stack, service: str, count: int) -> commands.Argv:
    return commands.compose(
        stack.project, stack.files, "up", "--detach", "--no-deps", "--no-recreate",
        "--scale", f"{service}={count}", service, profiles=stack.profiles,
    )  # fmt: skip


def health_argv(names: list[str]) -> commands.Argv:
    return ("docker", "inspect", "--format", "{{.Name}} {{.State.Health.Status}}", *names)


def parse_health(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        name, _, status = line.strip().partition(" ")
        if name:
            out[name.lstrip("/")] = status or "none"
    return out


def service_containers(runner: Runner, project: str, service: str) -> list[str]:
    out = runner.run(Command(containers_argv(project, service), mutates=False)).stdout
    return sorted(out.split())


def wait_healthy(runner: Runner, names: list[str], timeout: float) -> dict[str, str]:
    """Poll until every container is healthy, one is unhealthy, or the time is up."""
    deadline = time.monotonic() + timeout
    status: dict[str, str] = {}
    while time.monotonic() < deadline:
        status = parse_health(runner.run(Command(health_argv(names), mutates=False)).stdout)
        if all(s == "healthy" for s in status.values()) or "unhealthy" in status.values():
            return status
        time.sleep(POLL_SECONDS)
    return status


def roll(
    runner: Runner,
    stack: Stack,
    env: Mapping[str, str],
    service: str,
    wait_timeout: float,
    reload_proxy: Callable[[], None],
    explain: Callable[[str], list[str]],
    env_name: str = "local",
) -> str:
    """Replace `service`'s containers one generation at a time; returns a summary line.

    explain(container) gives the failing healthcheck output and log tail for the error.
    """
    old = service_containers(runner, stack.project, service)
    runner.run(
        Command(scale_argv(stack, service, 2 * len(old)), env=env, timeout=300),
        fix=f"inv logs --service {service}",
    )
    if runner.dry_run:
        return "would start the new container beside the old one"
    new = [name for name in service_containers(runner, stack.project, service) if name not in old]
    try:
        status = wait_healthy(runner, new, wait_timeout)
        if not new or any(s != "healthy" for s in status.values()):
            for line in (line for name in new for line in explain(name)):
                runner.events.info(line)
            seen = ", ".join(f"{n}: {s}" for n, s in status.items()) or "no container started"
            raise RolloutFailed(
                f"{service}: the new container did not become healthy ({seen}); it was removed "
                "and the old one kept serving, nothing was switched",
                f"inv logs --env={env_name} --service {service}",
            )
        try:
            reload_proxy()
        except SuiteError as exc:
            raise RolloutFailed(
                f"{service}: nginx did not take the new container ({exc.what}); it was removed "
                "and the old one kept serving",
                "inv status names any upstream that is down; inv logs --service nginx",
            ) from None
    except BaseException:
        # Nothing switched yet: the new generation goes, the old one never stopped.
        runner.run(Command(("docker", "rm", "--force", *new)), check=False)
        raise
    grace = str(STOP_GRACE_SECONDS)
    runner.run(Command(("docker", "stop", "--time", grace, *old), timeout=STOP_GRACE_SECONDS + 30))
    runner.run(Command(("docker", "rm", *old)))
    reload_proxy()
    return f"{', '.join(old)} -> {', '.join(new)}"
