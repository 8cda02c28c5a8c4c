"""PostgreSQL access: a connection pool behind a circuit breaker, and the migration runner.

Migrations are files ``NNNN_description.sql`` in a service's ``migrations/`` directory. Each is
applied in version order in its own transaction and recorded with its SHA-256 checksum in
``schema_migrations``. The whole run holds a PostgreSQL advisory lock, so concurrent runs are
safe; a second run applies nothing. Applied files must never change (a checksum mismatch stops
the run). Migrations are expand-only (new tables, nullable columns, indexes, seed rows), so
they can run while the previous release still serves traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from saaschat.breaker import CircuitBreaker, CircuitOpenError
from saaschat.config import PostgresSettings
from saaschat.errors import DependencyUnavailable

log = logging.getLogger("saaschat.db")

MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9][a-z0-9_]*)\.sql$")
DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
MAINTENANCE_DB = "postgres"
PROBE_CONNECT_TIMEOUT = 2.0


class MigrationError(Exception):
    pass


# --------------------------------------------------------------------------- migration files


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    filename: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def discover_migrations(directory: Path) -> list[Migration]:
    """All migration files of ``directory`` in version order.

    Every ``*.sql`` file must match ``NNNN_description.sql``; versions must be unique and > 0.
    """
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql" or not path.is_file():
            continue
        match = MIGRATION_FILE.match(path.name)
        if not match:
            raise MigrationError(
                f"migration file {path.name} does not match NNNN_description.sql "
                "(four digits, lowercase letters, digits and underscores)"
            )
        version = int(match["version"])
        if version == 0:
            raise MigrationError(f"migration file {path.name}: version 0000 is reserved")
        if version in migrations:
            raise MigrationError(
                f"migration version {version:04d} is used by both "
                f"{migrations[version].filename} and {path.name}"
            )
        sql = path.read_text(encoding="utf-8")
        if not sql.strip():
            raise MigrationError(f"migration file {path.name} is empty")
        migrations[version] = Migration(version, match["name"], path.name, sql)
    return [migrations[v] for v in sorted(migrations)]


def latest_version(migrations: Sequence[Migration]) -> int:
    return migrations[-1].version if migrations else 0


def plan_migrations(migrations: Sequence[Migration], applied: dict[int, str]) -> list[Migration]:
    """The migrations still to apply, given ``applied`` (version -> checksum).

    Raises MigrationError when an applied file was edited afterwards. Versions recorded in the
    database but absent from the files (a newer release ran its migrations, then this one was
    rolled back to) are allowed: expand-only migrations keep older code working.
    """
    by_version = {m.version: m for m in migrations}
    for version, checksum in sorted(applied.items()):
        migration = by_version.get(version)
        if migration is not None and migration.checksum != checksum:
            raise MigrationError(
                f"migration {migration.filename} was modified after it was applied "
                f"(recorded checksum {checksum[:12]}, file checksum {migration.checksum[:12]}); "
                "write a new migration instead"
            )
    return [m for m in migrations if m.version not in applied]


def advisory_lock_key(database: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock, distinct per database."""
    digest = hashlib.sha256(f"saaschat:schema_migrations:{database}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def quote_identifier(name: str) -> str:
    if not DATABASE_NAME.match(name):
        raise MigrationError(
            f"database name {name!r} must be lowercase letters, digits and underscores"
        )
    return '"' + name + '"'


# --------------------------------------------------------------------------- connections


def connect_kwargs(settings: PostgresSettings, database: str | None = None) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "user": settings.user,
        "password": settings.password.reveal(),
        "database": database or settings.database,
    }


_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InvalidCatalogNameError,
    asyncpg.exceptions.TooManyConnectionsError,
)


def is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, _CONNECTION_ERRORS)


async def connect_with_retry(
    settings: PostgresSettings, database: str, wait_seconds: float
) -> asyncpg.Connection:
    """One connection, retrying connection errors for up to ``wait_seconds``."""
    deadline = time.monotonic() + wait_seconds
    delay = 0.5
    while True:
        try:
            return await asyncpg.connect(**connect_kwargs(settings, database), timeout=5)
        except Exception as exc:
            if not is_connection_error(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning(
                "postgresql not reachable yet, retrying",
                extra={"target": f"{settings.host}:{settings.port}/{database}", "retry_in": delay},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


class Database:
    """An asyncpg pool used through a circuit breaker.

    The pool starts with no connections, so a service starts (and reports not ready) while
    PostgreSQL is down, and recovers on its own when it comes back.
    """

    name = "postgresql"

    def __init__(self, settings: PostgresSettings, breaker: CircuitBreaker) -> None:
        self.settings = settings
        self.breaker = breaker
        self.pool: asyncpg.Pool | None = None
        # Health probes use their own connection, so an exhausted pool under load does not
        # read as "PostgreSQL down" and take every replica out of rotation at once.
        self._probe_conn: asyncpg.Connection | None = None
        self._probe_lock = asyncio.Lock()

    async def start(self) -> None:
        self.pool = await asyncpg.create_pool(
            **connect_kwargs(self.settings),
            min_size=0,
            max_size=self.settings.pool_max,
            timeout=5,
            command_timeout=10,
            max_inactive_connection_lifetime=60,
        )

    async def close(self, timeout: float = 5.0) -> None:
        if self._probe_conn is not None:
            self._probe_conn.terminate()
            self._probe_conn = None
        if self.pool is None:
            return
        pool, self.pool = self.pool, None
        try:
            await asyncio.wait_for(pool.close(), timeout)
        except TimeoutError:
            pool.terminate()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; connection-level failures feed the breaker and surface as
        DependencyUnavailable, SQL errors (constraint violations...) pass through."""
        if self.pool is None:
            raise DependencyUnavailable(self.name, "pool not started")
        try:
            self.breaker.ensure_allowed()
        except CircuitOpenError as exc:
            raise DependencyUnavailable(self.name, "circuit open", exc.retry_after) from None
        try:
            async with self.pool.acquire(timeout=3) as conn:
                yield conn
        except Exception as exc:
            if is_connection_error(exc):
                self.breaker.record_failure()
                raise DependencyUnavailable(self.name, exc.__class__.__name__) from exc
            # SQL errors and handler errors: PostgreSQL itself answered.
            self.breaker.record_success()
            raise
        except BaseException:
            self.breaker.release_trial()
            raise
        else:
            self.breaker.record_success()

    async def _probe(self, query: str) -> object:
        async with self._probe_lock:
            try:
                if self._probe_conn is None or self._probe_conn.is_closed():
                    self._probe_conn = await asyncpg.connect(
                        **connect_kwargs(self.settings), timeout=PROBE_CONNECT_TIMEOUT
                    )
                return await self._probe_conn.fetchval(query)
            except BaseException:
                conn, self._probe_conn = self._probe_conn, None
                if conn is not None:
                    conn.terminate()
                raise

    async def ping(self) -> None:
        await self._probe("SELECT 1")

    async def schema_version(self) -> int:
        value = await self._probe(
            "SELECT CASE WHEN to_regclass('schema_migrations') IS NULL THEN 0 "
            "ELSE (SELECT COALESCE(MAX(version), 0) FROM schema_migrations) END"
        )
        return int(value)


# --------------------------------------------------------------------------- migrate command


async def ensure_database(settings: PostgresSettings) -> bool:
    """Create the service's database if missing. Returns True if it was created."""
    quoted = quote_identifier(settings.database)
    conn = await connect_with_retry(settings, MAINTENANCE_DB, settings.migrate_wait_seconds)
    try:
        exists = await conn.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", settings.database
        )
        if exists:
            return False
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        except (asyncpg.exceptions.DuplicateDatabaseError, asyncpg.exceptions.UniqueViolationError):
            # A concurrent migrate run created it first.
            return False
        log.info("database created", extra={"database": settings.database})
        return True
    finally:
        await conn.close()


SCHEMA_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


async def apply_migrations(
    conn: asyncpg.Connection, migrations: Sequence[Migration], database: str
) -> list[Migration]:
    """Apply pending migrations on ``conn`` under the advisory lock. Returns those applied."""
    key = advisory_lock_key(database)
    await conn.execute("SELECT pg_advisory_lock($1)", key)
    try:
        await conn.execute(SCHEMA_TABLE_SQL)
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        pending = plan_migrations(migrations, {r["version"]: r["checksum"] for r in rows})
        for migration in pending:
            started = time.perf_counter()
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info(
                "migration applied",
                extra={
                    "database": database,
                    "migration": migration.filename,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
        return pending
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", key)


async def migrate(settings: PostgresSettings, migrations_dir: Path) -> int:
    """The ``migrate`` command: create the database if needed, apply pending migrations."""
    migrations = discover_migrations(migrations_dir)
    created = await ensure_database(settings)
    conn = await connect_with_retry(settings, settings.database, settings.migrate_wait_seconds)
    try:
        applied = await apply_migrations(conn, migrations, settings.database)
        version = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
    finally:
        await conn.close()
    if applied:
        log.info(
            "migrations complete",
            extra={
                "database": settings.database,
                "database_created": created,
                "applied": [m.filename for m in applied],
                "schema_version": version,
            },
        )
    else:
        log.info(
            "schema up to date, nothing to apply",
            extra={"database": settings.database, "schema_version": version},
        )
    return 0
