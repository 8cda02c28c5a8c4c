"""An environment's hosts, from environments/<env>/hosts.yml and the config, and the SSH
connection to the one a compose stack runs on (deploys and backups both reach it here)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from deploysuite.config.layers import Config
from deploysuite.core.errors import ConfigError
from deploysuite.core.events import Events
from deploysuite.core.runner import Runner
from deploysuite.core.ssh import Host, SshConnection, parse_hosts


def hosts_for(config: Config) -> list[Host]:
    custom = config.get("DEPLOY_HOSTS_FILE")
    path = Path(custom).expanduser() if custom else config.paths.env_dir / "hosts.yml"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"environment '{config.env}' lists no hosts ({path} is missing)",
            "create it: see environments/staging/hosts.yml",
        ) from None
    overrides = {
        "DEPLOY_SSH_KEY": config.get("DEPLOY_SSH_KEY") or "",
        "DEPLOY_SSH_USER": config.get("DEPLOY_SSH_USER") or "",
    }
    return parse_hosts(text, path.parent, {k: v for k, v in overrides.items() if v})


ENGINES = ("compose", "swarm")


def deploy_engine(config: Config) -> str:
    """The environment's engine (DEPLOY_ENGINE): compose or swarm."""
    engine = config.get("DEPLOY_ENGINE") or "compose"
    if engine not in ENGINES:
        raise ConfigError(
            f"DEPLOY_ENGINE={engine!r} for environment '{config.env}' is no engine the suite knows",
            f"set it to one of {', '.join(ENGINES)}",
        )
    return engine


def lock_host_connection(config: Config) -> SshConnection:
    """The environment's lock lives on its first host."""
    return SshConnection(hosts_for(config)[0])


def deploy_root(config: Config) -> str:
    return config.require("DEPLOY_ROOT")


@dataclass
class HostConnection:
    """One host reached over SSH, and the runner bound to it."""

    conn: SshConnection
    runner: Runner


@contextmanager
def connect(config: Config, events: Events, runner: Runner) -> Iterator[HostConnection]:
    """The SSH connection to the environment's stack host, closed on the way out."""
    hosts = hosts_for(config)
    if deploy_engine(config) == "swarm":  # releases, lock and audit live on the first manager
        hosts = [next((h for h in hosts if h.manager), hosts[0])]
    if len(hosts) > 1:
        raise ConfigError(
            f"environment '{config.env}' lists {len(hosts)} hosts; this version deploys the "
            "whole stack (data stores included) to one host",
            "list one host in hosts.yml",
        )
    with events.step(f"connect to {hosts[0].name} ({hosts[0].target})"):
        conn = SshConnection(hosts[0])
    try:
        yield HostConnection(conn, runner.on(conn))
    finally:
        conn.close()
