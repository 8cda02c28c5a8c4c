"""Alertmanager's routing: who hears about an alert, and how, rendered from
prometheus/alertmanager.yml.j2 with the environment's settings.

- `critical` alerts go to the `page` receiver, `warning` alerts to `ticket`; both send e-mail
  through the environment's SMTP server (SMTP_HOST, the stack's mailsink locally) and, when
  NOTIFY_WEBHOOK_URL is set, post to that Slack-compatible webhook. Without a webhook the
  receivers simply have no webhook integration.
- Alerts are grouped by alertname and service: one message per failing thing, not per target.
- Inhibition: HostDown holds back every other alert of the same `host`; PostgresDown, RedisDown
  and RabbitMQDown hold back ServiceNotReady for the same `dependency`.

The webhook URL is the credential, so it never enters alertmanager.yml: Alertmanager 0.25
(Debian bookworm) reads a Slack integration's URL from `api_url_file` (its webhook_configs
have no `url_file` yet), and likewise the SMTP password from `smtp_auth_password_file`. The
suite's own notifications (deploysuite.core.notify) post Slack's `{"text": ...}` shape to the
same URL, which is what `slack_configs` sends and what Slack-compatible endpoints (Slack,
Mattermost, Rocket.Chat) accept; `webhook_configs` would post Alertmanager's own JSON, which
they reject.

`render_alertmanager_config` and `alertmanager_secret_files` are pure; `write_alertmanager`
writes the folder mounted at /etc/alertmanager, every file mode 0600 (the container's user,
65534, must own them or get them as compose secrets); the `*_argv` builders return amtool
commands.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from deploysuite.config.layers import Config
from deploysuite.core.commands import Argv
from deploysuite.core.errors import ConfigError
from deploysuite.core.files import write_private
from deploysuite.monitoring.templates import PROMETHEUS_DIR, check_duration, template_environment

TEMPLATE = "alertmanager.yml.j2"
CONFIG_FILE = "alertmanager.yml"
SECRETS_SUBDIR = "secrets"  # pragma: allowlist secret (a folder name)
WEBHOOK_URL_FILE = "notify_webhook_url"
SMTP_PASSWORD_FILE = "smtp_password"  # pragma: allowlist secret (a file name)
# Where the rendered folder is mounted in the Alertmanager container.
CONFIG_DIR = PurePosixPath("/etc/alertmanager")
CHECK_MOUNT = PurePosixPath("/alertmanager-check")
# severity -> receiver; the order is the routing tree's.
RECEIVERS: Mapping[str, str] = {"critical": "page", "warning": "ticket"}
# Wait before the first message of a new group, so that alerts of one outage arrive together.
GROUP_WAIT = "30s"
# Wait before telling a group about alerts added to it.
GROUP_INTERVAL = "5m"
# Repeat a still-firing ticket (warning) this often; pages (critical) repeat sooner.
REPEAT_INTERVAL = "4h"
PAGE_REPEAT_INTERVAL = "1h"


@dataclass(frozen=True)
class AlertRouting:
    """Where an environment's alerts go. The two secrets are left out of repr, so a routing
    printed in a traceback or a log shows neither."""

    email_to: str
    email_from: str
    # host:port of the SMTP server Alertmanager delivers to.
    smtp_smarthost: str
    # STARTTLS required: off for the local mail sink, which speaks plain SMTP.
    smtp_require_tls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    webhook_url: str | None = field(default=None, repr=False)
    group_wait: str = GROUP_WAIT
    group_interval: str = GROUP_INTERVAL
    repeat_interval: str = REPEAT_INTERVAL
    page_repeat_interval: str = PAGE_REPEAT_INTERVAL

    def __post_init__(self) -> None:
        for name, variable in (
            ("group_wait", "ALERT_GROUP_WAIT"),
            ("group_interval", "ALERT_GROUP_INTERVAL"),
            ("repeat_interval", "ALERT_REPEAT_INTERVAL"),
            ("page_repeat_interval", "ALERT_PAGE_REPEAT_INTERVAL"),
        ):
            check_duration(getattr(self, name), variable, f"set {variable}, e.g. 5m")
        if "@" not in self.email_to or any(c.isspace() for c in self.email_to):
            raise ConfigError(
                f"ALERT_EMAIL_TO={self.email_to!r} is not an e-mail address",
                "set ALERT_EMAIL_TO to the address that receives alerts",
            )
        if "@" not in self.email_from:
            raise ConfigError(
                f"SMTP_FROM={self.email_from!r} is not an e-mail address", "set SMTP_FROM"
            )
        host, sep, port = self.smtp_smarthost.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"SMTP server {self.smtp_smarthost!r} is not host:port",
                "set SMTP_HOST and SMTP_PORT",
            )
        if self.smtp_username and not self.smtp_password:
            raise ConfigError(
                "SMTP_USERNAME is set but SMTP_PASSWORD is not: Alertmanager cannot log in",
                "set SMTP_PASSWORD in the environment's secrets.env, or unset SMTP_USERNAME",
            )
        # The value itself is never in a message: it is the credential.
        if self.webhook_url is not None and not self.webhook_url.startswith(
            ("https://", "http://")
        ):
            raise ConfigError(
                "NOTIFY_WEBHOOK_URL is not an http(s) URL",
                "set it to the incoming webhook's URL, https://...",
            )


def alertmanager_routing(config: Config) -> AlertRouting:
    """The environment's routing: its SMTP server and sender, ALERT_EMAIL_TO, the webhook."""
    return AlertRouting(
        email_to=config.require("ALERT_EMAIL_TO"),
        email_from=config.require("SMTP_FROM"),
        smtp_smarthost=f"{config.require('SMTP_HOST')}:{config.require('SMTP_PORT')}",
        smtp_require_tls=(config.get("SMTP_STARTTLS") or "false").lower() == "true",
        smtp_username=config.get("SMTP_USERNAME"),
        smtp_password=config.get("SMTP_PASSWORD"),
        webhook_url=config.get("NOTIFY_WEBHOOK_URL"),
        group_wait=config.get("ALERT_GROUP_WAIT") or GROUP_WAIT,
        group_interval=config.get("ALERT_GROUP_INTERVAL") or GROUP_INTERVAL,
        repeat_interval=config.get("ALERT_REPEAT_INTERVAL") or REPEAT_INTERVAL,
        page_repeat_interval=config.get("ALERT_PAGE_REPEAT_INTERVAL") or PAGE_REPEAT_INTERVAL,
    )


def render_alertmanager_config(routing: AlertRouting, templates_dir: Path = PROMETHEUS_DIR) -> str:
    """alertmanager.yml's content. It names the secret files, never their values."""
    env = template_environment(templates_dir)
    context = {
        "r": routing,
        "receivers": RECEIVERS,
        "webhook_url_file": (
            str(CONFIG_DIR / SECRETS_SUBDIR / WEBHOOK_URL_FILE) if routing.webhook_url else None
        ),
        "smtp_password_file": (
            str(CONFIG_DIR / SECRETS_SUBDIR / SMTP_PASSWORD_FILE) if routing.smtp_username else None
        ),
    }
    return env.get_template(TEMPLATE).render(context)


def alertmanager_secret_files(routing: AlertRouting) -> dict[str, str]:
    """secrets/<name> -> value of each secret file the configuration names. No trailing newline:
    Alertmanager 0.25 uses the file's bytes as they are."""
    files: dict[str, str] = {}
    if routing.webhook_url:
        files[f"{SECRETS_SUBDIR}/{WEBHOOK_URL_FILE}"] = routing.webhook_url
    if routing.smtp_username and routing.smtp_password:
        files[f"{SECRETS_SUBDIR}/{SMTP_PASSWORD_FILE}"] = routing.smtp_password
    return files


def write_alertmanager(routing: AlertRouting, out_dir: Path) -> list[Path]:
    """Writes alertmanager.yml and its secret files under out_dir, each mode 0600 through a
    rename, and removes a secret file the routing no longer names (a webhook that was unset
    must not linger on disk). Returns the files written, sorted."""
    files = {CONFIG_FILE: render_alertmanager_config(routing), **alertmanager_secret_files(routing)}
    written = []
    for rel, content in sorted(files.items()):
        path = out_dir / rel
        write_private(path, content)
        written.append(path)
    secrets_dir = out_dir / SECRETS_SUBDIR
    if secrets_dir.is_dir():
        os.chmod(secrets_dir, 0o700)
        for path in secrets_dir.iterdir():
            if path not in written:
                path.unlink()
    return sorted(written)


def describe_routing(routing: AlertRouting) -> list[dict[str, str]]:
    """Rows (severity, receiver, repeat, integrations) for a table: the webhook only as set or
    not, never its URL."""
    email = f"e-mail to {routing.email_to} via {routing.smtp_smarthost}"
    webhook = "webhook (NOTIFY_WEBHOOK_URL)" if routing.webhook_url else "no webhook"
    return [
        {
            "severity": severity,
            "receiver": receiver,
            "repeat": routing.page_repeat_interval
            if receiver == "page"
            else routing.repeat_interval,
            "integrations": f"{email}; {webhook}",
        }
        for severity, receiver in RECEIVERS.items()
    ]


def _amtool(image: str, folder: Path, user: str | None, args: Sequence[str]) -> Argv:
    # Offline and read-only: amtool needs nothing but the file. The file is 0600: amtool runs
    # as its owner (uid:gid) unless the folder belongs to the image's user already.
    as_user = ("--user", user) if user else ()
    return (
        "docker", "run", "--rm", "--network", "none", *as_user,
        "--volume", f"{folder}:{CHECK_MOUNT}:ro",
        "--entrypoint", "amtool",
        image, *args,
    )  # fmt: skip


def amtool_check_config_argv(image: str, folder: Path, user: str | None = None) -> Argv:
    """`amtool check-config` of folder/alertmanager.yml in the Alertmanager image."""
    return _amtool(image, folder, user, ("check-config", str(CHECK_MOUNT / CONFIG_FILE)))


def amtool_route_argv(
    image: str,
    folder: Path,
    labels: Mapping[str, str],
    expect_receiver: str,
    user: str | None = None,
) -> Argv:
    """`amtool config routes test`: exits non-zero unless an alert with these labels reaches
    expect_receiver (and prints the receiver it does reach)."""
    return _amtool(
        image,
        folder,
        user,
        (
            "config", "routes", "test",
            f"--config.file={CHECK_MOUNT / CONFIG_FILE}",
            f"--verify.receivers={expect_receiver}",
            *(f"{k}={v}" for k, v in sorted(labels.items())),
        ),
    )  # fmt: skip
