"""The rollout policy both deploys share, over the engine seam (engines/base.py): which services
migrate, in what order the stack changes, and the report of what runs when a change stops
half-way."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from deploysuite.config.layers import Config
from deploysuite.core.runner import Command, Runner
from deploysuite.deploy.lock import new_info
from deploysuite.engines import state as stack_state
from deploysuite.engines.base import Engine
from deploysuite.engines.stack import DATA_STORES, Stack
from deploysuite.monitoring import alerts as al
from deploysuite.monitoring.stack import monitoring_enabled

DATABASE_SERVICES = ("auth", "chat", "billing", "analytics")


def due_for_migration(state: stack_state.StackState) -> list[str]:
    """Migrations ship inside the images: only a service with a new image can bring new ones."""
    return [name for name in DATABASE_SERVICES if stack_state.runs_new_image(state, name)]


def schema_version(summary: str) -> str:
    """`applied 2 (schema 3, applied 0003_x)` -> `3`."""
    match = re.search(r"schema (\S+?)[,)]", summary)
    return match.group(1) if match else "?"


def run_migrations(
    engine: Engine,
    state: stack_state.StackState,
    wait_timeout: int,
    before: Callable[[Sequence[str]], object] | None = None,
) -> dict[str, str]:
    """The data stores up, then `before(services)` (the backup of their databases), then each
    due service's migrations in its new image. Returns service -> schema version."""
    to_migrate = due_for_migration(state)
    if not to_migrate:
        return {}
    events = engine.events
    with events.step("data stores"):
        engine.start(DATA_STORES, wait_timeout)
    if before is not None:
        before(to_migrate)
    versions = {}
    with events.step(f"migrations of {', '.join(to_migrate)}"):
        for service in to_migrate:
            summary = engine.migrate(service)
            events.info(f"  {service}: {summary}")
            versions[service] = schema_version(summary)
    return versions


def running_report(engine: Engine) -> list[str]:
    """What runs, one line a service, read anew: what the operator is left with when a change
    stopped half-way and could not be undone."""
    try:
        state = engine.plan()
    except Exception as exc:  # the host may be the thing that failed
        return [f"  what runs could not be read ({type(exc).__name__}): inv status once it answers"]
    return [
        f"  {row['service']}: {row['image']} {row['state']} {row['health']}".rstrip()
        for row in stack_state.status_rows(state)
    ]


@contextmanager
def silenced_blips(
    runner: Runner, stack: Stack, env: Mapping[str, str], config: Config, release: str,
    wait_timeout: int,
) -> Iterator[None]:  # fmt: skip
    """The deploy's own expected blips (alerts.DEPLOY_BLIPS) silenced in its environment while
    it changes containers, lifted when it ends. The silence also ends by itself (a few times the
    health timeout) should the deploy die; no Alertmanager yet (a first deploy): no silence."""
    if not monitoring_enabled(config) or runner.dry_run:
        yield
        return
    minutes = wait_timeout * 4 // 60 + 5
    author = new_info("", dt.datetime.now(dt.UTC), {}).owner
    args = al.deploy_silence_args(config.env, release, minutes, author)
    argv = al.amtool_argv(stack.project, stack.files, stack.profiles, *args)
    made = runner.run(Command(argv, env=env, timeout=30), check=False)
    silence = made.stdout.strip() if made.ok else ""
    if silence:
        runner.events.info(f"  alerts of expected blips silenced for the deploy ({silence})")
    try:
        yield
    finally:
        if silence:
            argv = al.amtool_argv(stack.project, stack.files, stack.profiles,
                                  *al.expire_args(silence))  # fmt: skip
            runner.run(Command(argv, env=env, timeout=30), check=False)
