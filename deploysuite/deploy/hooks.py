"""The deploy's pre- and post-hooks (DEPLOY_PRE_HOOK, DEPLOY_POST_HOOK): shell commands run on
this machine, not on the host, with the release's id and hosts in their environment."""

from __future__ import annotations

from collections.abc import Mapping

from deploysuite.config.session import Session
from deploysuite.core.errors import SuiteError
from deploysuite.core.runner import Command


def run_hook(s: Session, name: str, hook: str | None, env: Mapping[str, str]) -> None:
    """A hook runs on this machine (not on the host), like the deploy's own build."""
    if not hook:
        return
    with s.events.step(f"{name.lower().replace('_', ' ')}: {hook}"):
        s.runner.run(Command(("sh", "-c", hook), env=env, timeout=600),
                     fix=f"the {name} command failed: fix it or unset {name}")  # fmt: skip


def run_post_hook(s: Session, env: Mapping[str, str]) -> None:
    try:
        run_hook(s, "DEPLOY_POST_HOOK", s.config.get("DEPLOY_POST_HOOK"), env)
    except SuiteError as exc:
        s.events.info(f"warning: {exc.what}")
