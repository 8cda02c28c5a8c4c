r"""Configuration from environment variables.

This module is the only place that reads the process environment. Every variable is read
through one of the ``env*`` helpers below, always with a literal name written right after the
parenthesis, so the complete list of variables can be found with the regular expression
``env(?:_\w+)?\("([A-Z0-9_]+)"``.

An empty value counts as unset (compose files often pass ``NAME=`` through).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ConfigError",
    "PostgresSettings",
    "RabbitSettings",
    "RedisSettings",
    "Secret",
    "ServiceSettings",
    "env",
    "env_bool",
    "env_float",
    "env_int",
    "env_secret",
    "environment",
    "load_postgres_settings",
    "load_rabbit_settings",
    "load_redis_settings",
    "load_service_settings",
]


class ConfigError(Exception):
    """A configuration value is missing or malformed. The message names the variable."""


class Secret:
    """A secret value that never shows itself in repr(), str() or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("saaschat_environ", default=None)


@contextlib.contextmanager
def environment(mapping: Mapping[str, str] | None) -> Iterator[None]:
    """Read variables from ``mapping`` instead of the process environment inside the block
    (None keeps the current source). The settings loaders use it for their ``environ``
    argument, which tests pass."""
    if mapping is None:
        yield
        return
    token = _ENVIRON.set(mapping)
    try:
        yield
    finally:
        _ENVIRON.reset(token)


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    """The variable's value, or the contents of the file ``<name>_FILE`` names (Swarm secrets,
    mounted under /run/secrets; the PostgreSQL image's convention). Both set is an error."""
    source = environ if environ is not None else _ENVIRON.get()
    if source is None:
        source = os.environ
    value = source.get(name)
    path = source.get(f"{name}_FILE")
    if path and path.strip():
        if value is not None and value.strip():
            raise ConfigError(f"both {name} and {name}_FILE are set: set one of them")
        try:
            with open(path.strip(), encoding="utf-8") as handle:
                value = handle.read()
        except OSError as exc:
            raise ConfigError(
                f"{name}_FILE={path.strip()} cannot be read: {exc.strerror}"
            ) from None
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _missing(name: str) -> ConfigError:
    return ConfigError(f"missing required environment variable {name}")


def env(
    name: str,
    default: str | None = None,
    *,
    required: bool = False,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """A string variable; ``required=True`` raises ConfigError naming the variable if unset."""
    value = _raw(name, environ)
    if value is None:
        if required:
            raise _missing(name)
        return default
    return value


def env_int(
    name: str,
    default: int | None = None,
    *,
    required: bool = False,
    minimum: int | None = None,
    maximum: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int | None:
    value = _raw(name, environ)
    if value is None:
        if required:
            raise _missing(name)
        return default
    try:
        number = int(value, 10)
    except ValueError:
        raise ConfigError(
            f"environment variable {name} must be an integer, got {value!r}"
        ) from None
    _check_range(name, number, minimum, maximum)
    return number


def env_float(
    name: str,
    default: float | None = None,
    *,
    required: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> float | None:
    value = _raw(name, environ)
    if value is None:
        if required:
            raise _missing(name)
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ConfigError(f"environment variable {name} must be a finite number, got {value!r}")
    _check_range(name, number, minimum, maximum)
    return number


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_bool(
    name: str,
    default: bool = False,
    *,
    environ: Mapping[str, str] | None = None,
) -> bool:
    value = _raw(name, environ)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(
        f"environment variable {name} must be a boolean (true/false/1/0/yes/no), got {value!r}"
    )


def env_secret(
    name: str,
    default: str | None = None,
    *,
    required: bool = True,
    min_length: int = 0,
    environ: Mapping[str, str] | None = None,
) -> Secret | None:
    """A secret variable. Error messages name the variable but never echo its value."""
    value = _raw(name, environ)
    if value is None:
        if default is not None:
            return Secret(default)
        if required:
            raise _missing(name)
        return None
    if len(value) < min_length:
        raise ConfigError(f"environment variable {name} must be at least {min_length} characters")
    return Secret(value)


def _check_range(name: str, number: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and number < minimum:
        raise ConfigError(f"environment variable {name} must be >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"environment variable {name} must be <= {maximum}, got {number}")


# --------------------------------------------------------------------------- shared settings


@dataclass(frozen=True)
class ServiceSettings:
    name: str
    version: str
    release_id: str
    host: str
    port: int
    log_level: str
    drain_seconds: float
    grace_seconds: float
    check_timeout: float
    health_interval: float
    breaker_failure_threshold: int
    breaker_reset_seconds: float


def load_service_settings(
    default_name: str,
    *,
    default_port: int = 8000,
    port: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServiceSettings:
    """Settings every service shares. ``port`` replaces PORT for a process that names its
    listening port with its own variable (the mail sink)."""
    with environment(environ):
        drain = env_float("SHUTDOWN_DRAIN_SECONDS", 2.0, minimum=0.0)
        grace = env_float("SHUTDOWN_GRACE_SECONDS", 10.0, minimum=0.0)
        if drain > grace:
            raise ConfigError(
                "environment variable SHUTDOWN_DRAIN_SECONDS must not exceed SHUTDOWN_GRACE_SECONDS"
            )
        level = env("LOG_LEVEL", "INFO").upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(
                "environment variable LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, "
                f"got {level!r}"
            )
        if port is None:
            port = env_int("PORT", default_port, minimum=1, maximum=65535)
        check_timeout = env_float("HEALTH_CHECK_TIMEOUT_SECONDS", 1.0, minimum=0.05, maximum=30)
        interval = env_float("HEALTH_INTERVAL_SECONDS", 5.0, minimum=0.5, maximum=300)
        threshold = env_int("BREAKER_FAILURE_THRESHOLD", 5, minimum=1, maximum=1000)
        reset = env_float("BREAKER_RESET_SECONDS", 10.0, minimum=0.1, maximum=3600)
        return ServiceSettings(
            name=env("SERVICE_NAME", default_name),
            version=env("SERVICE_VERSION", "dev"),
            release_id=env("RELEASE_ID", "dev"),
            host="0.0.0.0",
            port=port,
            log_level=level,
            drain_seconds=drain,
            grace_seconds=grace,
            check_timeout=check_timeout,
            health_interval=interval,
            breaker_failure_threshold=threshold,
            breaker_reset_seconds=reset,
        )


@dataclass(frozen=True)
class PostgresSettings:
    host: str
    port: int
    user: str
    password: Secret
    database: str
    pool_max: int
    migrations_dir: Path | None
    migrate_wait_seconds: float

    def describe(self) -> str:
        """host:port/database for logs; carries no credentials."""
        return f"{self.host}:{self.port}/{self.database}"


def load_postgres_settings(
    database: str, *, environ: Mapping[str, str] | None = None
) -> PostgresSettings:
    """PostgreSQL connection of one service; ``database`` comes from that service's
    ``<SERVICE>_DB_NAME`` variable."""
    with environment(environ):
        migrations_dir = env("MIGRATIONS_DIR")
        return PostgresSettings(
            host=env("POSTGRES_HOST", "localhost"),
            port=env_int("POSTGRES_PORT", 5432, minimum=1, maximum=65535),
            user=env("POSTGRES_USER", "postgres"),
            password=env_secret("POSTGRES_PASSWORD"),
            database=database,
            pool_max=env_int("POSTGRES_POOL_MAX", 10, minimum=1, maximum=200),
            migrations_dir=Path(migrations_dir) if migrations_dir else None,
            migrate_wait_seconds=env_float("MIGRATE_WAIT_SECONDS", 30.0, minimum=0, maximum=600),
        )


@dataclass(frozen=True)
class RedisSettings:
    host: str
    port: int
    password: Secret | None
    db: int
    username: str | None = None  # an ACL user; None: Redis's default user

    def describe(self) -> str:
        return f"{self.host}:{self.port}/{self.db}"


def load_redis_settings(*, environ: Mapping[str, str] | None = None) -> RedisSettings:
    with environment(environ):
        return RedisSettings(
            host=env("REDIS_HOST", "localhost"),
            port=env_int("REDIS_PORT", 6379, minimum=1, maximum=65535),
            password=env_secret("REDIS_PASSWORD", required=False),
            db=env_int("REDIS_DB", 0, minimum=0, maximum=15),
            username=env("REDIS_USER", "") or None,
        )


@dataclass(frozen=True)
class RabbitSettings:
    host: str
    port: int
    user: str
    password: Secret
    vhost: str
    heartbeat: int

    def describe(self) -> str:
        return f"{self.host}:{self.port}{self.vhost if self.vhost.startswith('/') else '/'}"


def load_rabbit_settings(*, environ: Mapping[str, str] | None = None) -> RabbitSettings:
    with environment(environ):
        return RabbitSettings(
            host=env("RABBITMQ_HOST", "localhost"),
            port=env_int("RABBITMQ_PORT", 5672, minimum=1, maximum=65535),
            user=env("RABBITMQ_USER", "guest"),
            password=env_secret("RABBITMQ_PASSWORD"),
            vhost=env("RABBITMQ_VHOST", "/"),
            heartbeat=env_int("RABBITMQ_HEARTBEAT_SECONDS", 10, minimum=0, maximum=600),
        )
