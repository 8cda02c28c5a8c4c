"""Settings of the chat service (read through saaschat.config)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from saaschat.config import (
    PostgresSettings,
    RedisSettings,
    Secret,
    ServiceSettings,
    env,
    env_secret,
    environment,
    load_postgres_settings,
    load_redis_settings,
    load_service_settings,
)


@dataclass(frozen=True)
class ChatSettings:
    service: ServiceSettings
    postgres: PostgresSettings
    redis: RedisSettings
    token_secret: Secret
    token_previous_secret: Secret | None


def load_postgres(environ: Mapping[str, str] | None = None) -> PostgresSettings:
    with environment(environ):
        return load_postgres_settings(env("CHAT_DB_NAME", "chat"))


def load_settings(environ: Mapping[str, str] | None = None) -> ChatSettings:
    with environment(environ):
        previous = env_secret("AUTH_TOKEN_SECRET_PREVIOUS", required=False, min_length=32)
        return ChatSettings(
            service=load_service_settings("chat"),
            postgres=load_postgres(),
            redis=load_redis_settings(),
            token_secret=env_secret("AUTH_TOKEN_SECRET", min_length=32),
            token_previous_secret=previous,
        )
