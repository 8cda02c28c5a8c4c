"""Point-in-time recovery: WAL segments and base backups in S3, and which of them a recovery to a
moment needs. Pure functions only; deploysuite.backup.agent ships the files, deploysuite.backup.pitr
replays them.

    <S3_PREFIX>/<env>/postgres-wal/<system id>/<WAL file>.zst        one object per WAL file
    <S3_PREFIX>/<env>/postgres-base/<YYYYMMDD>/<id>.tar.zst          pg_basebackup -Ft, zstd
    <S3_PREFIX>/<env>/postgres-base/<YYYYMMDD>/<id>.manifest.json    written last

Segment names are TTTTTTTTLLLLLLLLSSSSSSSS (timeline, log, segment) with PostgreSQL's default
16 MiB segments: 256 segments a log.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from deploysuite.backup.catalog import BackupError

SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")
ARCHIVABLE_RE = re.compile(
    r"^([0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)$"
)
SEGMENTS_PER_LOG = 0x100000000 // (16 * 1024 * 1024)


def is_archivable(name: str) -> bool:
    """A finished file of the archive (not a copy still being written, `.part`)."""
    return bool(ARCHIVABLE_RE.match(name))


def wal_folder(s3_prefix: str, env: str, system_id: str) -> str:
    """One folder a cluster (its system identifier): a cluster created anew starts its segment
    names again at 1 and must never overwrite the archive of the one before."""
    return f"{s3_prefix.strip('/')}/{env}/postgres-wal/{system_id}/"


def wal_key(s3_prefix: str, env: str, system_id: str, name: str) -> str:
    return f"{wal_folder(s3_prefix, env, system_id)}{name}.zst"


def base_folder(s3_prefix: str, env: str) -> str:
    return f"{s3_prefix.strip('/')}/{env}/postgres-base/"


def base_keys(s3_prefix: str, env: str, backup_id: str) -> tuple[str, str]:
    """(data object, manifest) of a base backup."""
    stem = f"{base_folder(s3_prefix, env)}{backup_id[:8]}/{backup_id}"
    return f"{stem}.tar.zst", f"{stem}.manifest.json"


def split(name: str) -> tuple[int, int]:
    """Segment name -> (timeline, segment number)."""
    if not SEGMENT_RE.match(name):
        raise BackupError(f"{name!r} is not a WAL segment name")
    timeline, log, seg = int(name[:8], 16), int(name[8:16], 16), int(name[16:], 16)
    return timeline, log * SEGMENTS_PER_LOG + seg


def segment_name(timeline: int, number: int) -> str:
    log, seg = divmod(number, SEGMENTS_PER_LOG)
    return f"{timeline:08X}{log:08X}{seg:08X}"


def parse_target_time(text: str, now: dt.datetime) -> dt.datetime:
    """`2024-01-15T10:42:00Z` (or with an offset) -> an aware UTC time, not in the future."""
    fix = "give an ISO 8601 time with its zone, e.g. --target-time 2024-01-15T10:42:00Z"
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BackupError(f"bad target time {text!r}", fix) from None
    if when.tzinfo is None:
        raise BackupError(f"target time {text!r} has no time zone", fix)
    when = when.astimezone(dt.UTC)
    if when > now:
        raise BackupError(f"target time {text} is in the future", "give a time in the past")
    return when


def finished(record: Mapping[str, object]) -> dt.datetime:
    return dt.datetime.fromisoformat(str(record["finished"]))


def choose_base(
    manifests: Sequence[Mapping[str, object]], target: dt.datetime
) -> Mapping[str, object]:
    """The newest complete base backup that had finished by `target` (replay starts there)."""
    ok = [m for m in manifests if m.get("object") and m.get("sha256") and m.get("wal_start")]
    before = [m for m in ok if finished(m) <= target]
    if not before:
        oldest = min((str(m["finished"]) for m in ok), default=None)
        raise BackupError(
            f"no base backup had finished by {target:%Y-%m-%dT%H:%M:%SZ}"
            + (f"; the oldest finished at {oldest}" if oldest else "; there is none"),
            "pick a later --target-time, or restore a dump with --date",
        )
    return max(before, key=finished)


@dataclass(frozen=True)
class ArchivedWal:
    name: str
    last_modified: dt.datetime


def needed_wal(
    archived: Iterable[ArchivedWal], start: str, target: dt.datetime, end: str | None = None
) -> list[str]:
    """The WAL files a replay from `start` to `target` may read: every history file, and the
    unbroken run of segments of `start`'s timeline from `start` on. A segment is archived after
    its last record, but how long after is unknown, so the whole run goes to the replay, which
    stops at the target itself; what is certain is refused here: a run that ends before `end`
    (the base backup's last segment), or whose newest segment was archived before `target`."""
    timeline, first = split(start)
    by_number: dict[int, ArchivedWal] = {}
    histories = []
    for item in archived:
        if item.name.endswith(".history"):
            histories.append(item.name)
        elif SEGMENT_RE.match(item.name):
            tl, number = split(item.name)
            if tl == timeline and number >= first:
                by_number[number] = item
    if first not in by_number:
        raise BackupError(
            f"WAL segment {start}, where the base backup starts, is not in the archive",
            "take a new base backup (the backup service does every BASEBACKUP_INTERVAL_HOURS)",
        )
    run, number = [], first
    while number in by_number:
        run.append(by_number[number])
        number += 1
    last, gap = run[-1], segment_name(timeline, number)
    if end is not None and split(end)[1] > split(last.name)[1]:
        raise BackupError(
            f"the WAL archive stops at {last.name} ({gap} is missing), before {end} where the "
            "base backup becomes consistent",
            "pick another base backup's time, or restore a dump with --date",
        )
    if last.last_modified < target:
        raise BackupError(
            f"the WAL archive reaches only {last.last_modified:%Y-%m-%dT%H:%M:%SZ} (segment "
            f"{last.name}; {gap} is missing): it cannot replay to {target:%Y-%m-%dT%H:%M:%SZ}",
            "pick an earlier --target-time; the newest WAL reaches S3 within "
            "POSTGRES_ARCHIVE_TIMEOUT",
        )
    return sorted(histories) + [w.name for w in run]


def recovery_options(target: dt.datetime, wal_dir: str) -> list[str]:
    """postgres -c options of a replay to `target` that then opens the database for writes; the
    scratch server archives nothing and listens on no network."""
    settings = {
        "restore_command": f"cp {wal_dir}/%f %p",
        "recovery_target_time": f"{target:%Y-%m-%d %H:%M:%S+00}",
        "recovery_target_action": "promote",
        "archive_mode": "off",
        "listen_addresses": "",
    }
    return [f"-c {key}='{value}'" for key, value in settings.items()]


def health_problems(
    status: Mapping[str, object],
    now: dt.datetime,
    *,
    rpo_hours: float,
    wal_archiving: bool,
    wal_max_lag_seconds: float,
    heartbeat_seconds: float = 300,
) -> list[str]:
    """Why the backup service is unhealthy (empty: healthy), from the state its agent records."""
    problems = []

    def age(key: str) -> float | None:
        value = status.get(key)
        if not value:
            return None
        return (now - dt.datetime.fromisoformat(str(value))).total_seconds()

    beat = age("heartbeat")
    if beat is None or beat > heartbeat_seconds:
        problems.append("the agent's loop has not run for "
                        + ("ever" if beat is None else f"{beat:.0f} s"))  # fmt: skip
    if status.get("last_error"):
        problems.append(f"the last run failed: {status['last_error']}")
    newest = age("newest_verified")
    if newest is None:
        problems.append("no verified backup yet")
    elif newest > rpo_hours * 3600:
        problems.append(f"the newest verified backup is {newest / 3600:.1f} h old "
                        f"(RPO {rpo_hours:g} h)")  # fmt: skip
    if wal_archiving:
        spool = status.get("wal_spool_oldest_seconds")
        if isinstance(spool, int | float) and spool > wal_max_lag_seconds:
            problems.append(f"WAL archiving is behind: a segment has waited {spool:.0f} s in the "
                            f"spool (limit {wal_max_lag_seconds:g} s)")  # fmt: skip
        failed, archived = status.get("archiver_last_failed"), status.get("archiver_last_archived")
        if failed and (not archived or str(failed) > str(archived)):
            problems.append(f"PostgreSQL's archive_command is failing (last failure {failed}, "
                            f"last success {archived or 'never'})")  # fmt: skip
        if not status.get("newest_base"):
            problems.append("no base backup yet (point-in-time recovery needs one)")
    return problems
