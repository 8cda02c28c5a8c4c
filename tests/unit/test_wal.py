"""Point-in-time recovery's pure parts: WAL names, which base backup and which WAL a replay
needs, the replay's options and the backup service's health verdict."""

import datetime as dt

import pytest

from deploysuite.backup import pitr, wal
from deploysuite.backup.agent import parse_pg_time
from deploysuite.backup.catalog import BackupError

UTC = dt.UTC
T0 = dt.datetime(2024, 1, 15, 10, 0, tzinfo=UTC)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def test_archivable_names_are_finished_wal_files_only():
    assert wal.is_archivable("000000010000000A000000FF")
    assert wal.is_archivable("00000002.history")
    assert wal.is_archivable("000000010000000000000004.00000028.backup")
    assert wal.is_archivable("000000010000000000000004.partial")
    for name in ("000000010000000000000004.part", "archive_status", "x.history", "0000000100"):
        assert not wal.is_archivable(name), name


def test_segment_numbers_roll_over_into_the_next_log():
    assert wal.split("000000010000000A000000FF") == (1, 10 * 256 + 255)
    assert wal.segment_name(1, 10 * 256 + 256) == "000000010000000B00000000"
    with pytest.raises(BackupError):
        wal.split("00000001.history")


def test_keys_keep_each_cluster_apart():
    assert wal.wal_key("/p/", "staging", "7312", "000000010000000000000003") == (
        "p/staging/postgres-wal/7312/000000010000000000000003.zst"
    )
    assert wal.base_keys("p", "staging", "20240115T100000Z-cluster-base") == (
        "p/staging/postgres-base/20240115/20240115T100000Z-cluster-base.tar.zst",
        "p/staging/postgres-base/20240115/20240115T100000Z-cluster-base.manifest.json",
    )


def test_target_time_needs_a_zone_and_the_past():
    now = at(60)
    assert wal.parse_target_time("2024-01-15T10:42:00Z", now) == at(42)
    assert wal.parse_target_time("2024-01-15T11:42:00+01:00", now) == at(42)
    for text, message in {"2024-01-15T10:42:00": "no time zone", "yesterday": "bad target time",
                          "2024-01-15T12:00:00Z": "in the future"}.items():  # fmt: skip
        with pytest.raises(BackupError, match=message):
            wal.parse_target_time(text, now)


def base(minutes: float, start: str = "000000010000000000000002") -> dict[str, object]:
    return {"backup_id": f"b{minutes}", "object": "k", "sha256": "s", "wal_start": start,
            "finished": at(minutes).isoformat()}  # fmt: skip


def test_the_newest_base_backup_finished_by_the_target_is_chosen():
    bases = [base(0), base(30), base(90), {"backup_id": "half", "finished": at(40).isoformat()}]
    assert wal.choose_base(bases, at(45))["backup_id"] == "b30"
    assert wal.choose_base(bases, at(30))["backup_id"] == "b30"
    with pytest.raises(BackupError, match=r"no base backup had finished by .*the oldest"):
        wal.choose_base(bases, at(-1))


def archive(*items: tuple[str, float]) -> list[wal.ArchivedWal]:
    return [wal.ArchivedWal(name, at(minutes)) for name, minutes in items]


def test_needed_wal_is_the_whole_unbroken_run_of_the_base_backups_timeline():
    found = archive(("000000010000000000000001", 0), ("000000010000000000000002", 5),
                    ("000000010000000000000003", 10), ("000000010000000000000004", 15),
                    ("00000002.history", 21), ("000000020000000000000006", 22))  # fmt: skip
    # archived after its last record, by an unknown delay: the replay gets every segment after
    # the start and stops at the target itself
    assert wal.needed_wal(found, "000000010000000000000002", at(3)) == [
        "00000002.history", "000000010000000000000002", "000000010000000000000003",
        "000000010000000000000004",
    ]  # fmt: skip


def test_a_gap_or_a_short_archive_is_refused_with_where_it_stops():
    gap = archive(("000000010000000000000002", 5), ("000000010000000000000004", 15))
    with pytest.raises(BackupError, match=r"reaches only .*000000010000000000000003 is missing"):
        wal.needed_wal(gap, "000000010000000000000002", at(12))
    with pytest.raises(BackupError, match="before 000000010000000000000004 where the base"):
        wal.needed_wal(gap, "000000010000000000000002", at(1), "000000010000000000000004")
    with pytest.raises(BackupError, match="where the base backup starts, is not in the archive"):
        wal.needed_wal(gap, "000000010000000000000001", at(1))


def test_the_replay_promotes_at_the_target_and_archives_nothing():
    options = wal.recovery_options(at(42.5), "/w")
    assert options == [
        "-c restore_command='cp /w/%f %p'",
        "-c recovery_target_time='2024-01-15 10:42:30+00'",
        "-c recovery_target_action='promote'",
        "-c archive_mode='off'",
        "-c listen_addresses=''",
    ]
    assert pitr.scratch_run_argv("p-pitr-1", "sha256:abc") == (
        "docker", "run", "-d", "--name", "p-pitr-1", "--network", "none", "--user", "postgres",
        "--entrypoint", "sleep", "sha256:abc", "infinity",
    )  # fmt: skip
    assert pitr.start_argv("p-pitr-1", at(42.5))[:8] == (
        "docker", "exec", "p-pitr-1", "pg_ctl", "-D", pitr.DATA_DIR, "-l", pitr.LOG_FILE,
    )  # fmt: skip


def healthy_status(now: dt.datetime) -> dict[str, object]:
    return {
        "heartbeat": (now - dt.timedelta(seconds=20)).isoformat(),
        "newest_verified": (now - dt.timedelta(hours=2)).isoformat(),
        "newest_base": (now - dt.timedelta(hours=3)).isoformat(),
        "wal_spool_oldest_seconds": 30,
        "archiver_last_archived": (now - dt.timedelta(minutes=1)).isoformat(),
        "archiver_last_failed": (now - dt.timedelta(hours=1)).isoformat(),
    }


def verdict(status: dict[str, object], now: dt.datetime, wal_on: bool = True) -> list[str]:
    return wal.health_problems(status, now, rpo_hours=6, wal_archiving=wal_on,
                               wal_max_lag_seconds=900)  # fmt: skip


def test_health_is_fine_when_everything_is_recent():
    now = at(600)
    assert verdict(healthy_status(now), now) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"newest_verified": (at(600) - dt.timedelta(hours=7)).isoformat()},
         "the newest verified backup is 7.0 h old (RPO 6 h)"),
        ({"newest_verified": None}, "no verified backup yet"),
        ({"last_error": "dumps: bucket gone"}, "the last run failed: dumps: bucket gone"),
        ({"heartbeat": (at(600) - dt.timedelta(minutes=10)).isoformat()},
         "the agent's loop has not run for 600 s"),
        ({"wal_spool_oldest_seconds": 1200}, "WAL archiving is behind: a segment has waited"),
        ({"archiver_last_failed": at(600).isoformat()}, "archive_command is failing"),
        ({"newest_base": None}, "no base backup yet"),
    ],
)  # fmt: skip
def test_health_names_each_problem(change, problem):
    now = at(600)
    problems = verdict({**healthy_status(now), **change}, now)
    assert len(problems) == 1 and problem in problems[0], problems


def test_wal_problems_do_not_count_when_archiving_is_off():
    now = at(600)
    status = {**healthy_status(now), "wal_spool_oldest_seconds": 5000, "newest_base": None}
    assert verdict(status, now, wal_on=False) == []


def test_postgres_timestamps_are_read_with_their_zone():
    assert parse_pg_time("2024-01-15 10:42:00.5+00") == dt.datetime(2024, 1, 15, 10, 42, 0, 500000,
                                                                    tzinfo=UTC)  # fmt: skip
    assert parse_pg_time("") is None


def test_base_backups_are_checked_file_by_file_without_their_wal():
    from deploysuite.backup import pitr

    assert pitr.verify_base_argv() == ("pg_verifybackup", "--no-parse-wal", "--quiet",
                                       pitr.DATA_DIR)  # fmt: skip
