"""Each service's environment: exactly the variables it reads, resolved through all six layers
(with its own override file), written to one env file per service for compose's `env_file`.

A service gets only its own secrets: billing never sees the token key, auth never sees the
webhook secret. The host names of the stack's own network (postgres, redis, rabbitmq) are not
configuration: the compose file sets them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from deploysuite.config import Config
from deploysuite.envfile import render_env_lines
from deploysuite.files import write_private

COMMON = (
    "SERVICE_VERSION",
    "RELEASE_ID",
    "LOG_LEVEL",
    "SHUTDOWN_DRAIN_SECONDS",
    "SHUTDOWN_GRACE_SECONDS",
    "HEALTH_CHECK_TIMEOUT_SECONDS",
    "HEALTH_INTERVAL_SECONDS",
    "BREAKER_FAILURE_THRESHOLD",
    "BREAKER_RESET_SECONDS",
)
POSTGRES = (
    "POSTGRES_PORT",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_POOL_MAX",
    "MIGRATE_WAIT_SECONDS",
)
RABBITMQ = (
    "RABBITMQ_PORT",
    "RABBITMQ_USER",
    "RABBITMQ_PASSWORD",
    "RABBITMQ_VHOST",
    "RABBITMQ_HEARTBEAT_SECONDS",
)
TOKENS = ("AUTH_TOKEN_SECRET", "AUTH_TOKEN_SECRET_PREVIOUS")

SERVICE_VARIABLES: Mapping[str, tuple[str, ...]] = {
    "auth": (*COMMON, *POSTGRES, *TOKENS, "AUTH_DB_NAME", "AUTH_TOKEN_TTL_SECONDS"),
    "chat": (
        *COMMON,
        *POSTGRES,
        *TOKENS,
        "CHAT_DB_NAME",
        "REDIS_PORT",
        "REDIS_PASSWORD",
        "REDIS_DB",
    ),
    "billing": (*COMMON, *POSTGRES, "BILLING_DB_NAME", "BILLING_WEBHOOK_SECRET"),
    "analytics": (*COMMON, *POSTGRES, "ANALYTICS_DB_NAME"),
    "orchestrator": (*COMMON, *RABBITMQ),
    "email-worker": (
        *COMMON,
        *RABBITMQ,
        "SMTP_HOST",
        "SMTP_PORT",
        "SMTP_FROM",
        "SMTP_USERNAME",
        "SMTP_PASSWORD",
        "SMTP_STARTTLS",
        "SMTP_TIMEOUT_SECONDS",
        "EMAIL_MAX_ATTEMPTS",
        "EMAIL_RETRY_BASE_SECONDS",
        "EMAIL_RETRY_MAX_SECONDS",
    ),
    "mailsink": (*COMMON, "MAILSINK_SMTP_PORT", "MAILSINK_HTTP_PORT", "MAILSINK_MAX_MESSAGES"),
}


def service_environment(config: Config, service: str) -> dict[str, str]:
    """The variables `service` reads, from a config loaded for that service (so its override
    file applies); unset ones are left out and the service's own default holds."""
    return {
        name: value
        for name in SERVICE_VARIABLES[service]
        if (value := config.get(name)) is not None
    }


def write_env_file(path: Path, values: Mapping[str, str]) -> bool:
    """Mode 0600 (it holds the service's secrets); False when the file already says the same."""
    text = render_env_lines(dict(values))
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    write_private(path, text)
    return True
