"""Commands of the analytics service."""

from __future__ import annotations

from pathlib import Path

from analytics_service.app import build_app
from analytics_service.settings import load_postgres, load_settings
from analytics_service.store import PgEventStore
from saaschat import db as dbmod
from saaschat.app import create_context
from saaschat.service import attach_database, migrations_directory
from saaschat.shutdown import serve as serve_app

SERVICE_ROOT = Path(__file__).resolve().parent.parent


async def serve() -> int:
    settings = load_settings()
    ctx = create_context(settings.service, "My-SaaS-Chat analytics: product events")
    migrations = dbmod.discover_migrations(migrations_directory(SERVICE_ROOT, settings.postgres))
    db = dbmod.Database(settings.postgres, ctx.breaker("postgresql"))
    app = build_app(ctx, PgEventStore(db))
    attach_database(ctx, app, db, migrations)
    return await serve_app(app, ctx.lifecycle)


async def migrate() -> int:
    postgres = load_postgres()
    return await dbmod.migrate(postgres, migrations_directory(SERVICE_ROOT, postgres))
