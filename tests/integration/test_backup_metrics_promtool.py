"""The backup service's metrics pass `promtool check metrics` of the stack's own Prometheus image:
names, HELP and TYPE lines and the text format as Prometheus itself reads them."""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest

from deploysuite.backup.metrics import status_metrics

pytestmark = pytest.mark.integration

# A state the agent writes with WAL archiving on, mid-incident: every metric has a sample, a
# failed base backup among them (a `job` label), and the archiver's last failure.
REALISTIC_STATUS: dict[str, object] = {
    "heartbeat": "2024-01-15T15:59:50+00:00",
    "dumps": "2024-01-15T12:00:00+00:00",
    "newest_verified": "2024-01-15T12:00:05+00:00",
    "base": "2024-01-14T02:00:00+00:00",
    "newest_base": "2024-01-14T02:10:00+00:00",
    "base_retry_at": "2024-01-15T14:15:00+00:00",
    "last_error": "base: pg_basebackup exited 1: could not connect to server",
    "last_error_at": "2024-01-15T14:00:00+00:00",
    "wal_shipped": 42,
    "wal_last_shipped": "000000010000000000000029",
    "wal_last_shipped_at": "2024-01-15T15:58:00+00:00",
    "wal_spool_oldest_seconds": 12,
    "archiver_last_archived": "2024-01-15T15:57:59+00:00",
    "archiver_last_failed": "2024-01-15T15:58:30+00:00",
}


def test_promtool_accepts_the_backup_metrics(base_images: dict[str, str]):
    text = status_metrics(
        REALISTIC_STATUS, dt.datetime(2024, 1, 15, 16, 0, tzinfo=dt.UTC), rpo_hours=6,
        wal_archiving=True, wal_max_lag_seconds=900,
    )  # fmt: skip
    assert 'backup_last_run_success{run="base"} 0' in text
    result = subprocess.run(
        ["docker", "run", "--rm", "-i", "--network", "none", "--entrypoint", "promtool",
         base_images["prometheus"], "check", "metrics"],
        input=text, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(
            f"promtool check metrics failed ({result.returncode}):\n"
            f"{result.stdout}{result.stderr}\n--- the metrics ---\n{text}"
        )
