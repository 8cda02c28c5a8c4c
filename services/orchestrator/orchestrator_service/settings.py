"""Settings of the orchestrator service (read through saaschat.config)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from saaschat.config import (
    RabbitSettings,
    ServiceSettings,
    environment,
    load_rabbit_settings,
    load_service_settings,
)


@dataclass(frozen=True)
class OrchestratorSettings:
    service: ServiceSettings
    rabbit: RabbitSettings


def load_settings(environ: Mapping[str, str] | None = None) -> OrchestratorSettings:
    with environment(environ):
        return OrchestratorSettings(
            service=load_service_settings("orchestrator"),
            rabbit=load_rabbit_settings(),
        )
