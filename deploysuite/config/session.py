"""What one run of a task works with: the environment's config, the event stream, the runner."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from deploysuite.config.layers import Config, load_config, parse_cli_overrides
from deploysuite.core.events import Events
from deploysuite.core.runner import Runner


@dataclass
class Session:
    """What one task run works with."""

    config: Config
    events: Events
    runner: Runner


def session(
    env: str,
    *,
    dry_run: bool = False,
    json: bool = False,
    verbose: bool = False,
    overrides: Iterable[str] = (),
    service: str | None = None,
) -> Session:
    config = load_config(env, service=service, cli=parse_cli_overrides(overrides))
    masker = config.masker()
    events = Events(json_mode=json, verbose=verbose, masker=masker)
    return Session(config, events, Runner(events, masker, dry_run=dry_run))
