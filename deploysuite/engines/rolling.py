"""Rolling replacement of a batch of services without dropping a request.

    1. start each service's new container beside its old one (one compose --scale N*2
       --no-recreate for the whole batch);
    2. wait until every new container is ready: Docker's healthcheck, or sooner the same check
       run by the suite (`docker exec`) every fraction of a second; a container that exits,
       restarts or turns unhealthy fails the batch at once;
    3. reload nginx: each service name now resolves to old and new;
    4. stop the old containers gracefully, all at once (each reports not-ready, drains,
       finishes in-flight requests, closes WebSockets with 1001), and remove them;
    5. reload nginx again: only the new ones are left.

If a new container never becomes ready, the batch's new containers are removed and nginx is
not switched: the old containers served throughout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from deploysuite.core import commands
from deploysuite.core.errors import SuiteError
from deploysuite.core.runner import Command, Runner
from deploysuite.engines.stack import Stack

ROLLING_SERVICES = ("auth", "chat", "billing", "analytics", "orchestrator", "email-worker")
POLL_SECONDS = 1.0
PROBE_FAILURES = 3  # in a row, past the start period: the new container is not coming up
STOP_GRACE_SECONDS = 20  # the compose file's stop_grace_period of the services


class RolloutFailed(SuiteError):
    exit_code = 9


def containers_argv(project: str, service: str) -> commands.Argv:
    return (
        "docker", "ps", "--all", "--format", "{{.Names}}",
        "--filter", f"label=com.docker.compose.project={project}",
        "--filter", f"label=com.docker.compose.service={service}",
    )  # fmt: skip


def scale_argv(stack: Stack, counts: Mapping[str, int]) -> commands.Argv:
    scales = [arg for name, count in counts.items() for arg in ("--scale", f"{name}={count}")]
    return commands.compose(
        stack.project, stack.files, "up", "--detach", "--no-deps", "--no-recreate", *scales,
        *counts, profiles=stack.profiles,
    )  # fmt: skip


# State, health (or none) and the healthcheck's command of each container, one line each.
STATE_FORMAT = (
    "{{.Name}}\t{{.State.Status}}\t{{if .State.Health}}{{.State.Health.Status}}{{else}}none"
    "{{end}}\t{{json .Config.Healthcheck}}"
)
FAILED = ("unhealthy", "exited", "dead", "restarting", "removing", "gone")


def health_argv(names: list[str]) -> commands.Argv:
    return ("docker", "inspect", "--format", STATE_FORMAT, *names)


def parse_health(text: str) -> dict[str, str]:
    """name -> healthy, starting, unhealthy, none (no healthcheck) or the state of a container
    that stopped running (exited, dead, restarting...)."""
    return {name: state.status for name, state in parse_states(text).items()}


@dataclass(frozen=True)
class ContainerCheck:
    status: str  # as parse_health says
    probe: tuple[str, ...] = ()  # the healthcheck's command, to run in the container
    start_period: float = 0.0  # seconds the healthcheck gives the container to start


def parse_states(text: str) -> dict[str, ContainerCheck]:
    out: dict[str, ContainerCheck] = {}
    for line in text.splitlines():
        parts = line.strip().split("\t")
        if not parts[0]:
            continue
        name, state, health, check = [*parts, "", "none", "null"][:4]
        status = health if state == "running" else state or "gone"
        try:
            period = ((json.loads(check) or {}).get("StartPeriod") or 0) / 1e9
        except (ValueError, AttributeError, TypeError):
            period = 0.0
        out[name.lstrip("/")] = ContainerCheck(status, probe_argv(check), period)
    return out


def probe_argv(check_json: str) -> tuple[str, ...]:
    """The healthcheck's test as an argv to run in the container: ["CMD", a, b] -> (a, b);
    ["CMD-SHELL", c] -> (sh, -c, c); none -> ()."""
    try:
        test = (json.loads(check_json) or {}).get("Test") or []
    except (ValueError, AttributeError):
        return ()
    if test[:1] == ["CMD"]:
        return tuple(test[1:])
    if test[:1] == ["CMD-SHELL"] and len(test) > 1:
        return ("sh", "-c", test[1])
    return ()


def service_containers(runner: Runner, project: str, service: str) -> list[str]:
    out = runner.run(Command(containers_argv(project, service), mutates=False)).stdout
    return sorted(out.split())


def wait_healthy(
    runner: Runner, names: list[str], timeout: float, probe: bool = False
) -> dict[str, str]:
    """Poll until every container is healthy, one failed (unhealthy, exited, restarting), or the
    time is up. With `probe`, the suite runs each container's own healthcheck command itself
    (backing off from 0.25 s to 1 s): passing, the container is ready at once, before Docker's
    next scheduled check says so; failing PROBE_FAILURES times in a row once its start period
    is over (counted from when the deploy first saw it), it is unhealthy at once, without
    waiting out Docker's retries."""
    started = time.monotonic()
    deadline = started + timeout
    status: dict[str, str] = {}
    ready: set[str] = set()
    failing: dict[str, int] = {}
    pause = 0.25
    while True:
        states = parse_states(runner.run(Command(health_argv(names), mutates=False),
                                         check=False).stdout)  # fmt: skip
        status = {name: states[name].status if name in states else "gone" for name in names}
        status.update({name: "healthy" for name in ready if status[name] == "starting"})
        for name in names if probe else ():
            state = states.get(name)
            if status[name] != "starting" or state is None or not state.probe:
                continue
            if passes(runner, name, state.probe):
                ready.add(name)
                status[name] = "healthy"
                continue
            failing[name] = failing.get(name, 0) + 1
            past_start = time.monotonic() - started > state.start_period
            if past_start and failing[name] >= PROBE_FAILURES:
                status[name] = "unhealthy"
        # a container without a healthcheck ("none") is ready once it runs
        if all(s in ("healthy", "none") for s in status.values()) or any(
            s in FAILED for s in status.values()
        ):
            return status
        if time.monotonic() >= deadline:
            return status
        time.sleep(pause)
        pause = min(pause * 2, POLL_SECONDS)


def cause_of(lines: Sequence[str]) -> str:
    """The first healthcheck reason among explain() lines (engines/state.explain_container)."""
    for line in lines:
        if line.startswith("  healthcheck of ") and ": exit " in line:
            return line.split(": exit ", 1)[1].split(": ", 1)[-1]
    return ""


def passes(runner: Runner, name: str, check: tuple[str, ...]) -> bool:
    result = runner.run(Command(("docker", "exec", name, *check), mutates=False, timeout=30),
                        check=False)  # fmt: skip
    return result.ok


def roll(
    runner: Runner,
    stack: Stack,
    env: Mapping[str, str],
    services: Sequence[str],
    wait_timeout: float,
    reload_proxy: Callable[..., None],
    explain: Callable[[str], list[str]],
    env_name: str = "local",
) -> list[str]:
    """Replace the services' containers one generation at a time, the batch together; returns
    a summary line per service. explain(container) gives the failing healthcheck output and
    log tail for the error."""
    old = {name: service_containers(runner, stack.project, name) for name in services}
    counts = {name: 2 * max(1, len(old[name])) for name in services}
    runner.run(
        Command(scale_argv(stack, counts), env=env, timeout=300),
        fix=f"inv logs --env={env_name} --service {services[0]}",
    )
    if runner.dry_run:
        return [f"{name}: would start the new container beside the old one" for name in services]
    new = {
        name: [c for c in service_containers(runner, stack.project, name) if c not in old[name]]
        for name in services
    }
    started = [c for name in services for c in new[name]]
    try:
        status = wait_healthy(runner, started, wait_timeout, probe=True)
        failed = [n for n in services if not new[n] or any(status[c] != "healthy" for c in new[n])]
        if failed:
            explained = [line for n in failed for c in new[n] for line in explain(c)]
            for line in explained:
                runner.events.info(line)
            seen = ", ".join(f"{c}: {status[c]}" for n in failed for c in new[n])
            seen += f"; {cause}" if (cause := cause_of(explained)) else ""
            gone = ("it was removed and the old one" if len(started) == 1
                    else "the batch's new containers were removed and the old ones")  # fmt: skip
            raise RolloutFailed(
                f"{', '.join(failed)}: the new container did not become healthy "
                f"({seen or 'no container started'}); {gone} kept serving, nothing was switched",
                f"inv logs --env={env_name} --service {failed[0]}",
            )
        try:
            reload_proxy()
        except SuiteError as exc:
            raise RolloutFailed(
                f"{', '.join(services)}: nginx did not take the new containers ({exc.what}); "
                "they were removed and the old ones kept serving",
                "inv status names any upstream that is down; inv logs --service nginx",
            ) from None
    except BaseException:
        # Nothing switched yet: the new generation goes, the old one never stopped.
        if started:
            runner.run(Command(("docker", "rm", "--force", *started)), check=False)
        raise
    retired = [c for name in services for c in old[name]]
    if retired:
        grace = str(STOP_GRACE_SECONDS)
        runner.run(Command(("docker", "stop", "--time", grace, *retired),
                           timeout=STOP_GRACE_SECONDS + 30))  # fmt: skip
        runner.run(Command(("docker", "rm", *retired)))
        # Nothing changes after this reload: no settle. An old worker still finishing a request
        # that picks a removed address passes it on to the next (proxy_next_upstream).
        reload_proxy(settle=False)
    return [f"{', '.join(old[n]) or '(none)'} -> {', '.join(new[n])}" for n in services]
