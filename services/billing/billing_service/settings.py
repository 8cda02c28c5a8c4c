"""Settings of the billing service (read through saaschat.config)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from saaschat.config import (
    PostgresSettings,
    Secret,
    ServiceSettings,
    env,
    env_secret,
    environment,
    load_postgres_settings,
    load_service_settings,
)


@dataclass(frozen=True)
class BillingSettings:
    service: ServiceSettings
    postgres: PostgresSettings
    webhook_secret: Secret


def load_postgres(environ: Mapping[str, str] | None = None) -> PostgresSettings:
    with environment(environ):
        return load_postgres_settings(env("BILLING_DB_NAME", "billing"))


def load_settings(environ: Mapping[str, str] | None = None) -> BillingSettings:
    with environment(environ):
        return BillingSettings(
            service=load_service_settings("billing"),
            postgres=load_postgres(),
            webhook_secret=env_secret("BILLING_WEBHOOK_SECRET", min_length=16),
        )
