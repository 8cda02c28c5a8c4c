"""Settings of the email worker (read through saaschat.config)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from saaschat.config import (
    ConfigError,
    RabbitSettings,
    Secret,
    ServiceSettings,
    env,
    env_bool,
    env_float,
    env_int,
    env_secret,
    environment,
    load_rabbit_settings,
    load_service_settings,
)
from saaschat.validation import normalize_email


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    username: str | None
    password: Secret | None
    starttls: bool
    timeout: float


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int
    base_seconds: float
    max_seconds: float


@dataclass(frozen=True)
class WorkerSettings:
    service: ServiceSettings
    rabbit: RabbitSettings
    smtp: SmtpSettings
    retry: RetrySettings


def load_smtp(environ: Mapping[str, str] | None = None) -> SmtpSettings:
    with environment(environ):
        sender = env("SMTP_FROM", "no-reply@my-saas-chat.local")
        if normalize_email(sender) is None:
            raise ConfigError("environment variable SMTP_FROM must be an email address")
        username = env("SMTP_USERNAME")
        password = env_secret("SMTP_PASSWORD", required=False)
        if bool(username) != bool(password):
            raise ConfigError("environment variables SMTP_USERNAME and SMTP_PASSWORD go together")
        return SmtpSettings(
            host=env("SMTP_HOST", "localhost"),
            port=env_int("SMTP_PORT", 25, minimum=1, maximum=65535),
            sender=sender,
            username=username,
            password=password,
            starttls=env_bool("SMTP_STARTTLS", False),
            timeout=env_float("SMTP_TIMEOUT_SECONDS", 10.0, minimum=0.5, maximum=120.0),
        )


def load_retry(environ: Mapping[str, str] | None = None) -> RetrySettings:
    with environment(environ):
        base = env_float("EMAIL_RETRY_BASE_SECONDS", 2.0, minimum=0.05, maximum=3600.0)
        cap = env_float("EMAIL_RETRY_MAX_SECONDS", 300.0, minimum=0.05, maximum=86400.0)
        if cap < base:
            raise ConfigError(
                "environment variable EMAIL_RETRY_MAX_SECONDS must be >= EMAIL_RETRY_BASE_SECONDS"
            )
        attempts = env_int("EMAIL_MAX_ATTEMPTS", 6, minimum=1, maximum=100)
        return RetrySettings(max_attempts=attempts, base_seconds=base, max_seconds=cap)


def load_settings(environ: Mapping[str, str] | None = None) -> WorkerSettings:
    with environment(environ):
        return WorkerSettings(
            service=load_service_settings("email-worker"),
            rabbit=load_rabbit_settings(),
            smtp=load_smtp(),
            retry=load_retry(),
        )
