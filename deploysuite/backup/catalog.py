"""Backups of the PostgreSQL databases: where they live in S3, what their manifest says, which
one a restore takes. Pure functions only; deploysuite.backup.postgres moves the bytes.

    <S3_PREFIX>/<env>/postgres/<db>/<YYYYMMDD>/<id>.dump.zst       pg_dump -Fc, zstd-compressed
    <S3_PREFIX>/<env>/postgres/<db>/<YYYYMMDD>/<id>.globals.sql.zst  pg_dumpall --globals-only
    <S3_PREFIX>/<env>/postgres/<db>/<YYYYMMDD>/<id>.manifest.json  written last: no manifest,
                                                                   no backup
    <S3_PREFIX>/<env>/mongodb/<YYYYMMDD>/<id>.archive.zst          mongodump --archive, zstd
    <S3_PREFIX>/<env>/mongodb/<YYYYMMDD>/<id>.manifest.json        written last
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from deploysuite.core.errors import SuiteError

DATE_RE = re.compile(r"^\d{8}$")
VERSION_RE = re.compile(r"(\d+)(?:\.(\d+))?")


class BackupError(SuiteError):
    exit_code = 11


@dataclass(frozen=True)
class BackupKeys:
    prefix: str  # <S3_PREFIX>/<env>/postgres/<db>/<YYYYMMDD>/<id>
    backup_id: str

    @property
    def data(self) -> str:
        return f"{self.prefix}.dump.zst"

    @property
    def globals(self) -> str:
        return f"{self.prefix}.globals.sql.zst"

    @property
    def manifest(self) -> str:
        return f"{self.prefix}.manifest.json"


def database_prefix(s3_prefix: str, env: str, db: str) -> str:
    return f"{s3_prefix.strip('/')}/{env}/postgres/{db}/"


def new_backup_id(now: dt.datetime, db: str, kind: str = "") -> str:
    stamp = f"{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"
    return f"{stamp}-{db}" + (f"-{kind}" if kind else "")


def keys_for(s3_prefix: str, env: str, db: str, backup_id: str) -> BackupKeys:
    day = backup_id[:8]
    return BackupKeys(f"{database_prefix(s3_prefix, env, db)}{day}/{backup_id}", backup_id)


def parse_day(text: str) -> dt.date:
    """`20240115` -> a date; anything else is one clear line."""
    fix = "give the day as YYYYMMDD, e.g. --date 20240115"
    if not DATE_RE.match(text or ""):
        raise BackupError(f"bad date {text!r}", fix)
    try:
        return dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise BackupError(f"bad date {text!r}: no such day", fix) from None


def major_version(text: str) -> int:
    """`pg_dump (PostgreSQL) 15.18 (Debian ...)` or `150018` (server_version_num) -> 15."""
    text = text.strip()
    if text.isdigit() and len(text) >= 5:
        return int(text) // 10000
    match = re.search(r"PostgreSQL\)?\s+(\d+)", text) or VERSION_RE.search(text)
    if not match:
        raise BackupError(f"cannot read a PostgreSQL version from {text[:80]!r}")
    return int(match.group(1))


def check_versions(client: int, server: int) -> None:
    """pg_dump must not be older than the server: it cannot read a newer catalog correctly."""
    if client < server:
        raise BackupError(
            f"pg_dump {client} is older than the PostgreSQL {server} server: refusing to back up",
            f"use a pg_dump of version {server} or newer (the server's own image has one)",
        )


def manifest(
    *,
    backup_id: str,
    env: str,
    db: str,
    keys: BackupKeys,
    size: int,
    sha256: str,
    globals_size: int,
    globals_sha256: str,
    pg_version: str,
    schema_version: int | None,
    release: str | None,
    started: dt.datetime,
    finished: dt.datetime,
    kind: str = "scheduled",
) -> dict[str, object]:
    return {
        "backup_id": backup_id, "env": env, "database": db, "kind": kind,
        "object": keys.data, "size": size, "sha256": sha256,
        "globals_object": keys.globals, "globals_size": globals_size,
        "globals_sha256": globals_sha256, "compression": "zstd", "format": "pg_dump custom",
        "postgres_version": pg_version, "schema_version": schema_version, "release": release,
        "started": started.astimezone(dt.UTC).isoformat(timespec="seconds"),
        "finished": finished.astimezone(dt.UTC).isoformat(timespec="seconds"),
    }  # fmt: skip


def complete(manifests: Iterable[Mapping[str, object]]) -> list[Mapping[str, object]]:
    """Backups whose manifest names an object, a size and a checksum, newest first."""
    ok = [m for m in manifests if m.get("object") and m.get("sha256") and m.get("size")]
    return sorted(ok, key=lambda m: str(m.get("backup_id")), reverse=True)


def on_day(manifests: Sequence[Mapping[str, object]], day: dt.date) -> list[Mapping[str, object]]:
    stamp = f"{day:%Y%m%d}"
    return [m for m in complete(manifests) if str(m.get("backup_id", "")).startswith(stamp)]


def nearest_days(manifests: Sequence[Mapping[str, object]], day: dt.date, n: int = 3) -> list[str]:
    """The days that do have backups, closest to `day` first (for the error message)."""
    days = {str(m.get("backup_id", ""))[:8] for m in complete(manifests)}
    parsed = sorted(
        (abs((dt.datetime.strptime(d, "%Y%m%d").date() - day).days), d)
        for d in days
        if DATE_RE.match(d)
    )
    return [d for _, d in parsed[:n]]


def choose(
    manifests: Sequence[Mapping[str, object]],
    day: dt.date | None,
    backup_id: str | None,
    db: str,
) -> Mapping[str, object]:
    """The backup a restore takes: an exact id, else the newest complete one of `day`, else the
    newest of all (safety copies taken by a restore only by their id)."""
    everything = complete(manifests)
    if backup_id:
        found = [m for m in everything if m.get("backup_id") == backup_id]
        if not found:
            raise BackupError(
                f"no complete backup {backup_id!r} of database {db}",
                "inv backup.list shows the backups there are",
            )
        return found[0]
    # a restore's own safety copies are taken only when named: "newest" means a real backup
    candidates = [m for m in everything if m.get("kind") != "pre-restore"]
    if day is not None:
        found = on_day(candidates, day)
        if not found:
            near = nearest_days(candidates, day)
            raise BackupError(
                f"no backup of database {db} on {day:%Y%m%d}"
                + (f"; nearest days with one: {', '.join(near)}" if near else "; there is none"),
                "pick one of those days with --date, or inv backup.list",
            )
        return found[0]
    if not candidates:
        raise BackupError(f"database {db} has no complete backup", "inv backup first")
    return candidates[0]


def finished_at(record: Mapping[str, object]) -> dt.datetime:
    return dt.datetime.fromisoformat(str(record.get("finished") or record.get("started")))


def to_prune(
    manifests: Sequence[Mapping[str, object]], now: dt.datetime, days: int, keep: int
) -> list[Mapping[str, object]]:
    """Backups older than `days`, except the newest `keep` complete ones whatever their age
    (a schedule that stopped must not let retention eat the last good backups)."""
    ordered = complete(manifests)
    cutoff = now - dt.timedelta(days=days)
    return [m for m in ordered[max(keep, 1) :] if finished_at(m) < cutoff]


def object_keys(record: Mapping[str, object]) -> list[str]:
    """The manifest first: a half-deleted backup must not be listed as complete."""
    manifest_key = str(record["object"]).removesuffix(".dump.zst") + ".manifest.json"
    return [manifest_key, str(record["object"]), str(record.get("globals_object") or "")]


def lifecycle_rules(
    prefix: str, days: int, archive_after: int | None, archive_class: str
) -> list[dict[str, object]]:
    """The suite's one lifecycle rule, limited to its own prefix: expiry, abort of incomplete
    multipart uploads after a day, and an optional move to an archive storage class."""
    rule: dict[str, object] = {
        "ID": "mysaaschat-backups",
        "Filter": {"Prefix": prefix.strip("/") + "/"},
        "Status": "Enabled",
        "Expiration": {"Days": days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
    }
    if archive_after:
        if archive_after >= days:
            raise BackupError(
                f"archiving after {archive_after} days is pointless with expiry after {days}",
                "give --archive-after fewer days than --days",
            )
        rule["Transitions"] = [{"Days": archive_after, "StorageClass": archive_class}]
    return [rule]


def restore_names(db: str, now: dt.datetime) -> tuple[str, str]:
    """The scratch database a restore fills, and the name the replaced one keeps."""
    stamp = f"{now.astimezone(dt.UTC):%Y%m%d%H%M%S}"
    return f"{db}_restoring_{stamp}", f"{db}_pre_restore_{stamp}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def transfer_line(label: str, done: int, total: int | None, seconds: float) -> str:
    """`label: 1.2 GiB of 4.0 GiB (30%), 85.0 MiB/s, about 34 s left`: a transfer's progress,
    with an ETA when the size is known (a manifest records every object's)."""
    rate = done / seconds if seconds > 0 else 0.0
    text = f"  {label}: {human_bytes(done)}"
    if total:
        text += f" of {human_bytes(total)} ({min(done / total, 1):.0%})"
    text += f", {human_bytes(rate)}/s"
    if total and rate > 0 and done < total:
        text += f", about {(total - done) / rate:.0f} s left"
    return text


def mongodb_keys(s3_prefix: str, env: str, backup_id: str) -> tuple[str, str]:
    """(archive object, manifest) of a MongoDB backup."""
    stem = f"{s3_prefix.strip('/')}/{env}/mongodb/{backup_id[:8]}/{backup_id}"
    return f"{stem}.archive.zst", f"{stem}.manifest.json"


def mongodump_argv(container: str) -> tuple[str, ...]:
    """mongodump of every database as one archive on stdout, inside the MongoDB container, with
    the root credentials the container already holds. The password reaches mongodump in a
    --config file made 0600 (printf is the shell's own: no process of the host shows it) and
    removed on exit; `--password` would put it in every `ps` on the host."""
    script = (
        "set -e; umask 077; f=$(mktemp); trap 'rm -f \"$f\"' EXIT; "
        'printf \'password: |-\\n  %s\\n\' "$MONGO_INITDB_ROOT_PASSWORD" > "$f"; '
        "mongodump --archive --quiet --authenticationDatabase admin "
        '--username "$MONGO_INITDB_ROOT_USERNAME" --config "$f"'
    )
    return ("docker", "exec", container, "sh", "-c", script)
