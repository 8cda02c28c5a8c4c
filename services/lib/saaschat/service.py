"""Wiring shared by the services that own a PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from aiohttp import web

from saaschat.app import ServiceContext
from saaschat.config import PostgresSettings
from saaschat.db import Database, Migration, latest_version
from saaschat.health import Check, Observation


class SchemaBehind(Exception):
    pass


def migrations_directory(service_root: Path, settings: PostgresSettings) -> Path:
    """MIGRATIONS_DIR if set, else ``<service>/migrations`` beside the package."""
    return settings.migrations_dir or service_root / "migrations"


def attach_database(
    ctx: ServiceContext, app: web.Application, db: Database, migrations: Sequence[Migration]
) -> None:
    """Pool lifetime bound to the app, and the ``postgresql`` and ``schema:version`` checks.

    The schema check fails while the database is behind the migrations this release ships,
    so a release whose ``migrate`` step was skipped never becomes ready. A database ahead of
    the release (after a rollback) passes: migrations are expand-only.
    """
    expected = latest_version(migrations)
    gauge = ctx.metrics.gauge("schema_version", "Highest migration applied to the database.")
    gauge_expected = ctx.metrics.gauge(
        "schema_version_expected", "Highest migration shipped with this release."
    )
    gauge_expected.set(expected)

    async def schema_probe() -> Observation:
        version = await db.schema_version()
        gauge.set(version)
        if version < expected:
            raise SchemaBehind(
                f"database schema at version {version}, this release needs {expected}: run migrate"
            )
        return Observation(value=version, unit="migration", output=f"release expects {expected}")

    ctx.health.add(Check("postgresql", db.ping, "datastore", required=True, breaker=db.breaker))
    ctx.health.add(Check("schema", schema_probe, "datastore", measurement="version"))

    async def pool(app: web.Application) -> AsyncIterator[None]:
        await db.start()
        yield
        await db.close()

    app.cleanup_ctx.append(pool)
