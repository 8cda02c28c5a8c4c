"""Makes ``python -m pytest services`` work from the repository root: the shared library and
every service directory go on sys.path, as PYTHONPATH does in the images."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

HERE = Path(__file__).resolve().parent
SERVICE_DIRS = [
    "lib",
    "auth",
    "chat",
    "billing",
    "analytics",
    "orchestrator",
    "email-worker",
    "mailsink",
]

for name in SERVICE_DIRS:
    path = str(HERE / name)
    if path not in sys.path:
        sys.path.insert(0, path)


@pytest.fixture
def service_settings():
    """ServiceSettings for tests: short timeouts, loopback, ephemeral port."""
    from saaschat.config import ServiceSettings

    def build(**overrides):
        values = {
            "name": "test-service",
            "version": "1.2.3",
            "release_id": "rel-42",
            "host": "127.0.0.1",
            "port": 0,
            "log_level": "INFO",
            "drain_seconds": 0.0,
            "grace_seconds": 5.0,
            "check_timeout": 0.2,
            "health_interval": 30.0,
            "breaker_failure_threshold": 2,
            "breaker_reset_seconds": 30.0,
        }
        values.update(overrides)
        return ServiceSettings(**values)

    return build


@pytest.fixture
def service_context(service_settings):
    """A fresh ServiceContext (metrics registry, health monitor, lifecycle)."""
    from saaschat.app import create_context

    def build(**overrides):
        return create_context(service_settings(**overrides), "test service")

    return build


@pytest.fixture
async def make_client():
    """Starts an aiohttp app on an in-process loopback test server."""
    clients: list[TestClient] = []

    async def factory(app):
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()
