"""The backup service's state as Prometheus metrics: exact text for small states, and the agent's
`/metrics` endpoint served from a state directory."""

from __future__ import annotations

import datetime as dt
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from deploysuite.backup import agent
from deploysuite.backup.metrics import (
    escape_help,
    escape_label_value,
    format_value,
    status_metrics,
)
from deploysuite.core.errors import SuiteError

UTC = dt.UTC
NOW = dt.datetime(2024, 1, 15, 16, 0, tzinfo=UTC)

# What the agent writes after a good day with WAL archiving on (unix seconds in the comments).
FULL_STATUS: dict[str, object] = {
    "heartbeat": "2024-01-15T15:59:50+00:00",  # 1705334390
    "dumps": "2024-01-15T12:00:00+00:00",
    "newest_verified": "2024-01-15T12:00:05+00:00",  # 1705320005
    "base": "2024-01-15T02:00:00+00:00",
    "newest_base": "2024-01-15T02:10:00+00:00",  # 1705284600
    "wal_shipped": 42,
    "wal_last_shipped": "000000010000000000000029",
    "wal_last_shipped_at": "2024-01-15T15:58:00+00:00",  # 1705334280
    "wal_spool_oldest_seconds": 12,
    "archiver_last_archived": "2024-01-15T15:57:59+00:00",  # 1705334279
    "archiver_last_failed": None,
}

OBJECTIVES = """\
# HELP backup_rpo_seconds The configured recovery point objective (BACKUP_RPO_HOURS), seconds.
# TYPE backup_rpo_seconds gauge
backup_rpo_seconds 21600
# HELP backup_wal_max_lag_seconds The configured longest wait of a WAL file in the spool (WAL_MAX_LAG_SECONDS).
# TYPE backup_wal_max_lag_seconds gauge
backup_wal_max_lag_seconds 900
"""  # noqa: E501


def render(status: dict[str, object], *, wal_on: bool = True) -> str:
    return status_metrics(status, NOW, rpo_hours=6, wal_archiving=wal_on, wal_max_lag_seconds=900)


def samples(text: str) -> dict[str, str]:
    """`name{labels}` -> value, from an exposition's sample lines."""
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.rsplit(" ", 1) for line in lines)


def test_a_full_state_renders_every_metric():
    assert render(FULL_STATUS) == (
        """\
# HELP backup_newest_verified_timestamp_seconds Unix time the newest verified dump of every database finished (the oldest of the databases' newest).
# TYPE backup_newest_verified_timestamp_seconds gauge
backup_newest_verified_timestamp_seconds 1705320005
# HELP backup_newest_base_timestamp_seconds Unix time the newest verified base backup finished.
# TYPE backup_newest_base_timestamp_seconds gauge
backup_newest_base_timestamp_seconds 1705284600
# HELP backup_last_run_success Whether the last run of a job succeeded (1) or failed (0); absent for a job that never ran.
# TYPE backup_last_run_success gauge
backup_last_run_success{run="dumps"} 1
backup_last_run_success{run="base"} 1
backup_last_run_success{run="wal"} 1
# HELP backup_wal_spool_oldest_seconds Seconds the oldest WAL file in the spool has waited to be shipped to S3.
# TYPE backup_wal_spool_oldest_seconds gauge
backup_wal_spool_oldest_seconds 12
# HELP backup_wal_shipped_total WAL files shipped to S3.
# TYPE backup_wal_shipped_total counter
backup_wal_shipped_total 42
# HELP backup_wal_last_shipped_timestamp_seconds Unix time the last WAL file was shipped to S3.
# TYPE backup_wal_last_shipped_timestamp_seconds gauge
backup_wal_last_shipped_timestamp_seconds 1705334280
# HELP backup_archiver_last_archived_timestamp_seconds Unix time PostgreSQL's archive_command last succeeded.
# TYPE backup_archiver_last_archived_timestamp_seconds gauge
backup_archiver_last_archived_timestamp_seconds 1705334279
# HELP backup_heartbeat_timestamp_seconds Unix time the agent's loop last ran.
# TYPE backup_heartbeat_timestamp_seconds gauge
backup_heartbeat_timestamp_seconds 1705334390
"""  # noqa: E501
        + OBJECTIVES
        + """\
# HELP backup_healthy Whether the backup service's healthcheck finds no problem (1) or some (0).
# TYPE backup_healthy gauge
backup_healthy 1
"""
    )


def test_an_empty_state_exports_only_the_objectives_and_unhealthy():
    # No timestamp sample at all: a 0 would read as a backup taken in 1970.
    assert render({}) == OBJECTIVES + (
        "# HELP backup_healthy Whether the backup service's healthcheck finds no problem (1) or "
        "some (0).\n"
        "# TYPE backup_healthy gauge\n"
        "backup_healthy 0\n"
    )


def test_failed_first_dumps_report_0_and_never_the_error_text():
    status = {
        "heartbeat": "2024-01-15T15:59:50+00:00",
        "last_error": 'dumps: pg_dump exited 1: password authentication failed "x\\y"',
        "last_error_at": "2024-01-15T14:00:00+00:00",
        "dumps_retry_at": "2024-01-15T14:15:00+00:00",
    }
    text = render(status, wal_on=False)
    assert samples(text) == {
        'backup_last_run_success{run="dumps"}': "0",
        "backup_last_error_timestamp_seconds": "1705327200",
        "backup_heartbeat_timestamp_seconds": "1705334390",
        "backup_rpo_seconds": "21600",
        "backup_wal_max_lag_seconds": "900",
        "backup_healthy": "0",
    }
    assert "password" not in text and "pg_dump" not in text


def test_a_dump_failure_stays_0_when_a_later_wal_failure_takes_last_error():
    status = {
        **FULL_STATUS,
        "dumps_retry_at": "2024-01-15T14:15:00+00:00",
        "last_error": "wal: EndpointConnectionError: S3 unreachable",
        "last_error_at": "2024-01-15T15:59:50+00:00",
    }
    runs = {k: v for k, v in samples(render(status)).items() if "last_run_success" in k}
    assert runs == {
        'backup_last_run_success{run="dumps"}': "0",
        'backup_last_run_success{run="base"}': "1",
        'backup_last_run_success{run="wal"}': "0",
    }


def test_malformed_values_are_left_out_and_the_rest_still_renders():
    status = {
        **FULL_STATUS,
        "newest_verified": "yesterday",
        "newest_base": "2024-01-15T02:10:00",  # no offset: no single meaning
        "heartbeat": 1705334390,
        "wal_spool_oldest_seconds": "12",
        "wal_shipped": True,
    }
    found = samples(render(status))
    for name in (
        "backup_newest_verified_timestamp_seconds",
        "backup_newest_base_timestamp_seconds",
        "backup_heartbeat_timestamp_seconds",
        "backup_wal_spool_oldest_seconds",
        "backup_wal_shipped_total",
    ):
        assert name not in found, name
    assert found["backup_wal_last_shipped_timestamp_seconds"] == "1705334280"
    # the healthcheck cannot read such a state either, so it fails too
    assert found["backup_healthy"] == "0"


def test_with_wal_archiving_off_no_wal_or_base_backup_job_is_reported():
    status = {**FULL_STATUS, "wal_spool_oldest_seconds": 5000}
    assert samples(render(status, wal_on=False)) == {
        "backup_newest_verified_timestamp_seconds": "1705320005",
        "backup_newest_base_timestamp_seconds": "1705284600",
        'backup_last_run_success{run="dumps"}': "1",
        "backup_heartbeat_timestamp_seconds": "1705334390",
        "backup_rpo_seconds": "21600",
        "backup_wal_max_lag_seconds": "900",
        "backup_healthy": "1",
    }


def test_an_archiver_failure_after_its_last_success_is_exported_and_unhealthy():
    status = {**FULL_STATUS, "archiver_last_failed": "2024-01-15T15:58:30+00:00"}
    found = samples(render(status))
    assert found["backup_archiver_last_failed_timestamp_seconds"] == "1705334310"
    assert found["backup_healthy"] == "0"


def test_escaping_and_numbers_follow_the_exposition_format():
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    assert escape_help('a\\b"c\nd') == 'a\\\\b"c\\nd'
    assert [format_value(v) for v in (0.0, 21600.0, 1.5, float("inf"), float("nan"))] == [
        "0", "21600", "1.5", "+Inf", "NaN",
    ]  # fmt: skip
    fractional = status_metrics(
        {}, NOW, rpo_hours=0.25, wal_archiving=False, wal_max_lag_seconds=0.5
    )
    assert samples(fractional)["backup_rpo_seconds"] == "900"
    assert samples(fractional)["backup_wal_max_lag_seconds"] == "0.5"


def test_the_agent_serves_the_latest_state_on_metrics_only(tmp_path: Path):
    settings = agent.AgentSettings(
        env="test", interval=dt.timedelta(hours=6), base_interval=dt.timedelta(hours=24),
        retry=dt.timedelta(minutes=15), rpo_hours=6, keep=7, retention_days=30,
        wal_archiving=True, wal_max_lag_seconds=900, spool=tmp_path / "spool",
        state_dir=tmp_path, metrics_address="127.0.0.1", metrics_port=0,
    )  # fmt: skip
    agent.write_status(tmp_path, FULL_STATUS)
    server = agent.start_metrics_server(settings)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"

        def scrape() -> dict[str, str]:
            with urllib.request.urlopen(f"{base}/metrics", timeout=2) as response:
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                return samples(response.read().decode())

        assert scrape()["backup_wal_shipped_total"] == "42"
        agent.write_status(tmp_path, {**FULL_STATUS, "wal_shipped": 43})
        assert scrape()["backup_wal_shipped_total"] == "43"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/other", timeout=2)
        assert missing.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_the_metrics_port_comes_from_the_configuration():
    settings = agent.agent_settings(agent.container_session({"BACKUP_METRICS_PORT": "9400"}).config)
    assert (settings.metrics_address, settings.metrics_port) == ("0.0.0.0", 9400)
    with pytest.raises(SuiteError, match="BACKUP_METRICS_PORT"):
        agent.agent_settings(agent.container_session({"BACKUP_METRICS_PORT": "0"}).config)
