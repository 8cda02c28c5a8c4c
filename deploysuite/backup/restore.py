"""Restores: verify (size, SHA-256, a full read by pg_restore) -> safety backup -> restore
into a new database -> verify it -> terminate connections and swap the names in one transaction
-> restart the services on it and wait for their readiness."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from deploysuite.backup import catalog as bk
from deploysuite.backup import localcopy, transfer
from deploysuite.backup import s3 as s3store
from deploysuite.backup.context import BackupContext
from deploysuite.backup.dump import backup_database, local_safety_backup
from deploysuite.backup.postgres import (
    IDENTIFIER_RE,
    SCHEMA_SQL,
    Postgres,
    databases,
    ident,
    literal,
    table_counts,
)
from deploysuite.config.session import Session
from deploysuite.core import streams
from deploysuite.core.errors import SuiteError
from deploysuite.core.runner import Command
from deploysuite.engines.rolling import wait_healthy


def fetch_verified(
    s: Session,
    store: s3store.S3Settings,
    s3: s3store.S3Client,
    record: Mapping[str, object],
    folder: Path,
) -> Path:
    """The backup's object in a private local file, its size and SHA-256 checked, then read in
    full by pg_restore (`pg_restore -l` passes truncated archives; a full read does not)."""
    path = folder / "backup.dump.zst"
    name = record["backup_id"]
    total = int(str(record.get("size") or 0)) or None
    started = time.monotonic()

    def progress(done: int) -> None:
        s.events.info(bk.transfer_line(f"{name}", done, total, time.monotonic() - started))

    with path.open("wb") as handle:
        size, digest = transfer.download_stream(
            s3, store.bucket, str(record["object"]), handle, on_progress=progress
        )
    if size != record["size"]:
        raise bk.BackupError(
            f"backup {name} is truncated: {size} of {record['size']} bytes in S3; nothing changed",
            "pick another backup (inv backup.list) and investigate the storage",
        )
    if digest != record["sha256"]:
        raise bk.BackupError(
            f"backup {name} fails its checksum (sha256 {digest[:12]}..., manifest says "
            f"{str(record['sha256'])[:12]}...); nothing changed",
            "pick another backup (inv backup.list) and investigate the storage",
        )
    return path


def pipe_into(
    s: Session,
    pg: Postgres,
    source: tuple[str, ...],
    target: tuple[str, ...],
    what: str,
    fix: str | None = None,
) -> None:
    """`source` (here) | `target` (in a container on the server's host, through the runner's
    transport); either one failing is one line naming `what`."""
    producer = streams.LocalProcess(source)
    consumer = pg.start(target)
    pumping = streams.pump(producer.stdout, consumer)
    try:
        pumping.join()
        codes = (producer.wait(), consumer.wait())
        if any(codes):
            text = consumer.error_text() or producer.error_text()
            line = text.splitlines()[-1] if text else "-"
            raise bk.BackupError(f"{what} failed: {s.runner.masker(line)}", fix)
    finally:
        producer.kill()
        consumer.kill()


def pg_restore_from(s: Session, pg: Postgres, path: Path, args: tuple[str, ...], what: str) -> None:
    """zstd -dc FILE (here) | pg_restore ARGS (in the server's container, on its host)."""
    argv = pg.exec_argv("pg_restore", *args, stdin=True)
    s.events.command(f"[{pg.runner.host}] zstd -dc {path.name} | {' '.join(argv)}", run=True)
    pipe_into(s, pg, ("zstd", "-q", "-dc", str(path)), argv, what,
              "pick another backup (inv backup.list)")  # fmt: skip


def swap(pg: Postgres, db: str, restored: str, keep_as: str) -> None:
    """No new connections to `db`, terminate the open ones, then both renames in one
    transaction: `db` is either the old database or the restored one, never missing."""
    pg.sql(f"ALTER DATABASE {ident(db)} ALLOW_CONNECTIONS false", mutates=True)
    try:
        pg.sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname IN ({literal(db)}, {literal(restored)}) AND pid <> pg_backend_pid()",
            mutates=True,
        )
        pg.sql(
            f"BEGIN; ALTER DATABASE {ident(db)} RENAME TO {ident(keep_as)}; "
            f"ALTER DATABASE {ident(restored)} RENAME TO {ident(db)}; COMMIT;",
            mutates=True,
        )
    except SuiteError:
        pg.sql(f"ALTER DATABASE {ident(db)} ALLOW_CONNECTIONS true", mutates=True)
        raise
    # the kept copy opens again for whoever needs to look into it (no service uses its name)
    pg.sql(f"ALTER DATABASE {ident(keep_as)} ALLOW_CONNECTIONS true", mutates=True)


@dataclass
class RestoreOutcome:
    database: str
    backup: Mapping[str, object]
    safety_backup: str  # the backup id of the previous database's copy ("" if it failed)
    kept_as: str
    counts: dict[str, int]
    schema_version: int
    seconds: float
    serving_seconds: float = 0.0  # until the restored database was in place and its owner ready
    safety_error: str = ""


def restore_database(
    ctx: BackupContext,
    db: str,
    record: Mapping[str, object],
    confirm: Callable[[str], None],
    wait_timeout: float = 120,
    local_dir: Path | None = None,
) -> RestoreOutcome:
    """`record` restored into `db`; from its local copy (and with a local safety backup) when
    `local_dir` is given, else from S3."""
    s, store, s3 = ctx.s, ctx.store, ctx.s3
    started = time.monotonic()
    name = str(record["backup_id"])
    with tempfile.TemporaryDirectory(prefix="restore-") as tmp:
        folder = Path(tmp)
        with s.events.step(f"verify backup {name}: size and SHA-256"):
            if local_dir is not None:
                path = localcopy.verified(record)
            else:
                path = fetch_verified(s, store, s3, record, folder)
        confirm(name)
        if s.runner.dry_run:
            s.events.command(f"[local] restore {name} into a new database, swap it in as {db} "
                             "(the previous one kept), then back up the previous one",
                             run=False)  # fmt: skip
            return RestoreOutcome(db, record, "", "", {}, 0, 0.0)
        return apply_restore(ctx, db, path, record, wait_timeout, started, local_dir)


def apply_restore(
    ctx: BackupContext,
    db: str,
    path: Path,
    record: Mapping[str, object],
    wait_timeout: float,
    started: float,
    local_dir: Path | None = None,
) -> RestoreOutcome:
    """A verified local dump (zstd) put in place of `db`: restored into a new database (the full
    read of the backup: an archive that does not restore leaves the live database untouched) and
    checked, the names swapped in one transaction (the previous database is kept as it was: the
    safety copy, at once), the owner restarted; then a backup of the kept database (into S3, or
    into `local_dir` for a restore from a local copy), while the service already runs."""
    s, pg = ctx.s, ctx.pg
    restored, keep_as = bk.restore_names(db, dt.datetime.now(dt.UTC))
    with s.events.step(f"restore into a new database {restored} (the live {db} untouched)"):
        schema, counts = restore_into(s, pg, path, record, restored)
    for table, rows in sorted(counts.items()):
        s.events.info(f"  {table}: {rows} rows")
    with s.events.step(f"swap {restored} in as {db} (the previous one kept as {keep_as})"):
        swap(pg, db, restored, keep_as)
    restart_owner(s, pg, db, wait_timeout)
    serving = time.monotonic() - started
    s.events.info(f"  {db} restored and serving after {serving:.1f} s")
    safety, error = "", ""
    try:
        with s.events.step(f"safety backup of the previous {db} (database {keep_as})"):
            if local_dir is not None:
                safety = str(local_safety_backup(s, pg, db, local_dir, source=keep_as)["backup_id"])
            else:
                safety = str(backup_database(ctx, db, kind="pre-restore",
                                             source=keep_as)["backup_id"])  # fmt: skip
    except SuiteError as exc:  # the restore stands; the previous data is still in keep_as
        error = s.runner.masker(exc.one_line())
        s.events.warn(f"the backup of the previous {db} failed ({error}); it is still on the "
                      f"server as database {keep_as}")  # fmt: skip
    return RestoreOutcome(db, record, safety, keep_as, counts, schema,
                          time.monotonic() - started, serving, error)  # fmt: skip


def restore_jobs(cpus: int | None) -> int:
    return min(4, cpus or 1)


def parallel_restore_argv(
    image: str, socket_volume: str, dump: Path, jobs: int, user: str, target: str
) -> tuple[str, ...]:
    """pg_restore -j in a throwaway container of the server's own image that sees the
    uncompressed dump (read-only) and the server's socket directory, and no network."""
    return ("docker", "run", "--rm", "--network", "none", "--cap-drop", "ALL", "--user", "0",
            "-v", f"{dump}:/restore/dump.pgc:ro", "-v", f"{socket_volume}:/var/run/postgresql",
            "--entrypoint", "pg_restore", image, "--exit-on-error", "--no-owner", "-j", str(jobs),
            "-U", user, "-d", target, "/restore/dump.pgc")  # fmt: skip


SOCKET_VOLUME_FORMAT = (
    '{{.Image}} {{range .Mounts}}{{if eq .Destination "/var/run/postgresql"}}{{.Name}}'
    "{{end}}{{end}}"
)


def parallel_restore(s: Session, pg: Postgres, path: Path, target: str) -> bool:
    """pg_restore -j needs a seekable file the restoring process can read: possible when the
    server runs on this machine with its socket directory in a volume (the compose stack) and
    there are cores to spare. False when it is not possible, or when it failed (the target is
    then emptied, and the caller restores in one stream)."""
    jobs = restore_jobs(os.cpu_count())
    if pg.runner.transport is not None or pg.container is None or jobs < 2:
        return False
    inspect = ("docker", "inspect", "--format", SOCKET_VOLUME_FORMAT, pg.container)
    found = pg.runner.run(Command(inspect, mutates=False), check=False).stdout.split()
    if len(found) != 2:
        return False
    image, volume = found
    with tempfile.TemporaryDirectory(prefix="restore-j-") as tmp:
        dump = Path(tmp) / "dump.pgc"
        pg.runner.run(Command(("zstd", "-q", "-d", str(path), "-o", str(dump)), timeout=3600))
        argv = parallel_restore_argv(image, volume, dump, jobs, pg.user, target)
        result = pg.runner.run(Command(argv, timeout=7200), check=False)
    if result.ok:
        s.events.info(f"  restored with pg_restore -j {jobs} from a local file")
        return True
    s.events.info(f"  parallel restore failed ({s.runner.masker(result.stderr.strip()[-200:])}); "
                  "restoring in one stream")  # fmt: skip
    pg.sql(f"DROP DATABASE {ident(target)}", mutates=True)
    pg.sql(f"CREATE DATABASE {ident(target)}", mutates=True)
    return False


def restore_into(
    s: Session, pg: Postgres, path: Path, record: Mapping[str, object], target: str
) -> tuple[int, dict[str, int]]:
    """A new database `target` from the verified file, checked: its schema version must be the
    manifest's. Returns it and every table's row count; on any failure `target` is dropped."""
    pg.sql(f"CREATE DATABASE {ident(target)}", mutates=True)
    try:
        if not parallel_restore(s, pg, path, target):
            pg_restore_from(s, pg, path,
                            ("--exit-on-error", "--no-owner", "-U", pg.user, "-d", target),
                            f"restoring {record['backup_id']}")  # fmt: skip
        schema = int(pg.sql(SCHEMA_SQL, target) or 0)
        if record.get("schema_version") is not None and schema != record["schema_version"]:
            raise bk.BackupError(
                f"the restored {record['database']} has schema version {schema}, the backup "
                f"says {record['schema_version']}; the live database was not touched"
            )
        return schema, table_counts(pg, target)
    except BaseException:
        pg.sql(f"DROP DATABASE IF EXISTS {ident(target)}", mutates=True)
        raise


def restart_owner(s: Session, pg: Postgres, db: str, wait_timeout: float) -> None:
    """The service of `db` reconnects by itself; restarting it makes that certain, and its
    readiness (database reachable) is checked before the restore counts as done."""
    service = databases(s.config).get(db)
    if service is None:
        return
    project = s.config.require("COMPOSE_PROJECT_NAME")
    out = pg.runner.run(Command(("docker", "ps", "--format", "{{.Names}}", "--filter",
                                f"label=com.docker.compose.project={project}", "--filter",
                                f"label=com.docker.compose.service={service}"),
                               mutates=False)).stdout.split()  # fmt: skip
    if not out:
        return
    with s.events.step(f"restart {service} and wait for its readiness"):
        pg.runner.run(Command(("docker", "restart", "--time", "20", *out), timeout=120))
        status = wait_healthy(pg.runner, out, wait_timeout)
        if any(v != "healthy" for v in status.values()):
            raise bk.BackupError(
                f"{service} is not ready after the restore ({status}); the restored database "
                f"is in place, the previous one is kept",
                f"inv logs --service {service}",
            )


def drop_old_pre_restore(pg: Postgres, keep_days: int, now: dt.datetime) -> list[str]:
    """Pre-restore copies older than `keep_days` go."""
    names = pg.sql("SELECT datname FROM pg_database WHERE datname LIKE '%\\_pre\\_restore\\_%'")
    gone = []
    for name in names.split():
        if not IDENTIFIER_RE.match(name):  # not one of the suite's names
            continue
        stamp = name.rsplit("_", 1)[-1]
        try:
            when = dt.datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)
        except ValueError:
            continue
        if now - when > dt.timedelta(days=keep_days):
            pg.sql(f"DROP DATABASE {ident(name)}", mutates=True)
            gone.append(name)
    return gone
