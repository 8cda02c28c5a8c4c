import contextlib

import asyncpg
import pytest

from saaschat.breaker import CircuitBreaker
from saaschat.config import PostgresSettings, Secret
from saaschat.db import Database, Migration, MigrationError, advisory_lock_key, apply_migrations
from saaschat.errors import DependencyUnavailable

SETTINGS = PostgresSettings("db", 5432, "app", Secret("pw"), "auth", 5, None, 0)


class FakeConn:
    """Records statements; stands in for an asyncpg connection at the driver boundary."""

    def __init__(self, applied=None, fail_on=None):
        self.statements = []
        self.applied = dict(applied or {})
        self.fail_on = fail_on
        self.transactions = 0

    async def execute(self, sql, *args):
        if self.fail_on and self.fail_on in sql:
            raise asyncpg.exceptions.SyntaxOrAccessError("boom")
        self.statements.append((" ".join(sql.split()), args))

    async def fetch(self, sql, *args):
        return [{"version": v, "checksum": c} for v, c in self.applied.items()]

    def transaction(self):
        conn = self

        @contextlib.asynccontextmanager
        async def tx():
            conn.transactions += 1
            yield

        return tx()


def migration(version, sql):
    return Migration(version, f"m{version}", f"{version:04d}_m{version}.sql", sql)


async def test_apply_runs_pending_migrations_under_the_advisory_lock():
    first, second = migration(1, "CREATE TABLE a (id int)"), migration(2, "CREATE TABLE b (id int)")
    conn = FakeConn(applied={1: first.checksum})
    applied = await apply_migrations(conn, [first, second], "auth")
    assert applied == [second]
    sql = [s for s, _ in conn.statements]
    key = advisory_lock_key("auth")
    assert conn.statements[0] == ("SELECT pg_advisory_lock($1)", (key,))
    assert conn.statements[-1] == ("SELECT pg_advisory_unlock($1)", (key,))
    record = next(i for i, s in enumerate(sql) if s.startswith("INSERT INTO schema_migrations"))
    assert sql.index("CREATE TABLE b (id int)") < record
    assert conn.statements[record][1][0] == 2
    assert "CREATE TABLE a (id int)" not in sql
    assert conn.transactions == 1


async def test_second_run_applies_nothing():
    first = migration(1, "CREATE TABLE a (id int)")
    conn = FakeConn(applied={1: first.checksum})
    assert await apply_migrations(conn, [first], "auth") == []
    assert conn.transactions == 0


async def test_lock_is_released_when_a_migration_fails_or_a_file_was_edited():
    conn = FakeConn(fail_on="BROKEN")
    with pytest.raises(asyncpg.exceptions.SyntaxOrAccessError):
        await apply_migrations(conn, [migration(1, "BROKEN SQL")], "auth")
    assert conn.statements[-1][0] == "SELECT pg_advisory_unlock($1)"
    edited = FakeConn(applied={1: "0" * 64})
    with pytest.raises(MigrationError):
        await apply_migrations(edited, [migration(1, "CREATE TABLE a (id int)")], "auth")
    assert edited.statements[-1][0] == "SELECT pg_advisory_unlock($1)"


class FakePool:
    def __init__(self, error=None):
        self.error = error

    @contextlib.asynccontextmanager
    async def _acquire(self):
        if self.error is not None:
            raise self.error
        yield object()

    def acquire(self, timeout=None):
        return self._acquire()


async def test_connection_errors_trip_the_breaker_and_become_503():
    breaker = CircuitBreaker("postgresql", failure_threshold=2, reset_timeout=60)
    db = Database(SETTINGS, breaker)
    db.pool = FakePool(ConnectionRefusedError())
    for _ in range(2):
        with pytest.raises(DependencyUnavailable):
            async with db.connection():
                pass
    assert breaker.state == "open"
    db.pool = FakePool()
    with pytest.raises(DependencyUnavailable, match="circuit open"):
        async with db.connection():
            pass


async def test_sql_errors_pass_through_and_count_as_a_healthy_database():
    breaker = CircuitBreaker("postgresql", failure_threshold=1, reset_timeout=60)
    db = Database(SETTINGS, breaker)
    db.pool = FakePool()
    with pytest.raises(asyncpg.exceptions.UniqueViolationError):
        async with db.connection():
            raise asyncpg.exceptions.UniqueViolationError("duplicate")
    assert breaker.state == "closed"
