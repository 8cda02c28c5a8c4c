"""Settings of the auth service (read through saaschat.config)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from saaschat.config import (
    PostgresSettings,
    Secret,
    ServiceSettings,
    env,
    env_int,
    env_secret,
    environment,
    load_postgres_settings,
    load_service_settings,
)

DAY = 86400


@dataclass(frozen=True)
class AuthSettings:
    service: ServiceSettings
    postgres: PostgresSettings
    token_secret: Secret
    token_previous_secret: Secret | None
    token_ttl_seconds: int


def load_postgres(environ: Mapping[str, str] | None = None) -> PostgresSettings:
    with environment(environ):
        return load_postgres_settings(env("AUTH_DB_NAME", "auth"))


def load_settings(environ: Mapping[str, str] | None = None) -> AuthSettings:
    with environment(environ):
        previous = env_secret("AUTH_TOKEN_SECRET_PREVIOUS", required=False, min_length=32)
        ttl = env_int("AUTH_TOKEN_TTL_SECONDS", 3600, minimum=60, maximum=30 * DAY)
        return AuthSettings(
            service=load_service_settings("auth"),
            postgres=load_postgres(),
            token_secret=env_secret("AUTH_TOKEN_SECRET", min_length=32),
            token_previous_secret=previous,
            token_ttl_seconds=ttl,
        )
