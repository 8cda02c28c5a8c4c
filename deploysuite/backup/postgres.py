"""The stack's PostgreSQL server as the backup and restore code reaches it: in its container on
the stack's host (this machine, or the host over SSH), or by the client tools beside it (the
backup service). Names of the databases and the SQL they are read with."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from deploysuite.config.layers import DB_NAME_RULE, Config
from deploysuite.config.session import Session
from deploysuite.core import streams
from deploysuite.core.errors import ConfigError, SuiteError
from deploysuite.core.runner import Command, Runner

# query_to_xml runs its query only when the table exists: a plain subquery would be planned (and
# fail) in a database that has no migrations yet.
SCHEMA_SQL = (
    "SELECT CASE WHEN to_regclass('schema_migrations') IS NULL THEN 0 "
    "ELSE (xpath('/row/v/text()', query_to_xml("
    "'SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations', false, true, '')))"
    "[1]::text::int END"
)
COUNTS_SQL = (
    "SELECT string_agg(format('%s %s', c.relname, "
    "(xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', "
    "n.nspname, c.relname), false, true, '')))[1]::text), E'\\n' ORDER BY c.relname) "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND n.nspname = 'public'"
)


def databases(config: Any) -> dict[str, str]:
    """database name -> the service that owns it."""
    return {
        config.require("AUTH_DB_NAME"): "auth",
        config.require("CHAT_DB_NAME"): "chat",
        config.require("BILLING_DB_NAME"): "billing",
        config.require("ANALYTICS_DB_NAME"): "analytics",
    }


# Names the suite builds around a configured database name (restores, drills) are identifiers
# too; PostgreSQL would cut anything longer than 63 bytes silently.
IDENTIFIER_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def ident(name: str) -> str:
    """`name` as a quoted SQL identifier. Only plain names pass (config validates *_DB_NAME):
    anything else is refused before it reaches a statement."""
    if not IDENTIFIER_RE.match(name):
        raise ConfigError(
            f"{name!r} is not a plain database name ({DB_NAME_RULE})",
            "fix the *_DB_NAME setting (inv env.check)",
        )
    return f'"{name}"'


def literal(text: str) -> str:
    """`text` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


@dataclass
class Postgres:
    """The stack's PostgreSQL server, reached inside its own container on the stack's host
    (`runner` runs there: this machine, or the host over SSH), or, with no container, by the
    client tools where `runner` runs (the backup service, through the server's socket)."""

    s: Session
    runner: Runner
    container: str | None
    user: str

    def exec_argv(self, *argv: str, stdin: bool = False) -> tuple[str, ...]:
        if self.container is None:
            return argv
        return ("docker", "exec", *(["-i"] if stdin else []), self.container, *argv)

    def sql(self, query: str, db: str = "postgres", mutates: bool = False) -> str:
        argv = self.exec_argv("psql", "-X", "-q", "-U", self.user, "-d", db,
                              "-v", "ON_ERROR_STOP=1", "-tAc", query)  # fmt: skip
        return self.runner.run(Command(argv, mutates=mutates, timeout=120)).stdout.strip()

    def exists(self, db: str) -> bool:
        return self.sql(f"SELECT 1 FROM pg_database WHERE datname = {literal(db)}") == "1"

    def start(self, argv: tuple[str, ...]) -> streams.Process:
        """A streamed process in the server's container: its stdout/stdin carry the data."""
        if self.runner.transport is not None:
            return self.runner.transport.start(argv)
        return streams.LocalProcess(argv, stdin=subprocess.PIPE)


@contextmanager
def postgres_for(s: Session) -> Iterator[Postgres]:
    project = s.config.require("COMPOSE_PROJECT_NAME")
    user = s.config.require("POSTGRES_USER")
    if s.config.env == "local":
        yield Postgres(s, s.runner, f"{project}-postgres-1", user)
        return
    # imported here: SSH (paramiko) is not in the backup service's image, which never needs it
    from deploysuite.engines import hosts

    with hosts.connect(s.config, s.events, s.runner) as host:
        yield Postgres(s, host.runner, f"{project}-postgres-1", user)


def table_counts(pg: Postgres, db: str) -> dict[str, int]:
    out = pg.sql(COUNTS_SQL, db)
    return {line.split()[0]: int(line.split()[1]) for line in out.splitlines() if line.strip()}


def chosen_databases(config: Config, db: str) -> list[str]:
    """--db: one of the configured databases, or all of them ("" or "all")."""
    known = list(databases(config))
    if db in ("", "all"):
        return known
    if db not in known:
        raise SuiteError(f"unknown database {db!r}", f"use one of: {', '.join(known)} or all")
    return [db]
