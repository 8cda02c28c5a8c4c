"""The stack that runs now, wherever it runs: this machine's (the local environment) or the live
release's on the environment's host over SSH. Tasks that read or poke a running stack (alerts,
silences, the timeline) ask for it here and run their commands through the runner it gives."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from deploysuite.config.session import Session
from deploysuite.core.errors import SuiteError
from deploysuite.core.runner import Runner
from deploysuite.deploy.local import current_env
from deploysuite.deploy.target import Target, connect, read_releases
from deploysuite.engines.stack import Stack, stack_for


@dataclass(frozen=True)
class LiveStack:
    runner: Runner  # runs where the stack runs
    stack: Stack
    env: Mapping[str, str]  # compose's variables (the remote release brings its own .env)
    where: str  # "this machine" or the host's name


@contextmanager
def live_stack(s: Session) -> Iterator[LiveStack]:
    if s.config.env == "local":
        yield LiveStack(s.runner, stack_for(s.config), current_env(s.config), "this machine")
        return
    with live_host(s) as (_, live):
        if live is None:
            raise SuiteError(f"'{s.config.env}' has no live release yet",
                             f"inv deploy --env={s.config.env}")  # fmt: skip
        yield live


@contextmanager
def live_host(s: Session) -> Iterator[tuple[Target, LiveStack | None]]:
    """A remote environment's host (its audit log, its releases) and the stack of its live
    release; None before a first deploy succeeded, when the audit log may still say why."""
    with connect(s) as t:
        _, current = read_releases(t)
        live = None if current is None else LiveStack(t.runner, t.stack(current), {},
                                                      t.conn.host.name)  # fmt: skip
        yield t, live
