"""The backup service's state (status.json, written by deploysuite.backup.agent) as Prometheus
metrics in the text exposition format, so that the RPO, a failed run and WAL shipping that falls
behind become alerts (prometheus/rules/backups.yml.j2) rather than only a container's health.

Pure: the agent's `GET /metrics` reads the state file and renders it with `status_metrics` on
each scrape. A sample whose value is absent or malformed is left out: an absent timestamp written
as 0 would read as a backup taken in 1970, and one bad field must not blind the whole scrape.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from deploysuite.backup import wal

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The jobs the agent's `guard` runs, as the prefix of `last_error` ("dumps: ...") names them.
Job = Literal["dumps", "base", "wal"]


@dataclass(frozen=True)
class Sample:
    value: float
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class MetricFamily:
    name: str
    kind: Literal["gauge", "counter"]
    help: str
    samples: tuple[Sample, ...]


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """Whole numbers without a fraction (unix seconds, counts), others as Python's shortest
    round-tripping form, which Prometheus's parser reads as is."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def render_families(families: Iterable[MetricFamily]) -> str:
    """Families without a sample are left out entirely: a HELP line for a series that does not
    exist would only suggest that it does."""
    lines: list[str] = []
    for family in families:
        if not family.samples:
            continue
        lines.append(f"# HELP {family.name} {escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for sample in family.samples:
            labels = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sample.labels)
            selector = f"{family.name}{{{labels}}}" if labels else family.name
            lines.append(f"{selector} {format_value(sample.value)}")
    return "".join(line + "\n" for line in lines)


def unix_seconds(value: object) -> float | None:
    """An ISO time with its offset (as the agent's `iso()` writes it) -> unix seconds. A time
    without an offset is refused like any malformed one: it has no single meaning."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return when.timestamp()


def finite_number(value: object) -> float | None:
    # bool is an int to Python, but `true` in the state file is no count of anything
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def last_run_success(status: Mapping[str, object], job: Job) -> float | None:
    """1 when the job's last run succeeded, 0 when it failed, None when it never ran.

    `last_error` holds only the latest failure of any job, so a dump that failed before a WAL
    shipment failed would read as fine from it alone; `<job>_retry_at`, which `guard` sets on a
    failure and clears on the next success, keeps the dump's and the base backup's failure."""
    if str(status.get("last_error") or "").startswith(f"{job}:"):
        return 0
    if job != "wal" and status.get(f"{job}_retry_at"):
        return 0
    if job == "wal":
        ran = bool(status.get("wal_last_shipped_at")) or "wal_shipped" in status
    else:
        ran = bool(status.get(job))
    return 1 if ran else None


def timestamp_family(name: str, help_text: str, value: object) -> MetricFamily:
    seconds = unix_seconds(value)
    samples = () if seconds is None else (Sample(seconds),)
    return MetricFamily(name, "gauge", help_text, samples)


def status_metrics(
    status: Mapping[str, object],
    now: dt.datetime,
    *,
    rpo_hours: float,
    wal_archiving: bool,
    wal_max_lag_seconds: float,
) -> str:
    """The Prometheus text exposition of the agent's state at `now`. The configured objectives
    are exported too, so that alert rules can compare against each environment's own values."""
    jobs: tuple[Job, ...] = ("dumps", "base", "wal") if wal_archiving else ("dumps",)
    run_samples = tuple(
        Sample(result, (("run", job),))
        for job in jobs
        if (result := last_run_success(status, job)) is not None
    )
    try:
        problems = wal.health_problems(
            status, now, rpo_hours=rpo_hours, wal_archiving=wal_archiving,
            wal_max_lag_seconds=wal_max_lag_seconds,
        )  # fmt: skip
        healthy = not problems
    except (ValueError, TypeError):
        # A state the healthcheck cannot read makes the healthcheck fail as well.
        healthy = False

    families = [
        timestamp_family(
            "backup_newest_verified_timestamp_seconds",
            "Unix time the newest verified dump of every database finished (the oldest of the "
            "databases' newest).",
            status.get("newest_verified"),
        ),
        timestamp_family(
            "backup_newest_base_timestamp_seconds",
            "Unix time the newest verified base backup finished.",
            status.get("newest_base"),
        ),
        MetricFamily(
            "backup_last_run_success",
            "gauge",
            "Whether the last run of a job succeeded (1) or failed (0); absent for a job that "
            "never ran.",
            run_samples,
        ),
        timestamp_family(
            "backup_last_error_timestamp_seconds",
            "Unix time the last failed run started.",
            status.get("last_error_at"),
        ),
    ]
    if wal_archiving:
        spool = finite_number(status.get("wal_spool_oldest_seconds"))
        shipped = finite_number(status.get("wal_shipped"))
        families += [
            MetricFamily(
                "backup_wal_spool_oldest_seconds",
                "gauge",
                "Seconds the oldest WAL file in the spool has waited to be shipped to S3.",
                () if spool is None else (Sample(spool),),
            ),
            MetricFamily(
                "backup_wal_shipped_total",
                "counter",
                "WAL files shipped to S3.",
                () if shipped is None or shipped < 0 else (Sample(shipped),),
            ),
            timestamp_family(
                "backup_wal_last_shipped_timestamp_seconds",
                "Unix time the last WAL file was shipped to S3.",
                status.get("wal_last_shipped_at"),
            ),
            timestamp_family(
                "backup_archiver_last_failed_timestamp_seconds",
                "Unix time PostgreSQL's archive_command last failed.",
                status.get("archiver_last_failed"),
            ),
            timestamp_family(
                "backup_archiver_last_archived_timestamp_seconds",
                "Unix time PostgreSQL's archive_command last succeeded.",
                status.get("archiver_last_archived"),
            ),
        ]
    families += [
        timestamp_family(
            "backup_heartbeat_timestamp_seconds",
            "Unix time the agent's loop last ran.",
            status.get("heartbeat"),
        ),
        MetricFamily(
            "backup_rpo_seconds",
            "gauge",
            "The configured recovery point objective (BACKUP_RPO_HOURS), seconds.",
            (Sample(rpo_hours * 3600),),
        ),
        MetricFamily(
            "backup_wal_max_lag_seconds",
            "gauge",
            "The configured longest wait of a WAL file in the spool (WAL_MAX_LAG_SECONDS).",
            (Sample(wal_max_lag_seconds),),
        ),
        MetricFamily(
            "backup_healthy",
            "gauge",
            "Whether the backup service's healthcheck finds no problem (1) or some (0).",
            (Sample(1 if healthy else 0),),
        ),
    ]
    return render_families(families)
