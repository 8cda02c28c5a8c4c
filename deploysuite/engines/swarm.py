"""Docker Swarm as a deploy engine: a release is one `docker stack deploy` on a manager.

Swarm replaces the tasks itself (update_config: start-first, a failed update rolls the service
back); the suite's part is what Swarm does not do: create the content-addressed secrets and
configs first, run migrations once as a replicated job before traffic moves, wait until every
service has converged (failing at once when Swarm rolled a service back or a task keeps dying,
instead of waiting out a timeout), and say what runs. Every command goes through the runner
bound to the manager, so --dry-run prints them all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deploysuite.core.errors import SuiteError
from deploysuite.core.runner import Command, Runner
from deploysuite.engines.cluster import placement_constraint
from deploysuite.engines.rolling import RolloutFailed
from deploysuite.engines.swarmstack import RenderedStack, role_of

NAMESPACE_LABEL = "com.docker.stack.namespace"
FAILED_UPDATE_STATES = ("rollback_started", "rollback_completed", "rollback_paused", "paused")


class MigrationJobFailed(SuiteError):
    exit_code = 5


@dataclass(frozen=True)
class ServiceState:
    name: str  # without the stack's prefix
    image: str
    running: int
    desired: int
    update_state: str  # "", updating, completed, rollback_completed, paused, ...
    update_message: str = ""

    @property
    def converged(self) -> bool:
        return self.running >= self.desired and self.update_state in ("", "completed")

    @property
    def failed(self) -> bool:
        return self.update_state in FAILED_UPDATE_STATES


def parse_services(project: str, inspect_json: str, ls_lines: str) -> list[ServiceState]:
    """`docker service inspect` (specs, update status) and `docker service ls --format json`
    (running/desired replicas) of the stack's services."""
    replicas: dict[str, tuple[int, int]] = {}
    for line in ls_lines.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        running, _, desired = str(item.get("Replicas", "0/0")).split(" ")[0].partition("/")
        replicas[str(item.get("Name"))] = (int(running or 0), int(desired or 0))
    out = []
    for svc in json.loads(inspect_json or "[]"):
        full = svc["Spec"]["Name"]
        status = svc.get("UpdateStatus") or {}
        running, desired = replicas.get(full, (0, 0))
        out.append(ServiceState(
            name=full[len(project) + 1:] if full.startswith(project + "_") else full,
            image=svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"],
            running=running, desired=desired,
            update_state=str(status.get("State") or ""),
            update_message=str(status.get("Message") or ""),
        ))  # fmt: skip
    return sorted(out, key=lambda s: s.name)


def digest_of(image: str) -> str:
    return image.split("@", 1)[1] if "@" in image else image


def stack_deploy_argv(
    docker_config: str, stack_file: str, project: str, prune: bool
) -> tuple[str, ...]:
    argv = ["docker", "--config", docker_config, "stack", "deploy", "--compose-file", stack_file,
            "--with-registry-auth"]  # fmt: skip
    if prune:
        argv.append("--prune")
    return (*argv, project)


def object_create_argv(kind: str, name: str, project: str) -> tuple[str, ...]:
    """The content comes on stdin: never in argv, never in a file on the host."""
    return ("docker", kind, "create", "--label", f"org.mysaaschat.stack={project}", name, "-")


def job_argv(
    docker_config: str, name: str, project: str, service: Mapping[str, Any], command: Sequence[str]
) -> tuple[str, ...]:
    """A one-shot replicated job from a rendered service: same image, environment, secrets and
    user, on the stack's backend network, on an app node."""
    argv = ["docker", "--config", docker_config, "service", "create", "--detach",
            "--with-registry-auth", "--name", name, "--mode", "replicated-job",
            "--restart-condition", "none", "--network", f"{project}_backend",
            "--constraint", placement_constraint(role_of("app"))]  # fmt: skip
    if service.get("user"):
        argv += ["--user", str(service["user"])]
    for key, value in sorted((service.get("environment") or {}).items()):
        argv += ["--env", f"{key}={str(value).replace('$$', '$')}"]
    for ref in service.get("secrets") or ():
        argv += ["--secret", f"source={ref['source']},target={ref['target']},uid={ref['uid']},"
                             f"gid={ref['gid']},mode={ref['mode']}"]  # fmt: skip
    return (*argv, str(service["image"]), *command)


@dataclass
class SwarmEngine:
    """One stack on a Swarm, through the runner bound to a manager."""

    runner: Runner
    project: str
    docker_config: str  # a per-release DOCKER_CONFIG folder (the registry login) on the manager
    env_name: str = "staging"
    poll: float = 0.5

    @property
    def events(self):  # type: ignore[no-untyped-def]
        return self.runner.events

    def services(self) -> list[ServiceState]:
        label = f"label={NAMESPACE_LABEL}={self.project}"
        ls = self.runner.run(Command(("docker", "service", "ls", "--filter", label, "--format",
                                      "{{json .}}"), mutates=False, timeout=60))  # fmt: skip
        names = [json.loads(line)["Name"] for line in ls.stdout.splitlines() if line.strip()]
        if not names:
            return []
        inspect = self.runner.run(Command(("docker", "service", "inspect", *names),
                                          mutates=False, timeout=60))  # fmt: skip
        return parse_services(self.project, inspect.stdout, ls.stdout)

    def ensure_objects(self, rendered: RenderedStack) -> list[str]:
        """Create the secrets and configs the stack names that do not exist yet."""
        created = []
        for kind, objects in (("secret", rendered.secrets), ("config", rendered.configs)):
            ls = Command(("docker", kind, "ls", "--format", "{{.Name}}"), mutates=False, timeout=60)
            have = set(self.runner.run(ls).stdout.split())
            for name, content in sorted(objects.items()):
                if name not in have:
                    self.runner.run(Command(object_create_argv(kind, name, self.project),
                                            input=content, timeout=60))  # fmt: skip
                    created.append(name)
        return created

    def deploy(self, stack_file: str, prune: bool) -> None:
        self.runner.run(
            Command(stack_deploy_argv(self.docker_config, stack_file, self.project, prune),
                    timeout=600),
            fix="the manager refused the stack: inv cluster.status, then docker stack ps",
        )  # fmt: skip

    def wait(self, services: Sequence[str], timeout: float) -> list[ServiceState]:
        """Until every service in `services` has converged. Fails at once when Swarm rolled an
        update back or paused it, and after `timeout` s naming what has not converged and the
        tasks' last errors."""
        if self.runner.dry_run:
            return []
        deadline = time.monotonic() + timeout
        delay = self.poll
        while True:
            states = {s.name: s for s in self.services()}
            failed = [states[n] for n in services if n in states and states[n].failed]
            if failed:
                raise RolloutFailed(
                    "Swarm rolled back "
                    + "; ".join(f"{s.name} ({s.update_state}: {s.update_message})" for s in failed),
                    f"docker service ps --no-trunc {self.project}_{failed[0].name} and docker "
                    f"service logs {self.project}_{failed[0].name} on a manager of "
                    f"'{self.env_name}'",
                )
            pending = [n for n in services if n not in states or not states[n].converged]
            if not pending:
                return [states[n] for n in services]
            if time.monotonic() > deadline:
                errors = {n: self.task_error(n) for n in pending}
                raise RolloutFailed(
                    f"not converged after {timeout:.0f}s: "
                    + "; ".join(f"{n} ({e or 'starting'})" for n, e in errors.items()),
                    f"docker service ps --no-trunc {self.project}_{pending[0]} on a manager",
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 3.0)

    def task_error(self, service: str) -> str:
        argv = ("docker", "service", "ps", "--no-trunc", "--format",
                "{{.CurrentState}}|{{.Error}}", f"{self.project}_{service}")  # fmt: skip
        out = self.runner.run(Command(argv, mutates=False, timeout=30), check=False).stdout
        lines = [line for line in out.splitlines() if line.strip()]
        return lines[0].replace("|", ": ").strip(": ") if lines else ""

    def run_job(self, name: str, service: Mapping[str, Any], command: Sequence[str],
                timeout: float = 300) -> str:  # fmt: skip
        """A one-shot job; returns its output; raises MigrationJobFailed with its last lines."""
        full = f"{self.project}_{name}"
        self.runner.run(Command(job_argv(self.docker_config, full, self.project, service, command),
                                timeout=120))  # fmt: skip
        if self.runner.dry_run:
            return ""
        try:
            state = self._wait_job(full, timeout)
            logs = self.runner.run(Command(("docker", "service", "logs", "--raw", full),
                                           mutates=False, timeout=60), check=False)  # fmt: skip
            output = (logs.stdout + logs.stderr).strip()
            if not state.startswith("Complete"):
                tail = "\n".join(output.splitlines()[-5:]) or "no output"
                raise MigrationJobFailed(
                    f"{name} ({service['image']}, `{' '.join(command)}`): {state}: {tail}",
                    f"docker service logs {full} on a manager; migrations are in the service's "
                    "migrations/ folder",
                )
            return output
        finally:
            self.runner.run(Command(("docker", "service", "rm", full), timeout=60), check=False)

    def _wait_job(self, full: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        argv = ("docker", "service", "ps", "--format", "{{.CurrentState}}|{{.Error}}", full)
        while True:
            out = self.runner.run(Command(argv, mutates=False, timeout=30), check=False).stdout
            state = (out.splitlines() or [""])[0]
            if state.startswith(("Complete", "Failed", "Rejected")):
                return state.replace("|", ": ").strip(": ")
            if time.monotonic() > deadline:
                return f"still {state or 'pending'} after {timeout:.0f}s"
            time.sleep(1)

    def scale(self, replicas: Mapping[str, int]) -> None:
        pairs = [f"{self.project}_{s}={n}" for s, n in sorted(replicas.items())]
        self.runner.run(Command(("docker", "service", "scale", "--detach", *pairs), timeout=120))
