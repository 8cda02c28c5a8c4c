"""Settings of the analytics service (read through saaschat.config)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from saaschat.config import (
    PostgresSettings,
    ServiceSettings,
    env,
    environment,
    load_postgres_settings,
    load_service_settings,
)


@dataclass(frozen=True)
class AnalyticsSettings:
    service: ServiceSettings
    postgres: PostgresSettings


def load_postgres(environ: Mapping[str, str] | None = None) -> PostgresSettings:
    with environment(environ):
        return load_postgres_settings(env("ANALYTICS_DB_NAME", "analytics"))


def load_settings(environ: Mapping[str, str] | None = None) -> AnalyticsSettings:
    with environment(environ):
        return AnalyticsSettings(
            service=load_service_settings("analytics"),
            postgres=load_postgres(),
        )
