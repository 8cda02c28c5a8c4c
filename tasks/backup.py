"""Backup and restore tasks: inv backup, inv backup.list, inv restore."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from invoke import Collection

from deploysuite.backup import catalog as bk
from deploysuite.backup import dump, localcopy, postgres
from deploysuite.backup import restore as restores
from deploysuite.backup.context import BackupContext, open_bucket
from deploysuite.backup.drill import known_rto_line
from deploysuite.cli import confirm, task
from deploysuite.config.session import session
from deploysuite.core.errors import SuiteError
from deploysuite.deploy.preflight_items import records

LIST_COLUMNS = ["backup_id", "database", "kind", "size", "schema", "finished"]


@task(
    default=True,
    iterable=["set_"],
    help={
        "db": "One database (auth, chat, billing, analytics by default names), mongodb, or "
        "all (MongoDB too when the stack runs it).",
        "prune": "After every backup completed, apply the retention (see backup.prune).",
        "days": "With --prune: retention in days.",
        "keep": "With --prune: newest backups always kept, whatever their age.",
        "local_dir": "Also keep a local copy of each dump in this folder (for a restore "
        "--from local when S3 cannot be reached).",
        "verify": "Read each dump back from S3 and check it before its manifest is written.",
    },
)
def backup(
    c, env="local", db="all", dry_run=False, json=False, verbose=False, set_=None, prune=False,
    days=30, keep=7, local_dir="", verify=False,
):  # fmt: skip
    """Back up PostgreSQL: pg_dump -Fc | zstd | SHA-256 straight into S3; manifest last."""
    s = session(env, dry_run=dry_run, json=json, verbose=verbose, overrides=set_ or [])
    names = [] if db == "mongodb" else postgres.chosen_databases(s.config, db)
    store, s3 = open_bucket(s)
    with postgres.postgres_for(s) as pg:
        ctx = BackupContext(s, pg, store, s3)
        records = [
            dump.backup_database(ctx, name, local_dir=Path(local_dir) if local_dir else None,
                verify=dump.verify_object if verify else None,
            )
            for name in names
        ]  # fmt: skip
        mongodb = dump.mongodb_container(s, pg) if db in ("all", "mongodb") else None
        if db == "mongodb" and not mongodb:
            raise SuiteError(f"MongoDB does not run in the '{env}' stack", "back up --db all")
        if mongodb:
            records.append(dump.backup_mongodb(ctx, mongodb))
    if prune:  # only here: every backup above completed and has its manifest
        for name in names:
            gone = dump.prune(s, store, s3, name, int(days), int(keep))
            if local_dir:
                gone += localcopy.prune(Path(local_dir), env, name, int(days), int(keep), dry_run)
            if gone:
                s.events.info(f"  {name}: pruned {len(gone)} old backup(s)")
    rows = [
        {
            "database": str(r.get("database")), "backup_id": str(r.get("backup_id")),
            "size": bk.human_bytes(float(r.get("size") or 0)),  # type: ignore[arg-type]
            "sha256": str(r.get("sha256", ""))[:16], "schema": str(r.get("schema_version", "")),
        }
        for r in records
    ]  # fmt: skip
    s.events.result(
        rows, ["database", "backup_id", "size", "sha256", "schema"],
        title=f"backups of '{env}' in s3://{store.bucket}/{store.prefix}/{env}/:",
        extra={"env": env, "backups": records},
    )  # fmt: skip


FROM_HELP = {
    "from_": "Where the backups are: s3 (default) or local (the copies of --local-dir).",
    "local_dir": "The folder of the local copies (inv backup --local-dir).",
}


@task(name="list", iterable=["set_"], help={"db": "One database, or all.", **FROM_HELP})
def list_(c, env="local", db="all", json=False, verbose=False, set_=None, from_="s3",
          local_dir=""):  # fmt: skip
    """List the complete backups (those with a manifest), newest first."""
    s = session(env, json=json, verbose=verbose, overrides=set_ or [])
    folder = localcopy.source_folder(from_, local_dir)
    if folder is not None:
        found = [m for name in postgres.chosen_databases(s.config, db)
                 for m in localcopy.list_backups(folder, env, name)]  # fmt: skip
    else:
        store, s3 = open_bucket(s)
        found = [m for name in postgres.chosen_databases(s.config, db)
                 for m in dump.list_backups(store, s3, env, name)]  # fmt: skip
    rows = [
        {
            "backup_id": str(m["backup_id"]), "database": str(m["database"]),
            "kind": str(m.get("kind", "")),
            "size": bk.human_bytes(float(m["size"])),  # type: ignore[arg-type]
            "schema": str(m.get("schema_version", "")), "finished": str(m.get("finished", "")),
        }
        for m in sorted(found, key=lambda m: str(m["backup_id"]), reverse=True)
    ]  # fmt: skip
    s.events.result(rows, LIST_COLUMNS, title=f"backups of '{env}' ({len(rows)}):",
                    extra={"env": env, "backups": found})  # fmt: skip


@task(
    iterable=["set_"],
    help={
        "date": "Day of the backup, YYYYMMDD: the newest complete one of that day is taken.",
        "db": "The database to restore (one; default auth's).",
        "backup_id": "An exact backup (inv backup.list) instead of --date.",
        "keep_days": "Days the replaced database is kept (renamed <db>_pre_restore_<time>).",
        "target_time": "Point-in-time recovery to this moment (2024-01-15T10:42:00Z): base "
        "backup + WAL replayed in a scratch server, then every database (or --db) swapped in.",
        **FROM_HELP,
    },
)
def restore(
    c, env="local", date="", db="", backup_id="", yes=False, dry_run=False, json=False,
    verbose=False, set_=None, keep_days=7, target_time="", from_="s3", local_dir="",
):  # fmt: skip
    """Restore a database from S3: verify, restore aside, check, swap, restart, back up the old.

    The previous database is kept on the server (renamed, untouched) and then backed up while
    the restored one already serves."""
    s = session(env, dry_run=dry_run, json=json, verbose=verbose, overrides=set_ or [])
    if target_time:
        if date or backup_id:
            raise SuiteError("--target-time replays WAL; it takes neither --date nor --backup-id",
                             "give one of them")  # fmt: skip
        restore_to_time(s, env, target_time, db, yes, dry_run, int(keep_days))
        return
    day = bk.parse_day(date) if date else None
    folder = localcopy.source_folder(from_, local_dir)
    name = db or s.config.require("AUTH_DB_NAME")
    postgres.chosen_databases(s.config, name)
    if folder is not None:
        store, s3 = None, None  # S3 may be what is down: a local restore never needs it
        found = localcopy.list_backups(folder, env, name)
    else:
        store, s3 = open_bucket(s)
        found = dump.list_backups(store, s3, env, name)
    record = bk.choose(found, day, backup_id or None, name)
    if store is not None and s3 is not None:  # the newest drill: how long this restore takes
        place = records.RecordPlace(env, records.local_folder(s), store, s3)
        try:
            expected = known_rto_line(records.newest(place, "drills"), name)
        except SuiteError:
            expected = None
        s.events.info(expected or f"no drill record for {name}: inv dr.drill --env={env} "
                      "measures how long its restore takes")  # fmt: skip

    def ask(backup_name: str) -> None:
        s.events.info(f"restore {name} of '{env}' from {backup_name} (verified)")
        if env == "production" and not dry_run:
            confirm(f"replace database {name} on production", name, yes=yes)

    with postgres.postgres_for(s) as pg:
        ctx = BackupContext(s, pg, store, s3)
        outcome = restores.restore_database(ctx, name, record, ask,
                                             local_dir=folder)  # fmt: skip
        if not dry_run:
            restores.drop_old_pre_restore(pg, int(keep_days), dt.datetime.now(dt.UTC))
    s.events.result(
        [{"table": t, "rows": str(n)} for t, n in sorted(outcome.counts.items())],
        ["table", "rows"],
        title=f"restored {name} of '{env}' from {record['backup_id']}: serving after "
        f"{outcome.serving_seconds:.1f} s, {outcome.seconds:.1f} s in all (schema "
        f"{outcome.schema_version}; previous database kept as {outcome.kept_as}; its backup "
        f"{outcome.safety_backup or 'FAILED: ' + outcome.safety_error})",
        extra={"env": env, "database": name, "backup": record, "seconds": outcome.seconds,
               "serving_seconds": outcome.serving_seconds,
               "safety_backup": outcome.safety_backup, "safety_error": outcome.safety_error,
               "kept_as": outcome.kept_as, "counts": outcome.counts, "dry_run": dry_run},
    )  # fmt: skip


def restore_to_time(s, env: str, text: str, db: str, yes: bool, dry_run: bool, keep_days: int):
    from deploysuite.backup import pitr, wal

    now = dt.datetime.now(dt.UTC)
    target = wal.parse_target_time(text, now)
    names = postgres.chosen_databases(s.config, db or "all")
    store, s3 = open_bucket(s)

    def ask(label: str) -> None:
        s.events.info(f"replayed {label}; restoring {', '.join(names)} of '{env}'")
        if env == "production" and not dry_run:
            confirm(f"replace {', '.join(names)} on production", "production", yes=yes)

    with postgres.postgres_for(s) as pg:
        ctx = BackupContext(s, pg, store, s3)
        outcomes = pitr.restore_to_time(ctx, target, names, ask)
        if not dry_run:
            restores.drop_old_pre_restore(pg, keep_days, now)
    rows = [{"database": o.database, "schema": str(o.schema_version),
             "rows": str(sum(o.counts.values())), "safety_backup": o.safety_backup,
             "kept_as": o.kept_as, "seconds": f"{o.seconds:.1f}"} for o in outcomes]  # fmt: skip
    s.events.result(
        rows, ["database", "schema", "rows", "safety_backup", "kept_as", "seconds"],
        title=f"restored '{env}' to {target:%Y-%m-%dT%H:%M:%SZ}:",
        extra={"env": env, "target_time": target.isoformat(), "restored": rows,
               "dry_run": dry_run},
    )  # fmt: skip


@task(
    name="prune",
    iterable=["set_"],
    help={
        "db": "One database, or all.",
        "days": "Backups older than this many days go...",
        "keep": "...except the newest N, which stay whatever their age.",
    },
)
def prune_(c, env="local", db="all", days=30, keep=7, dry_run=False, json=False, set_=None):
    """Apply the retention in S3: older than --days goes, the newest --keep always stay."""
    s = session(env, dry_run=dry_run, json=json, overrides=set_ or [])
    store, s3 = open_bucket(s)
    rows = []
    for name in postgres.chosen_databases(s.config, db):
        for backup_id in dump.prune(s, store, s3, name, int(days), int(keep)):
            rows.append({"database": name, "backup_id": backup_id})
    verb = "would delete" if dry_run else "deleted"
    s.events.result(rows, ["database", "backup_id"], title=f"{verb} {len(rows)} backup(s):",
                    extra={"env": env, "deleted": rows, "dry_run": dry_run})  # fmt: skip


@task(
    name="lifecycle",
    iterable=["set_"],
    help={
        "days": "Objects under the suite's prefix expire after this many days.",
        "archive_after": "Move objects to --archive-class after this many days (0: never).",
        "archive_class": "Storage class of the archive (e.g. GLACIER, DEEP_ARCHIVE).",
    },
)
def lifecycle_(
    c, env="local", days=30, archive_after=0, archive_class="GLACIER", dry_run=False,
    json=False, set_=None,
):  # fmt: skip
    """Apply the S3 lifecycle rule of the suite's prefix (expiry, stale uploads, archive).

    Incomplete multipart uploads are aborted after a day; other rules of the bucket are kept."""
    from deploysuite.backup import s3 as s3store

    s = session(env, dry_run=dry_run, json=json, overrides=set_ or [])
    store, s3 = open_bucket(s)
    rules = bk.lifecycle_rules(store.prefix, int(days), int(archive_after) or None, archive_class)
    if dry_run:
        s.events.command(f"[local] s3 put-bucket-lifecycle {store.bucket} {rules}", run=False)
        kept = 0
    else:
        kept = s3store.apply_lifecycle(s3, store.bucket, rules)
    s.events.result(
        [{"rule": str(r["ID"]), "prefix": str(r["Filter"]), "expiry_days": str(days),
          "archive": f"{archive_class} after {archive_after} d" if archive_after else "-"}
         for r in rules],
        ["rule", "prefix", "expiry_days", "archive"],
        title=f"lifecycle of s3://{store.bucket} ({kept} rule(s) of others kept):",
        extra={"env": env, "rules": rules, "others_kept": kept, "dry_run": dry_run},
    )  # fmt: skip


ns = Collection("backup", backup, list_, prune_, lifecycle_)
restore_task = restore
