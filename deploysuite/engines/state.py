"""Read and converge the compose stack on this machine's engine (the `local` environment)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from deploysuite.core import commands
from deploysuite.core.errors import EngineUnavailable, SuiteError
from deploysuite.core.runner import Command, Runner
from deploysuite.engines.rolling import probe_argv as rolling_probe
from deploysuite.engines.stack import (
    ContainerState,
    Stack,
    UpPlan,
    parse_config_hashes,
    parse_ps,
    plan_up,
)
from deploysuite.images.build import list_images, with_tag


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
    """Everything `plan_up` needs, by read-only commands run side by side."""

    def query(argv: tuple[str, ...]) -> str:
        fix = "run inv env.check, then docker compose config to see the error"
        return runner.run(Command(argv, env=env, mutates=False), fix=fix).stdout

    project, files, profiles = stack.project, stack.files, stack.profiles
    with ThreadPoolExecutor(max_workers=4) as pool:
        hashes = pool.submit(query, commands.compose_config_hashes(project, files, profiles))
        model = pool.submit(
            query, commands.compose(project, files, "config", "--format", "json", profiles=profiles)
        )
        ps = pool.submit(query, commands.compose_ps(project, files, profiles))
        listing = pool.submit(list_images, runner)
    services = json.loads(model.result()).get("services", {})
    images = {name: svc.get("image", "") for name, svc in services.items()}
    image_ids = {
        ref: listing.result()[with_tag(ref)].image_id
        for ref in set(images.values())
        if with_tag(ref) in listing.result()
    }
    image_ids.update(digest_image_ids(runner, [r for r in images.values() if "@" in r]))
    return StackState(
        parse_config_hashes(hashes.result()), tuple(parse_ps(ps.result())), images, image_ids
    )


def digest_image_ids(runner: Runner, refs: list[str]) -> dict[str, str]:
    """Image ids of `repo@sha256:...` references (a tag listing does not show them); a
    reference not pulled yet is left out."""
    out = {}
    for ref in sorted(set(refs)):
        argv = ("docker", "image", "inspect", "--format", "{{.Id}}", ref)
        result = runner.run(Command(argv, mutates=False), check=False)
        if result.ok and result.stdout.strip():
            out[ref] = result.stdout.strip()
    return out


def refresh(runner: Runner, stack: Stack, env: Mapping[str, str], state: StackState) -> StackState:
    """The same state with the containers read again (after an `up`: same config, new ps)."""
    argv = commands.compose_ps(stack.project, stack.files, stack.profiles)
    ps = runner.run(Command(argv, env=env, mutates=False)).stdout
    return replace(state, containers=tuple(parse_ps(ps)))


def runs_new_image(state: StackState, service: str) -> bool:
    """True when the service has no container yet or its containers run another image than the
    one its compose entry names now (new code: its migrations may be new too)."""
    wanted = state.image_ids.get(state.images.get(service, ""))
    running = [c for c in state.containers if c.service == service]
    return not running or any(c.image_id != wanted for c in running)


def remove_project(runner: Runner, project: str) -> int:
    """Every container, volume and network of a compose project, found by compose's own label
    (works without the compose file or its variables); returns how many objects went."""
    label = f"label=com.docker.compose.project={project}"
    removed = 0
    for kind, listing in (
        ("container", ("docker", "ps", "--all", "--quiet", "--filter", label)),
        ("volume", ("docker", "volume", "ls", "--quiet", "--filter", label)),
        ("network", ("docker", "network", "ls", "--quiet", "--filter", label)),
    ):
        ids = runner.run(Command(listing, mutates=False)).stdout.split()
        if ids:
            force = ("--force",) if kind == "container" else ()
            runner.run(Command(("docker", kind, "rm", *force, *ids)), check=False)
            removed += len(ids)
    return removed


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
    """`127.0.0.1:8443->443` -> `https://localhost:8443`: the scheme follows the container port;
    nginx answers HTTPS only for its server names (the local stack's is localhost), never for an
    address, so a loopback HTTPS port is shown by that name."""
    host_port, _, target = published.partition("->")
    host_port = host_port.replace("0.0.0.0", "127.0.0.1")
    if target == "443":
        return "https://" + host_port.replace("127.0.0.1:", "localhost:")
    return "http://" + host_port


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


HEALTH_FORMAT = "{{json .State.Health}}\t{{json .Config.Healthcheck}}"
READY_OUTPUT_RE = re.compile(r'"output"\s*:\s*"((?:[^"\\]|\\.)*)')


def health_cause(output: str) -> str:
    """The reason in a healthcheck's output, short: the readiness document's own `output` (which
    dependency failed, and how) when it is there, else the output's end."""
    found = READY_OUTPUT_RE.search(output)
    if found:
        return found.group(1).replace('\\"', '"')[:300]
    return " ".join(output.split())[-300:]


def explain_container(runner: Runner, name: str, tail: int = 15) -> list[str]:
    """A container's last healthcheck output (Docker's last check, or when Docker has not
    checked yet because the deploy's own probe decided first, the check run once more now) and
    its last log lines, masked."""
    inspect = runner.run(Command(("docker", "inspect", "--format", HEALTH_FORMAT, name),
                                 mutates=False), check=False).stdout.strip()  # fmt: skip
    health, _, check = inspect.partition("\t")
    lines = []
    log = (json.loads(health) or {}).get("Log") or [] if health.startswith("{") else []
    probe = rolling_probe(check)
    if log:
        output, code, when = log[-1].get("Output", ""), log[-1].get("ExitCode"), "last"
    elif probe:
        done = runner.run(Command(("docker", "exec", name, *probe), mutates=False, timeout=30),
                          check=False)  # fmt: skip
        output, code, when = done.stdout + done.stderr, done.returncode, "now"
    else:
        output = ""
    if output or log:
        lines.append(f"  healthcheck of {name} ({when}): exit {code}: {health_cause(output)}")
    logs = runner.run(
        Command(("docker", "logs", "--tail", str(tail), name), mutates=False), check=False
    )
    lines += [f"  | {line}" for line in (logs.stdout + logs.stderr).splitlines()[-tail:]]
    return [runner.masker(line) for line in lines]


def diagnose(runner: Runner, state: StackState) -> list[str]:
    """For each unhealthy container: its state, failing healthcheck and log tail."""
    lines: list[str] = []
    for c in state.containers:
        if not c.ok:
            lines.append(f"{c.service}: state {c.state}, health {c.health or '-'}")
            lines += explain_container(runner, c.name)
    return lines
