"""Commands of the auth service."""

from __future__ import annotations

from pathlib import Path

from auth_service.app import build_app
from auth_service.passwords import PasswordHasher
from auth_service.settings import load_postgres, load_settings
from auth_service.store import PgUserStore
from saaschat import db as dbmod
from saaschat.app import create_context
from saaschat.service import attach_database, migrations_directory
from saaschat.shutdown import serve as serve_app
from saaschat.tokens import TokenSigner

SERVICE_ROOT = Path(__file__).resolve().parent.parent


async def serve() -> int:
    settings = load_settings()
    ctx = create_context(settings.service, "My-SaaS-Chat auth: accounts and access tokens")
    migrations = dbmod.discover_migrations(migrations_directory(SERVICE_ROOT, settings.postgres))
    db = dbmod.Database(settings.postgres, ctx.breaker("postgresql"))
    signer = TokenSigner(
        settings.token_secret,
        settings.token_ttl_seconds,
        [settings.token_previous_secret] if settings.token_previous_secret else [],
    )
    app = build_app(ctx, PgUserStore(db), signer, PasswordHasher())
    attach_database(ctx, app, db, migrations)
    return await serve_app(app, ctx.lifecycle)


async def migrate() -> int:
    postgres = load_postgres()
    return await dbmod.migrate(postgres, migrations_directory(SERVICE_ROOT, postgres))
