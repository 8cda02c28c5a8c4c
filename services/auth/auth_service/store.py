"""User storage in PostgreSQL."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from saaschat.db import Database


@dataclass(frozen=True)
class User:
    id: int
    email: str
    password_hash: str
    created_at: dt.datetime
    last_login_at: dt.datetime | None = None

    def public(self) -> dict[str, object]:
        return {
            "id": self.id,
            "email": self.email,
            "created_at": self.created_at.isoformat(),
            "last_login_at": self.last_login_at.isoformat() if self.last_login_at else None,
        }


class UserStore(Protocol):
    async def create(self, email: str, password_hash: str) -> User | None: ...
    async def by_email(self, email: str) -> User | None: ...
    async def by_id(self, user_id: int) -> User | None: ...
    async def record_login(self, user_id: int) -> None: ...


_COLUMNS = "id, email, password_hash, created_at, last_login_at"


class PgUserStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, email: str, password_hash: str) -> User | None:
        """The new user, or None when the email is taken (the unique index decides)."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                f"INSERT INTO users (email, password_hash) VALUES ($1, $2) "
                f"ON CONFLICT ((lower(email))) DO NOTHING RETURNING {_COLUMNS}",
                email,
                password_hash,
            )
        return User(**dict(row)) if row else None

    async def by_email(self, email: str) -> User | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM users WHERE lower(email) = lower($1)", email
            )
        return User(**dict(row)) if row else None

    async def by_id(self, user_id: int) -> User | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE id = $1", user_id)
        return User(**dict(row)) if row else None

    async def record_login(self, user_id: int) -> None:
        async with self.db.connection() as conn:
            await conn.execute("UPDATE users SET last_login_at = now() WHERE id = $1", user_id)
