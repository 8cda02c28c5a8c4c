"""Backups of the stack's databases, streamed to S3.

    pg_dump -Fc (in the server's own container, so never older than the server)
    | zstd | SHA-256 | S3 multipart upload, one part in memory at a time; the manifest is
    written only after the data object completed, so a partial upload never counts.

Also: MongoDB's archive when the stack runs it, a local file for a safety copy, retention, and
the deploy's backup before migrations.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from deploysuite.backup import catalog as bk
from deploysuite.backup import localcopy, transfer
from deploysuite.backup import s3 as s3store
from deploysuite.backup.context import BackupContext, open_context
from deploysuite.backup.postgres import SCHEMA_SQL, Postgres, databases, literal
from deploysuite.config.session import Session
from deploysuite.core import streams
from deploysuite.core.runner import Command

ZSTD_LEVEL = "3"


def stream_to_s3(
    ctx: BackupContext,
    producer: tuple[str, ...],
    key: str,
    label: str,
    expected: int | None = None,
    copy_to: Path | None = None,
    tool: str = "pg_dump",
) -> transfer.Uploaded:
    """producer (in the server's container, on its host) | zstd (here) -> S3. A producer that
    fails anywhere fails the upload before it completes (the multipart upload is aborted): a
    dead pg_dump never yields an object. With `copy_to`, the same bytes also go to that local
    file, which is removed again when the upload fails."""
    s, pg, store, s3 = ctx.s, ctx.pg, ctx.store, ctx.s3
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
        uploaded = transfer.upload_stream(
            s3, store.bucket, key, reader,
            part_size=transfer.part_size(expected, store.part_size_mb * s3store.MiB),
            sse=store.sse, metadata={"producer": producer[-1][:60]}, on_progress=progress,
            before_complete=producers_ok, checksum=store.part_checksum,
        )  # fmt: skip
        return uploaded
    finally:
        if tee is not None:
            tee.close(keep=uploaded is not None)
        dump.kill()
        zstd.kill()


def backup_database(
    ctx: BackupContext,
    db: str,
    kind: str = "scheduled",
    verify: Callable[[Any, str, dict[str, object]], None] | None = None,
    local_dir: Path | None = None,
    source: str | None = None,
) -> dict[str, object]:
    """One database dumped into S3, its manifest last. With `verify`, the stored object is read
    back and checked before the manifest is written (it then says "verified": true). With
    `local_dir`, a local copy of the same bytes is kept there too (localcopy). `source`: the
    database to dump when it is not `db` itself (a restore's kept previous copy of `db`)."""
    source = source or db
    s, pg, store, s3 = ctx.s, ctx.pg, ctx.store, ctx.s3
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
    size = int(pg.sql(f"SELECT pg_database_size({literal(source)})") or 0)
    schema = int(pg.sql(SCHEMA_SQL, source) or 0)
    backup_id = bk.new_backup_id(started, db, "" if kind == "scheduled" else kind)
    keys = bk.keys_for(store.prefix, s.config.env, db, backup_id)
    if s.runner.dry_run:
        s.events.command(f"[{pg.runner.host}] pg_dump -Fc {source} | zstd | s3 put {keys.data}",
                         run=False)  # fmt: skip
        return {"backup_id": backup_id, "database": db, "dry_run": True}
    with s.events.step(f"back up {db} ({bk.human_bytes(size)} in the server)"):
        data = stream_to_s3(ctx, pg.exec_argv("pg_dump", "-Fc", "-Z0", "-U", pg.user, source),
            keys.data, db, expected=size,
            copy_to=localcopy.data_path(local_dir, s.config.env, db, backup_id) if local_dir
            else None,
        )  # fmt: skip
        roles = stream_to_s3(ctx, pg.exec_argv("pg_dumpall", "--globals-only", "-U", pg.user),
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


def verify_object(s3: s3store.S3Client, bucket: str, record: Mapping[str, object]) -> None:
    """Read the stored object back from S3: its size and SHA-256 must be the manifest's."""

    class Discard:
        def write(self, data: bytes) -> int:
            return len(data)

    size, digest = transfer.download_stream(s3, bucket, str(record["object"]), Discard())
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


def backup_mongodb(ctx: BackupContext, container: str) -> dict[str, object]:
    """mongodump --archive (in its container) | zstd | SHA-256 -> S3, the manifest last; a
    mongodump that fails anywhere aborts the upload, as pg_dump's does."""
    s, pg, store, s3 = ctx.s, ctx.pg, ctx.store, ctx.s3
    started = dt.datetime.now(dt.UTC)
    backup_id = bk.new_backup_id(started, "mongodb")
    data_key, manifest_key = bk.mongodb_keys(store.prefix, s.config.env, backup_id)
    if s.runner.dry_run:
        s.events.command(f"[{pg.runner.host}] mongodump --archive | zstd | s3 put {data_key}",
                         run=False)  # fmt: skip
        return {"backup_id": backup_id, "database": "mongodb", "dry_run": True}
    with s.events.step("back up MongoDB (mongodump --archive)"):
        data = stream_to_s3(ctx, bk.mongodump_argv(container), data_key, "mongodb",
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


def list_backups(
    store: s3store.S3Settings, s3: s3store.S3Client, env: str, db: str
) -> list[dict[str, object]]:
    """Every complete backup of `db` (those with a manifest), newest first."""
    prefix = bk.database_prefix(store.prefix, env, db)
    found = []
    for item in s3store.list_keys(s3, store.bucket, prefix):
        if item.key.endswith(".manifest.json"):
            found.append(s3store.get_json(s3, store.bucket, item.key))
    return [dict(m) for m in bk.complete(found)]


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


def local_safety_backup(
    s: Session, pg: Postgres, db: str, local_dir: Path, source: str | None = None
) -> dict[str, object]:
    """`source` (default `db`) dumped into `local_dir` as a pre-restore backup of `db`."""
    source = source or db
    started = dt.datetime.now(dt.UTC)
    backup_id = bk.new_backup_id(started, db, "pre-restore")
    path = localcopy.data_path(local_dir, s.config.env, db, backup_id)
    size, sha256 = dump_to_file(s, pg, source, path)
    record: dict[str, object] = {
        "backup_id": backup_id, "env": s.config.env, "database": db, "kind": "pre-restore",
        "size": size, "sha256": sha256, "schema_version": int(pg.sql(SCHEMA_SQL, source) or 0),
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    return localcopy.write_manifest(path, record)


def prune(
    s: Session, store: s3store.S3Settings, s3: s3store.S3Client, db: str, days: int, keep: int
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


def backup_before_migrations(s: Session, project: str, services: Sequence[str]) -> list[str]:
    """A backup of each database whose migrations are about to run (kind pre-migration), to
    S3, before the first statement; a database that does not exist yet has nothing to keep.
    `s.runner` runs on the stack's host (the deploy's connection to it)."""
    config, events = s.config, s.events
    if not config.get("S3_BUCKET"):
        events.info("  no backup before migrations: S3_BUCKET is not set (see "
                    "docs/deployment/database-backup.md)")  # fmt: skip
        return []
    owners = {service: db for db, service in databases(config).items()}
    pg = Postgres(s, s.runner, f"{project}-postgres-1", config.require("POSTGRES_USER"))
    ctx = open_context(s, pg)
    made = []
    for service in services:
        db = owners.get(service)
        if db is None or (not s.runner.dry_run and not pg.exists(db)):
            continue
        record = backup_database(ctx, db, kind="pre-migration")
        made.append(str(record["backup_id"]))
    return made
