"""Compose as a deploy engine: one stack on one Docker engine, this machine's (the runner runs
here) or a host's over SSH (the runner is bound to the host). Local and remote deploys both act
on a stack only through this class; see engines/base.py for the interface."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from deploysuite.config.layers import Config
from deploysuite.config.service_env import SERVICE_VARIABLES
from deploysuite.core import commands
from deploysuite.core.errors import ConfigError, SuiteError
from deploysuite.core.events import Events
from deploysuite.core.runner import Command, Runner
from deploysuite.edge.nginx import SERVICES as NGINX_UPSTREAMS
from deploysuite.edge.nginx import nginx_reload_argv
from deploysuite.engines import state as stack_state
from deploysuite.engines.rolling import (
    ROLLING_SERVICES,
    RolloutFailed,
    cause_of,
    roll,
    service_containers,
    wait_healthy,
)
from deploysuite.engines.stack import DATA_STORES, Stack

# Services replaced together by default. Six Python services starting at once saturate a 2-core
# host for seconds: the old containers' readiness checks (PostgreSQL within 1 s) then fail and
# nginx answers 503 (1 run in 8 of bench/remote_deploy.py). Three at a time did not.
DEFAULT_BATCH = 3

# Longer than nginx's proxy_connect_timeout (snippets/proxy.conf.j2): a connect to a removed
# container gives up before the next container can take its address.
RELOAD_SETTLE_SECONDS = 2.0


class MigrationFailed(SuiteError):
    """A service's migrations exited non-zero; nothing of the release takes traffic."""

    exit_code = 5


@dataclass
class ComposeEngine:
    """`env` is what compose interpolates: the local config's variables, or nothing where the
    stack's folder carries its own `.env` (a release on a host)."""

    runner: Runner
    stack: Stack
    env: Mapping[str, str] = field(default_factory=dict)
    env_name: str = "local"
    settle: float = RELOAD_SETTLE_SECONDS
    batch_size: int = 0  # services replaced together (DEPLOY_ROLL_BATCH_SIZE); 0: all

    @property
    def events(self) -> Events:
        return self.runner.events

    def on_stack(self, stack: Stack) -> ComposeEngine:
        """The same engine acting on other files (another release: a rollback's target)."""
        return replace(self, stack=stack)

    def plan(self) -> stack_state.StackState:
        """What runs and what the files want (state.plan() says what would change)."""
        return stack_state.read(self.runner, self.stack, self.env)

    def health(self, state: stack_state.StackState) -> stack_state.StackState:
        """The containers' state and health anew."""
        return stack_state.refresh(self.runner, self.stack, self.env, state)

    def start(self, services: Sequence[str] = (), wait_timeout: int = 300,
              no_deps: bool = False) -> None:  # fmt: skip
        """compose up --wait for `services` (every one when empty)."""
        stack = self.stack
        self.runner.run(
            Command(
                commands.compose_up(
                    stack.project,
                    stack.files,
                    services=services,
                    wait_timeout=wait_timeout,
                    profiles=stack.profiles,
                    no_deps=no_deps,
                ),
                env=self.env,
                timeout=wait_timeout + 120,
            ),
            fix="inv status names the failing service; inv logs --service NAME shows why",
        )

    def start_ready(self, services: Sequence[str], wait_timeout: int) -> None:
        """Create and start these services (nothing they depend on), then wait for each one's
        readiness as a rollout does (engines/rolling.wait_healthy: the healthcheck run by the
        deploy itself), not for Docker's next scheduled check as `compose up --wait` would."""
        stack, runner = self.stack, self.runner
        argv = commands.compose(stack.project, stack.files, "up", "--detach", "--no-deps",
                                *services, profiles=stack.profiles)  # fmt: skip
        runner.run(Command(argv, env=self.env, timeout=wait_timeout + 120),
                   fix=f"inv logs --env={self.env_name} --service {services[0]}")  # fmt: skip
        if runner.dry_run:
            return
        names = [c for name in services for c in service_containers(runner, stack.project, name)]
        status = wait_healthy(runner, names, wait_timeout, probe=True)
        failed = [name for name, state in status.items() if state not in ("healthy", "none")]
        if failed:
            explained = [line for name in failed
                         for line in stack_state.explain_container(runner, name)]  # fmt: skip
            for line in explained:
                runner.events.info(line)
            cause = cause_of(explained)
            raise RolloutFailed(
                f"{', '.join(failed)}: not healthy after the start "
                f"({', '.join(f'{n}: {status[n]}' for n in failed)}"
                + (f"; {cause})" if cause else ")"),
                f"inv logs --env={self.env_name} --service "
                f"{next(n for n in services if failed[0].startswith(f'{stack.project}-{n}-'))}",
            )

    def migrate(self, service: str) -> str:
        """The service's migrations, once, in its new image, before it takes traffic."""
        stack = self.stack
        argv = commands.compose(
            stack.project, stack.files, "run", "--rm", "--no-deps", "-T", service, "migrate",
            profiles=stack.profiles,
        )  # fmt: skip
        result = self.runner.run(Command(argv, env=self.env, timeout=300), check=False)
        if not result.ok:
            # The one-shot container is gone (--rm): its own output is all there is, shown
            # here. The migrate command logs JSON lines on stdout: its last one says what failed.
            output = (result.stdout + "\n" + result.stderr).strip().splitlines()
            self.events.info(f"  last lines of `{service} migrate` (the new image, exit "
                             f"{result.returncode}):")  # fmt: skip
            for line in output[-12:] or ["(no output: the image exited before logging)"]:
                self.events.info(f"  | {line[:300]}")
            detail = result.stderr.strip().splitlines()[-1:] or [migration_summary(result.stdout)]
            raise MigrationFailed(
                f"[{self.runner.host}] {service}: migrations failed (exit {result.returncode}) "
                f"in its new image, nothing was switched: {detail[0][:300]}",
                f"the lines above are its output; migrations are in services/{service}/migrations",
            )
        return migration_summary(result.stdout)

    def switch(self, settle: bool = True) -> None:
        """Point the proxy at what runs now: a graceful nginx reload. New workers read the new
        configuration (and resolve upstream names anew, which nginx 1.22 does only at load), old
        workers finish their requests. `nginx -s reload` returns before the old workers are
        gone, and they still know only the old upstream addresses: wait `settle` seconds before
        anything relies on the new configuration."""
        container = f"{self.stack.project}-nginx-1"
        self.runner.run(Command(nginx_reload_argv(container), env=self.env))
        if settle and not self.runner.dry_run:
            time.sleep(self.settle)

    def restart_proxy(self, wait_timeout: int) -> None:
        """nginx.conf is a single-file bind mount: a replaced file is seen only by a new
        container."""
        self.recreate(("nginx",), wait_timeout)

    def recreate(self, services: Sequence[str], wait_timeout: int) -> None:
        """New containers of these services (no dependency touched), healthy before it returns:
        what a changed single-file bind mount needs."""
        stack = self.stack
        argv = commands.compose(
            stack.project, stack.files, "up", "--detach", "--wait", "--wait-timeout",
            str(wait_timeout), "--force-recreate", "--no-deps", *services, profiles=stack.profiles,
        )  # fmt: skip
        self.runner.run(Command(argv, env=self.env, timeout=wait_timeout + 60))

    def apply(
        self,
        state: stack_state.StackState,
        changes: Mapping[str, str],
        wait_timeout: int,
        rolling: bool,
        before_roll: Callable[[], None] | None = None,
    ) -> list[str]:
        """Bring the planned changes about; returns the services replaced in batches (nginx was
        reloaded onto them, and onto its configuration as it then stood). Services that are down or
        new have no traffic to protect: they start first (nginx cannot reload while an upstream
        name does not resolve). Services that run and change are then replaced beside their old
        containers, a batch of `batch_size` at a time (engines/rolling.py), so no request is
        dropped; compose finally brings up whatever is left (nginx, data stores). before_roll()
        runs once those are up, before the first replacement. Raises RolloutFailed or
        CommandFailed; the caller switches the proxy afterwards."""
        runner, events = self.runner, self.runner.events
        to_roll = rolling_candidates(state, changes) if rolling else []
        starting = [
            s for s in changes if s in SERVICE_VARIABLES and s not in to_roll and s in state.wanted
        ]
        stores = [s for s in DATA_STORES if s in changes and s in state.wanted]
        if stores:  # what the services depend on comes first (a restart the services ride out)
            with events.step(f"data stores first: {', '.join(stores)}"):
                self.start(stores, wait_timeout, no_deps=True)
        # nginx's upstreams start before any reload (nginx resolves every name when it loads);
        # the others wait until the batches went through, so that a failed batch leaves them
        # as they were and a rollback has nothing of theirs to undo
        first = [s for s in starting if s in NGINX_UPSTREAMS]
        later = [s for s in starting if s not in NGINX_UPSTREAMS]
        if first:
            with events.step(f"start {', '.join(first)}"):
                self.start_ready(first, wait_timeout)
        if before_roll is not None:  # every upstream name resolves now: nginx can check its files
            before_roll()
        for batch in batches(to_roll, self.batch_size):
            with events.step(f"roll {', '.join(batch)}"):
                for service in batch:
                    events.info(f"  roll {service} ({changes[service]})")
                summaries = roll(
                    runner,
                    self.stack,
                    self.env,
                    batch,
                    wait_timeout,
                    reload_proxy=self.switch,
                    explain=lambda name: stack_state.explain_container(runner, name),
                    env_name=self.env_name,
                )
                for line in summaries:
                    events.info(f"  {line}")
        if later:
            with events.step(f"start {', '.join(later)}"):
                self.start_ready(later, wait_timeout)
        with events.step(f"converge {len(changes)} service(s)"):
            self.start((), wait_timeout)
        return list(to_roll)


def batch_size(config: Config) -> int:
    """DEPLOY_ROLL_BATCH_SIZE: how many services are replaced together (0: all)."""
    raw = config.get("DEPLOY_ROLL_BATCH_SIZE") or str(DEFAULT_BATCH)
    if not raw.isdigit():
        raise ConfigError(
            f"DEPLOY_ROLL_BATCH_SIZE={raw!r} is not a whole number",
            "set it to 0 (every changed service together) or a batch size such as 2",
        )
    return int(raw)


def batches(services: Sequence[str], size: int) -> list[list[str]]:
    """The services in rolling order, `size` at a time (0: all together)."""
    size = size or len(services) or 1
    return [list(services[i : i + size]) for i in range(0, len(services), size)]


def migration_summary(output: str) -> str:
    """The migrate command's last JSON log line, as `message (schema N, applied a, b)`."""
    lines = output.strip().splitlines()
    if not lines:
        return "no output"
    try:
        record = json.loads(lines[-1])
    except ValueError:
        return lines[-1][:200]
    text = f"{record.get('message', '')} (schema {record.get('schema_version', '?')}"
    if record.get("applied"):
        text += ", applied " + ", ".join(record["applied"])
    return text + ")"


def rolling_candidates(state: stack_state.StackState, changes: Mapping[str, str]) -> list[str]:
    """Changed services whose current containers are all running and healthy: those can be
    replaced beside themselves. A service that is down or new has nothing to keep serving."""
    running = {c.service for c in state.containers}
    broken = {c.service for c in state.containers if not c.ok}
    return [s for s in ROLLING_SERVICES if s in changes and s in running and s not in broken]
