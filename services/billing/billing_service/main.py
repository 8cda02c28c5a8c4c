"""Commands of the billing service."""

from __future__ import annotations

from pathlib import Path

from billing_service.app import build_app
from billing_service.settings import load_postgres, load_settings
from billing_service.store import PgBillingStore
from saaschat import db as dbmod
from saaschat.app import create_context
from saaschat.service import attach_database, migrations_directory
from saaschat.shutdown import serve as serve_app

SERVICE_ROOT = Path(__file__).resolve().parent.parent


async def serve() -> int:
    settings = load_settings()
    ctx = create_context(settings.service, "My-SaaS-Chat billing: plans and payment webhooks")
    migrations = dbmod.discover_migrations(migrations_directory(SERVICE_ROOT, settings.postgres))
    db = dbmod.Database(settings.postgres, ctx.breaker("postgresql"))
    app = build_app(ctx, PgBillingStore(db), settings.webhook_secret)
    attach_database(ctx, app, db, migrations)
    return await serve_app(app, ctx.lifecycle)


async def migrate() -> int:
    postgres = load_postgres()
    return await dbmod.migrate(postgres, migrations_directory(SERVICE_ROOT, postgres))
