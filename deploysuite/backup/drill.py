"""Disaster-recovery drills: the newest backup of a database restored into a scratch
database and verified, with its age (RPO) and how long the restore took (RTO)."""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from deploysuite.backup import catalog as bk
from deploysuite.backup import pitr
from deploysuite.backup.context import BackupContext
from deploysuite.backup.dump import list_backups
from deploysuite.backup.postgres import ident
from deploysuite.backup.restore import fetch_verified, restore_into


@dataclass
class DrillResult:
    database: str
    backup_id: str
    age_hours: float
    restore_seconds: float
    rows: int

    def row(self, rpo_hours: float, rto_hours: float) -> dict[str, str]:
        return {
            "database": self.database, "backup": self.backup_id,
            "age": f"{self.age_hours:.1f} h",
            "rpo": "ok" if self.age_hours <= rpo_hours else "MISSED",
            "restore": f"{self.restore_seconds:.1f} s",
            "rto": "ok" if self.restore_seconds <= rto_hours * 3600 else "MISSED",
            "rows": str(self.rows),
        }  # fmt: skip


def drill(ctx: BackupContext, db: str) -> DrillResult:
    """The newest backup of `db` restored into a scratch database, verified, dropped: the
    measured time is the RTO of that database, the backup's age its current RPO."""
    s, pg, store, s3 = ctx.s, ctx.pg, ctx.store, ctx.s3
    record = bk.choose(list_backups(store, s3, s.config.env, db), None, None, db)
    age = (dt.datetime.now(dt.UTC) - bk.finished_at(record)).total_seconds() / 3600
    started = time.monotonic()
    scratch = f"{db}_drill_{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}"
    with (
        tempfile.TemporaryDirectory(prefix="drill-") as tmp,
        s.events.step(f"drill {db}: {record['backup_id']} into {scratch}"),
    ):
        path = fetch_verified(s, store, s3, record, Path(tmp))
        _, counts = restore_into(s, pg, path, record, scratch)
        seconds = time.monotonic() - started
        pg.sql(f"DROP DATABASE {ident(scratch)}", mutates=True)
    return DrillResult(db, str(record["backup_id"]), age, seconds, sum(counts.values()))


@dataclass
class BaseDrill:
    backup_id: str
    age_hours: float
    seconds: float
    checked: str

    def row(self) -> dict[str, str]:
        """A base backup's age is not the RPO (the archived WAL after it is): both say "-"."""
        return {
            "database": "(cluster base backup)", "backup": self.backup_id,
            "age": f"{self.age_hours:.1f} h", "rpo": "-",
            "restore": f"{self.seconds:.1f} s", "rto": "-", "rows": self.checked,
        }  # fmt: skip


def drill_base(ctx: BackupContext) -> BaseDrill | None:
    """The newest base backup (the start of every point-in-time restore) fetched, unpacked into
    a scratch server and checked file by file against its manifest with pg_verifybackup; None
    when there is no base backup (WAL archiving off)."""
    s, pg, store, s3 = ctx.s, ctx.pg, ctx.store, ctx.s3
    bases = [b for b in pitr.list_bases(store, s3, s.config.env) if b.get("object")]
    if not bases:
        return None
    base = max(bases, key=bk.finished_at)
    age = (dt.datetime.now(dt.UTC) - bk.finished_at(base)).total_seconds() / 3600
    started = time.monotonic()
    name = pitr.scratch_name(s, "drill")
    with (
        tempfile.TemporaryDirectory(prefix="drill-") as tmp,
        s.events.step(f"drill base backup {base['backup_id']} in {name}"),
    ):
        path = fetch_verified(s, store, s3, base, Path(tmp))
        with pitr.scratch_server(pg, name) as scratch:
            checked = pitr.unpack_base(s, scratch, base, path)
    return BaseDrill(str(base["backup_id"]), age, time.monotonic() - started, checked)


def known_rto_line(record: Mapping[str, object] | None, db: str) -> str | None:
    """What the newest drill record says of `db` (how long its restore took), for a restore to
    print before it starts: the time to expect is known before the incident, not during it."""
    rows = record.get("results") if record else None
    row = next((r for r in rows or [] if isinstance(r, dict) and r.get("database") == db), None)
    if record is None or row is None:
        return None
    when = str(record.get("finished", ""))[:10]
    return (
        f"the last drill ({when}) restored {db} from {row.get('backup')} in "
        f"{row.get('restore')} (RTO {row.get('rto')})"
    )
