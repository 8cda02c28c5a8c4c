"""An environment's hosts, from environments/<env>/hosts.yml and the config."""

from __future__ import annotations

from pathlib import Path

from deploysuite.config import Config
from deploysuite.errors import ConfigError
from deploysuite.ssh import Host, SshConnection, parse_hosts


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


def lock_host_connection(config: Config) -> SshConnection:
    """The environment's lock lives on its first host."""
    return SshConnection(hosts_for(config)[0])


def deploy_root(config: Config) -> str:
    return config.require("DEPLOY_ROOT")
