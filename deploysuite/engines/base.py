"""The engine seam: what a deploy asks of wherever a stack runs.

    plan    -> what runs now and what would change (a StackState and its plan)
    start   -> bring services up and wait for their health (data stores before migrations)
    migrate -> one service's migrations in its new image, before it takes traffic
    apply   -> the planned changes, replacing running services beside themselves
    health  -> the state and health of every container anew
    switch  -> point the proxy at what runs now
    on_stack-> the same engine on another release's files: a rollback is apply() towards them

engines/compose.py implements it for compose on this machine's engine and on a host's over
SSH (the runner decides where commands run). engines/swarm.py does not: on a Swarm the
orchestrator replaces tasks itself (update_config), so apply/switch/restart_proxy have no
counterpart; it offers what a release needs there instead (objects, deploy a stack file, wait
for convergence, a one-shot job) and deploy/swarm.py drives it with the same release steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from deploysuite.core.events import Events
from deploysuite.engines.stack import Stack
from deploysuite.engines.state import StackState


class Engine(Protocol):
    env_name: str

    @property
    def events(self) -> Events: ...

    def on_stack(self, stack: Stack) -> Engine: ...

    def plan(self) -> StackState: ...

    def health(self, state: StackState) -> StackState: ...

    def start(
        self, services: Sequence[str] = (), wait_timeout: int = 300, no_deps: bool = False
    ) -> None: ...

    def migrate(self, service: str) -> str: ...

    def apply(
        self,
        state: StackState,
        changes: Mapping[str, str],
        wait_timeout: int,
        rolling: bool,
        before_roll: Callable[[], None] | None = None,
    ) -> list[str]: ...

    def switch(self) -> None: ...

    def restart_proxy(self, wait_timeout: int) -> None: ...
