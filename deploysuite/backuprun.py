"""Backup and restore of the stack's PostgreSQL databases, streamed to and from S3.

Backup:  pg_dump -Fc (in the server's own container, so never older than the server)
         | zstd | SHA-256 | S3 multipart upload, one part in memory at a time; the manifest is
         written only after the data object completed, so a partial upload never counts.
Restore: verify (size, SHA-256, a full read by pg_restore) -> safety backup -> restore into a
         new database -> verify it -> terminate connections and swap the names in one
         transaction -> restart the services on it and wait for their readiness.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploysuite import backup as bk
from deploysuite import localcopy, s3store, streams
from deploysuite.cli import Session
from deploysuite.errors import SuiteError
from deploysuite.rollout import wait_healthy
from deploysuite.runner import Command, Runner

ZSTD_LEVEL = "3"
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
        return self.sql(f"SELECT 1 FROM pg_database WHERE datname = '{db}'") == "1"

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
    from deploysuite.remotedeploy import connect

    with connect(s) as target:
        yield Postgres(s, target.runner, f"{project}-postgres-1", user)


# --- backup -------------------------------------------------------------------------------


def stream_to_s3(
    s: Session,
    pg: Postgres,
    store: s3store.S3Settings,
    s3: Any,
    producer: tuple[str, ...],
    key: str,
    label: str,
    expected: int | None = None,
    copy_to: Path | None = None,
    tool: str = "pg_dump",
) -> s3store.Uploaded:
    """producer (in the server's container, on its host) | zstd (here) -> S3. A producer that
    fails anywhere fails the upload before it completes (the multipart upload is aborted): a
    dead pg_dump never yields an object. With `copy_to`, the same bytes also go to that local
    file, which is removed again when the upload fails."""
    dump = pg.start(producer)
    dump.close_stdin()
    zstd, pump = streams.feeding(("zstd", "-q", f"-{ZSTD_LEVEL}", "-T0", "-c"), dump)
    tee = localcopy.Tee(zstd.stdout, copy_to) if copy_to else None
    reader = tee or zstd.stdout
    started = time.monotonic()

    def progress(done: int) -> None:
        rate = done / max(time.monotonic() - started, 1e-6)
        s.events.info(f"  {label}: {bk.human_bytes(done)} uploaded ({bk.human_bytes(rate)}/s)")

    def producers_ok() -> None:
        if pump is not None:
            pump.join(timeout=60)
        for name, proc in ((tool, dump), ("zstd", zstd)):
            code = proc.wait(timeout=60)
            if code != 0:
                text = s.runner.masker(proc.error_text())
                raise bk.BackupError(
                    f"{label}: {name} exited {code}: {text.splitlines()[-1] if text else '-'}; "
                    "the upload was aborted, nothing was stored",
                    f"inv logs --env={s.config.env} --service postgres",
                )

    uploaded = None
    try:
        uploaded = s3store.upload_stream(
            s3, store.bucket, key, reader,
            part_size=s3store.part_size(expected, store.part_size_mb * s3store.MiB),
            sse=store.sse, metadata={"producer": producer[-1][:60]}, on_progress=progress,
            before_complete=producers_ok,
        )  # fmt: skip
        return uploaded
    finally:
        if tee is not None:
            tee.close(keep=uploaded is not None)
        dump.kill()
        zstd.kill()


def backup_database(
    s: Session,
    pg: Postgres,
    store: s3store.S3Settings,
    s3: Any,
    db: str,
    kind: str = "scheduled",
    verify: Callable[[Any, str, dict[str, object]], None] | None = None,
    local_dir: Path | None = None,
) -> dict[str, object]:
    """One database dumped into S3, its manifest last. With `verify`, the stored object is read
    back and checked before the manifest is written (it then says "verified": true). With
    `local_dir`, a local copy of the same bytes is kept there too (localcopy)."""
    started = dt.datetime.now(dt.UTC)
    if not s.runner.dry_run:
        # A backup killed with -9 cannot abort its upload; the next backup of the database
        # does (backups of one database never overlap: the schedule runs them one by one).
        folder = bk.database_prefix(store.prefix, s.config.env, db)
        aborted = s3store.abort_incomplete(s3, store.bucket, folder)
        if aborted:
            s.events.info(f"  {db}: aborted {aborted} incomplete upload(s) left by an "
                          "interrupted backup")  # fmt: skip
    client = pg.runner.run(Command(pg.exec_argv("pg_dump", "--version"), mutates=False)).stdout
    server = pg.sql("SHOW server_version_num")
    bk.check_versions(bk.major_version(client), bk.major_version(server))
    size = int(pg.sql(f"SELECT pg_database_size('{db}')") or 0)
    schema = int(pg.sql(SCHEMA_SQL, db) or 0)
    backup_id = bk.new_backup_id(started, db, "" if kind == "scheduled" else kind)
    keys = bk.keys_for(store.prefix, s.config.env, db, backup_id)
    if s.runner.dry_run:
        s.events.command(f"[{pg.runner.host}] pg_dump -Fc {db} | zstd | s3 put {keys.data}",
                         run=False)  # fmt: skip
        return {"backup_id": backup_id, "database": db, "dry_run": True}
    with s.events.step(f"back up {db} ({bk.human_bytes(size)} in the server)"):
        data = stream_to_s3(
            s, pg, store, s3, pg.exec_argv("pg_dump", "-Fc", "-Z0", "-U", pg.user, db),
            keys.data, db, expected=size,
            copy_to=localcopy.data_path(local_dir, s.config.env, db, backup_id) if local_dir
            else None,
        )  # fmt: skip
        roles = stream_to_s3(
            s, pg, store, s3, pg.exec_argv("pg_dumpall", "--globals-only", "-U", pg.user),
            keys.globals, f"{db} globals", tool="pg_dumpall",
        )  # fmt: skip
    record = bk.manifest(
        backup_id=backup_id, env=s.config.env, db=db, keys=keys, size=data.size,
        sha256=data.sha256, globals_size=roles.size, globals_sha256=roles.sha256,
        pg_version=server, schema_version=schema, release=s.config.get("RELEASE_ID"),
        started=started, finished=dt.datetime.now(dt.UTC), kind=kind,
    )  # fmt: skip
    if verify is not None:
        with s.events.step(f"read {db}'s backup back from S3 and check it"):
            verify(s3, store.bucket, record)
        record["verified"] = True
    s3store.put_json(s3, store.bucket, keys.manifest, record, sse=store.sse)
    if local_dir is not None:
        copy = localcopy.write_manifest(
            localcopy.data_path(local_dir, s.config.env, db, backup_id), record
        )
        record["local_object"] = copy["object"]
    return record


def verify_object(s3: Any, bucket: str, record: Mapping[str, object]) -> None:
    """Read the stored object back from S3: its size and SHA-256 must be the manifest's."""

    class Discard:
        def write(self, data: bytes) -> int:
            return len(data)

    size, digest = s3store.download_stream(s3, bucket, str(record["object"]), Discard())
    if size != record["size"] or digest != record["sha256"]:
        raise bk.BackupError(
            f"backup {record['backup_id']} read back from S3 does not match what was uploaded "
            f"({size} bytes, sha256 {digest[:12]}...)",
            "check the bucket's storage; the backup is not counted",
        )


def mongodb_container(s: Session, pg: Postgres) -> str | None:
    """The stack's MongoDB container when it runs (MongoDB is optional: profile `unavailable`
    here, where no image of it can be had)."""
    name = f"{s.config.require('COMPOSE_PROJECT_NAME')}-mongodb-1"
    argv = ("docker", "ps", "--quiet", "--filter", f"name=^{name}$", "--filter", "status=running")
    found = pg.runner.run(Command(argv, mutates=False)).stdout.strip()
    return name if found else None


def backup_mongodb(
    s: Session, pg: Postgres, store: s3store.S3Settings, s3: Any, container: str
) -> dict[str, object]:
    """mongodump --archive (in its container) | zstd | SHA-256 -> S3, the manifest last; a
    mongodump that fails anywhere aborts the upload, as pg_dump's does."""
    started = dt.datetime.now(dt.UTC)
    backup_id = bk.new_backup_id(started, "mongodb")
    data_key, manifest_key = bk.mongodb_keys(store.prefix, s.config.env, backup_id)
    if s.runner.dry_run:
        s.events.command(f"[{pg.runner.host}] mongodump --archive | zstd | s3 put {data_key}",
                         run=False)  # fmt: skip
        return {"backup_id": backup_id, "database": "mongodb", "dry_run": True}
    with s.events.step("back up MongoDB (mongodump --archive)"):
        data = stream_to_s3(s, pg, store, s3, bk.mongodump_argv(container), data_key, "mongodb",
                            tool="mongodump")  # fmt: skip
    record: dict[str, object] = {
        "backup_id": backup_id, "env": s.config.env, "database": "mongodb", "kind": "scheduled",
        "object": data_key, "size": data.size, "sha256": data.sha256, "compression": "zstd",
        "format": "mongodump archive", "release": s.config.get("RELEASE_ID"),
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    s3store.put_json(s3, store.bucket, manifest_key, record, sse=store.sse)
    return record


def list_backups(store: s3store.S3Settings, s3: Any, env: str, db: str) -> list[dict[str, object]]:
    """Every complete backup of `db` (those with a manifest), newest first."""
    prefix = bk.database_prefix(store.prefix, env, db)
    found = []
    for item in s3store.list_keys(s3, store.bucket, prefix):
        if item.key.endswith(".manifest.json"):
            found.append(s3store.get_json(s3, store.bucket, item.key))
    return [dict(m) for m in bk.complete(found)]


# --- restore ------------------------------------------------------------------------------


def fetch_verified(
    s: Session, store: s3store.S3Settings, s3: Any, record: Mapping[str, object], folder: Path
) -> Path:
    """The backup's object in a private local file, its size and SHA-256 checked, then read in
    full by pg_restore (`pg_restore -l` passes truncated archives; a full read does not)."""
    path = folder / "backup.dump.zst"
    with path.open("wb") as handle:
        size, digest = s3store.download_stream(s3, store.bucket, str(record["object"]), handle)
    name = record["backup_id"]
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


def dump_to_file(s: Session, pg: Postgres, db: str, path: Path) -> tuple[int, str]:
    """pg_dump -Fc (in the server's container) | zstd (here) > a private file: (size, SHA-256)."""
    dump = pg.start(pg.exec_argv("pg_dump", "-Fc", "-Z0", "-U", pg.user, db))
    dump.close_stdin()
    zstd = streams.LocalProcess(("zstd", "-q", f"-{ZSTD_LEVEL}", "-c"), stdin=subprocess.PIPE)
    pumping = streams.pump(dump.stdout, zstd)
    sink = localcopy.Tee(zstd.stdout, path)
    digest, size = hashlib.sha256(), 0
    ok = False
    try:
        while chunk := sink.read(streams.CHUNK):
            digest.update(chunk)
            size += len(chunk)
        pumping.join()
        if dump.wait() != 0 or zstd.wait() != 0:
            text = s.runner.masker(dump.error_text() or zstd.error_text())
            raise bk.BackupError(f"dumping {db} failed: {text.splitlines()[-1] if text else '-'}")
        ok = True
    finally:
        sink.close(keep=ok)
        dump.kill()
        zstd.kill()
    return size, digest.hexdigest()


def local_safety_backup(s: Session, pg: Postgres, db: str, local_dir: Path) -> dict[str, object]:
    started = dt.datetime.now(dt.UTC)
    backup_id = bk.new_backup_id(started, db, "pre-restore")
    path = localcopy.data_path(local_dir, s.config.env, db, backup_id)
    size, sha256 = dump_to_file(s, pg, db, path)
    record: dict[str, object] = {
        "backup_id": backup_id, "env": s.config.env, "database": db, "kind": "pre-restore",
        "size": size, "sha256": sha256, "schema_version": int(pg.sql(SCHEMA_SQL, db) or 0),
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    return localcopy.write_manifest(path, record)


def table_counts(pg: Postgres, db: str) -> dict[str, int]:
    out = pg.sql(COUNTS_SQL, db)
    return {line.split()[0]: int(line.split()[1]) for line in out.splitlines() if line.strip()}


def swap(pg: Postgres, db: str, restored: str, keep_as: str) -> None:
    """No new connections to `db`, terminate the open ones, then both renames in one
    transaction: `db` is either the old database or the restored one, never missing."""
    pg.sql(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false', mutates=True)
    try:
        pg.sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname IN ('{db}', '{restored}') AND pid <> pg_backend_pid()",
            mutates=True,
        )
        pg.sql(
            f'BEGIN; ALTER DATABASE "{db}" RENAME TO "{keep_as}"; '
            f'ALTER DATABASE "{restored}" RENAME TO "{db}"; COMMIT;',
            mutates=True,
        )
    except SuiteError:
        pg.sql(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true', mutates=True)
        raise
    # the kept copy opens again for whoever needs to look into it (no service uses its name)
    pg.sql(f'ALTER DATABASE "{keep_as}" ALLOW_CONNECTIONS true', mutates=True)


@dataclass
class RestoreOutcome:
    database: str
    backup: Mapping[str, object]
    safety_backup: str
    kept_as: str
    counts: dict[str, int]
    schema_version: int
    seconds: float


def restore_database(
    s: Session,
    pg: Postgres,
    store: s3store.S3Settings,
    s3: Any,
    db: str,
    record: Mapping[str, object],
    confirm: Callable[[str], None],
    wait_timeout: float = 120,
    local_dir: Path | None = None,
) -> RestoreOutcome:
    """`record` restored into `db`; from its local copy (and with a local safety backup) when
    `local_dir` is given, else from S3."""
    started = time.monotonic()
    name = str(record["backup_id"])
    with tempfile.TemporaryDirectory(prefix="restore-") as tmp:
        folder = Path(tmp)
        with s.events.step(f"verify backup {name}: size, SHA-256, full read by pg_restore"):
            if local_dir is not None:
                path = localcopy.verified(record)
            else:
                path = fetch_verified(s, store, s3, record, folder)
            pg_restore_from(s, pg, path, ("-f", "/dev/null"), f"reading backup {name}")
        confirm(name)
        if s.runner.dry_run:
            s.events.command(f"[local] restore {name} into {db} (safety backup first)", run=False)
            return RestoreOutcome(db, record, "", "", {}, 0, 0.0)
        return apply_restore(s, pg, store, s3, db, path, record, wait_timeout, started, local_dir)


def apply_restore(
    s: Session,
    pg: Postgres,
    store: s3store.S3Settings,
    s3: Any,
    db: str,
    path: Path,
    record: Mapping[str, object],
    wait_timeout: float,
    started: float,
    local_dir: Path | None = None,
) -> RestoreOutcome:
    """A verified local dump (zstd) put in place of `db`: safety backup (into S3, or into
    `local_dir` for a restore from a local copy), restore into a new database and check it, swap
    the names in one transaction, restart the owner."""
    with s.events.step(f"safety backup of {db} as it is now"):
        if local_dir is not None:
            safety = local_safety_backup(s, pg, db, local_dir)
        else:
            safety = backup_database(s, pg, store, s3, db, kind="pre-restore")
    restored, keep_as = bk.restore_names(db, dt.datetime.now(dt.UTC))
    with s.events.step(f"restore into a new database {restored}"):
        schema, counts = restore_into(s, pg, path, record, restored)
    for table, rows in sorted(counts.items()):
        s.events.info(f"  {table}: {rows} rows")
    with s.events.step(f"swap {restored} in as {db} (the old one kept as {keep_as})"):
        swap(pg, db, restored, keep_as)
    restart_owner(s, pg, db, wait_timeout)
    return RestoreOutcome(db, record, str(safety["backup_id"]), keep_as, counts, schema,
                          time.monotonic() - started)  # fmt: skip


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
    pg.sql(f'DROP DATABASE "{target}"', mutates=True)
    pg.sql(f'CREATE DATABASE "{target}"', mutates=True)
    return False


def restore_into(
    s: Session, pg: Postgres, path: Path, record: Mapping[str, object], target: str
) -> tuple[int, dict[str, int]]:
    """A new database `target` from the verified file, checked: its schema version must be the
    manifest's. Returns it and every table's row count; on any failure `target` is dropped."""
    pg.sql(f'CREATE DATABASE "{target}"', mutates=True)
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
        pg.sql(f'DROP DATABASE IF EXISTS "{target}"', mutates=True)
        raise


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


def drill(s: Session, pg: Postgres, store: s3store.S3Settings, s3: Any, db: str) -> DrillResult:
    """The newest backup of `db` restored into a scratch database, verified, dropped: the
    measured time is the RTO of that database, the backup's age its current RPO."""
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
        pg.sql(f'DROP DATABASE "{scratch}"', mutates=True)
    return DrillResult(db, str(record["backup_id"]), age, seconds, sum(counts.values()))


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
        stamp = name.rsplit("_", 1)[-1]
        try:
            when = dt.datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)
        except ValueError:
            continue
        if now - when > dt.timedelta(days=keep_days):
            pg.sql(f'DROP DATABASE "{name}"', mutates=True)
            gone.append(name)
    return gone


def open_s3(s: Session) -> tuple[s3store.S3Settings, Any]:
    store = s3store.settings(s.config)
    if store.secret_access_key:
        s.runner.masker.add(store.secret_access_key)
    return store, s3store.client(store)


def prune(
    s: Session, store: s3store.S3Settings, s3: Any, db: str, days: int, keep: int
) -> list[str]:
    """Backups of `db` older than `days`, beyond the newest `keep`; only under the prefix."""
    found = list_backups(store, s3, s.config.env, db)
    gone = bk.to_prune(found, dt.datetime.now(dt.UTC), days, keep)
    for record in gone:
        keys = [k for k in bk.object_keys(record) if k]
        if s.runner.dry_run:
            s.events.command(f"[local] s3 delete {' '.join(keys)}", run=False)
        else:
            s3store.delete_keys(s3, store.bucket, keys, store.folder)
    return [str(r["backup_id"]) for r in gone]
