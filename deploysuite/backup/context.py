"""What one backup, restore or drill works with, handed on as one value."""

from __future__ import annotations

from dataclasses import dataclass

from deploysuite.backup import s3 as s3store
from deploysuite.backup.postgres import Postgres
from deploysuite.config.session import Session


@dataclass(frozen=True)
class BackupContext:
    """The session, the PostgreSQL server (reached on its host) and the suite's bucket (None for
    a restore from a local copy, which never needs S3: it may be what is down)."""

    s: Session
    pg: Postgres
    store: s3store.S3Settings | None
    s3: s3store.S3Client | None


def open_bucket(s: Session) -> tuple[s3store.S3Settings, s3store.S3Client]:
    """The environment's S3 settings and a client; the secret key joins the masked values."""
    store = s3store.settings(s.config)
    if store.secret_access_key:
        s.runner.masker.add(store.secret_access_key)
    return store, s3store.client(store)


def open_context(s: Session, pg: Postgres) -> BackupContext:
    return BackupContext(s, pg, *open_bucket(s))
