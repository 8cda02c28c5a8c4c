"""Backups: keys, dates, versions, which backup a restore takes (pure, no I/O)."""

from __future__ import annotations

import datetime as dt

import pytest

from deploysuite.backup import catalog as bk

NOW = dt.datetime(2024, 1, 15, 10, 42, 0, tzinfo=dt.UTC)


def test_keys_live_under_the_suites_prefix_by_environment_database_and_day():
    keys = bk.keys_for("mysaaschat/", "staging", "auth", bk.new_backup_id(NOW, "auth"))
    assert keys.data == "mysaaschat/staging/postgres/auth/20240115/20240115T104200Z-auth.dump.zst"
    assert keys.manifest.endswith("20240115T104200Z-auth.manifest.json")
    assert keys.globals.endswith("20240115T104200Z-auth.globals.sql.zst")
    assert bk.new_backup_id(NOW, "auth", "pre-restore") == "20240115T104200Z-auth-pre-restore"


@pytest.mark.parametrize("text", ["2024-01-15", "20241301", "2024011", "", "yesterday"])
def test_a_bad_date_is_one_clear_line(text):
    with pytest.raises(bk.BackupError, match="bad date") as error:
        bk.parse_day(text)
    assert "YYYYMMDD" in (error.value.fix or "")


def test_a_good_date():
    assert bk.parse_day("20240115") == dt.date(2024, 1, 15)


def test_versions_are_read_from_pg_dump_and_the_server():
    assert bk.major_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)") == 15
    assert bk.major_version("160002") == 16
    assert bk.major_version("9.6.24") == 9


def test_pg_dump_older_than_the_server_is_refused():
    bk.check_versions(16, 15)
    bk.check_versions(15, 15)
    with pytest.raises(bk.BackupError, match="pg_dump 15 is older than the PostgreSQL 16"):
        bk.check_versions(15, 16)


def record(backup_id: str, kind: str = "scheduled", size: int = 10) -> dict[str, object]:
    return {"backup_id": backup_id, "object": f"k/{backup_id}", "sha256": "ab" * 32,
            "size": size, "kind": kind}  # fmt: skip


BACKUPS = [
    record("20240114T020000Z-auth"),
    record("20240115T020000Z-auth"),
    record("20240115T140000Z-auth"),
    record("20240115T150000Z-auth-pre-restore", kind="pre-restore"),
    record("20240120T020000Z-auth"),
    {"backup_id": "20240115T230000Z-auth", "object": "k/x"},  # no checksum: not complete
]


def test_the_newest_complete_backup_of_the_day_is_taken():
    chosen = bk.choose(BACKUPS, dt.date(2024, 1, 15), None, "auth")
    assert chosen["backup_id"] == "20240115T140000Z-auth"


def test_newest_overall_skips_a_restores_own_safety_copies_unless_named():
    assert bk.choose(BACKUPS, None, None, "auth")["backup_id"] == "20240120T020000Z-auth"
    named = bk.choose(BACKUPS, None, "20240115T150000Z-auth-pre-restore", "auth")
    assert named["kind"] == "pre-restore"


def test_a_day_without_a_backup_names_the_nearest_days():
    with pytest.raises(bk.BackupError) as error:
        bk.choose(BACKUPS, dt.date(2024, 1, 17), None, "auth")
    assert "no backup of database auth on 20240117" in error.value.what
    assert "nearest days with one: 20240115, 20240114, 20240120" in error.value.what


def test_nothing_at_all_and_an_unknown_id():
    with pytest.raises(bk.BackupError, match="has no complete backup"):
        bk.choose([], None, None, "auth")
    with pytest.raises(bk.BackupError, match="no complete backup 'nope'"):
        bk.choose(BACKUPS, None, "nope", "auth")


def test_restore_names_keep_the_time():
    assert bk.restore_names("auth", NOW) == (
        "auth_restoring_20240115104200",
        "auth_pre_restore_20240115104200",
    )


def test_human_bytes():
    assert bk.human_bytes(512) == "512 B"
    assert bk.human_bytes(5 * 1024 * 1024) == "5.0 MiB"


def aged(backup_id: str, days_old: int) -> dict[str, object]:
    item = record(backup_id)
    item["finished"] = (NOW - dt.timedelta(days=days_old)).isoformat()
    return item


def test_retention_drops_the_old_but_always_keeps_the_newest_n():
    backups = [aged(f"2024010{i}T000000Z-auth", days_old=40 - i) for i in range(1, 10)]
    # all nine are older than 30 days: only the newest three stay
    gone = bk.to_prune(backups, NOW, days=30, keep=3)
    assert [g["backup_id"] for g in gone] == [f"2024010{i}T000000Z-auth" for i in range(6, 0, -1)]
    assert bk.to_prune(backups, NOW, days=60, keep=3) == []


def test_a_backup_is_deleted_manifest_first():
    keys = bk.object_keys({"object": "p/x.dump.zst", "globals_object": "p/x.globals.sql.zst"})
    assert keys == ["p/x.manifest.json", "p/x.dump.zst", "p/x.globals.sql.zst"]


def test_the_lifecycle_rule_stays_inside_the_prefix():
    (rule,) = bk.lifecycle_rules("mysaaschat/", 30, None, "GLACIER")
    assert rule["Filter"] == {"Prefix": "mysaaschat/"}
    assert rule["Expiration"] == {"Days": 30}
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert "Transitions" not in rule
    (archived,) = bk.lifecycle_rules("mysaaschat", 90, 30, "GLACIER")
    assert archived["Transitions"] == [{"Days": 30, "StorageClass": "GLACIER"}]
    with pytest.raises(bk.BackupError, match="pointless"):
        bk.lifecycle_rules("mysaaschat", 30, 30, "GLACIER")


def test_mongodump_runs_in_its_container_with_the_credentials_it_holds():
    argv = bk.mongodump_argv("p-mongodb-1")
    assert argv[:5] == ("docker", "exec", "p-mongodb-1", "sh", "-c")
    assert argv[5] == (
        "set -e; umask 077; f=$(mktemp); trap 'rm -f \"$f\"' EXIT; "
        'printf \'password: |-\\n  %s\\n\' "$MONGO_INITDB_ROOT_PASSWORD" > "$f"; '
        "mongodump --archive --quiet --authenticationDatabase admin "
        '--username "$MONGO_INITDB_ROOT_USERNAME" --config "$f"'
    )
    assert "--password" not in argv[5]  # never on a command line the host's ps can read
    assert bk.mongodb_keys("/p/", "prod", "20240115T020000Z-mongodb") == (
        "p/prod/mongodb/20240115/20240115T020000Z-mongodb.archive.zst",
        "p/prod/mongodb/20240115/20240115T020000Z-mongodb.manifest.json",
    )


def test_parallel_restore_runs_in_the_servers_image_beside_its_socket():
    from pathlib import Path

    from deploysuite.backup.restore import parallel_restore_argv, restore_jobs

    assert parallel_restore_argv("sha256:pg", "p_postgres-socket", Path("/t/dump.pgc"), 2,
                                 "u", "auth_restoring_1") == (
        "docker", "run", "--rm", "--network", "none", "--cap-drop", "ALL", "--user", "0",
        "-v", "/t/dump.pgc:/restore/dump.pgc:ro", "-v", "p_postgres-socket:/var/run/postgresql",
        "--entrypoint", "pg_restore", "sha256:pg", "--exit-on-error", "--no-owner", "-j", "2",
        "-U", "u", "-d", "auth_restoring_1", "/restore/dump.pgc",
    )  # fmt: skip
    assert [restore_jobs(n) for n in (None, 1, 2, 16)] == [1, 1, 2, 4]


def test_sql_identifiers_and_literals_are_quoted_and_odd_names_refused():
    from deploysuite.backup.postgres import ident, literal
    from deploysuite.core.errors import ConfigError

    assert ident("auth_restoring_20240115103000") == '"auth_restoring_20240115103000"'
    assert literal("it's") == "'it''s'"
    for name in ('auth"; DROP DATABASE x; --', "Auth", "a" * 64, ""):
        with pytest.raises(ConfigError):
            ident(name)


def test_db_and_from_flags_are_checked_before_anything_runs(tmp_path):
    from deploysuite.backup.localcopy import source_folder
    from deploysuite.backup.postgres import chosen_databases
    from deploysuite.config.layers import load_config
    from deploysuite.core.errors import SuiteError

    config = load_config("local", process_env={})
    assert chosen_databases(config, "all") == ["auth", "chat", "billing", "analytics"]
    assert chosen_databases(config, "chat") == ["chat"]
    with pytest.raises(SuiteError, match="unknown database 'nope'"):
        chosen_databases(config, "nope")
    assert source_folder("s3", "") is None
    assert source_folder("local", str(tmp_path)) == tmp_path
    for args in (("ftp", ""), ("local", ""), ("local", str(tmp_path / "missing"))):
        with pytest.raises(SuiteError):
            source_folder(*args)


def test_a_transfer_line_gives_the_share_the_rate_and_an_eta():
    from deploysuite.backup.catalog import transfer_line

    mib = 1024 * 1024
    line = transfer_line("db", 256 * mib, 1024 * mib, 4.0)
    assert line == "  db: 256.0 MiB of 1.0 GiB (25%), 64.0 MiB/s, about 12 s left"
    assert transfer_line("db", 10 * mib, None, 2.0) == "  db: 10.0 MiB, 5.0 MiB/s"
    assert "left" not in transfer_line("db", 1024 * mib, 1024 * mib, 8.0)


def test_a_restore_says_how_long_the_last_drill_took_for_its_database():
    from deploysuite.backup.drill import known_rto_line

    record = {"finished": "2026-12-01T03:00:00+00:00", "results": [
        {"database": "chat", "backup": "20261201T020000Z-chat", "restore": "3.1 s", "rto": "ok"},
        {"database": "auth", "backup": "20261201T020000Z-auth", "restore": "24.6 s", "rto": "ok"},
        {"database": "(cluster base backup)", "restore": "9.0 s", "rto": "-"}]}  # fmt: skip
    assert known_rto_line(record, "auth") == (
        "the last drill (2026-12-01) restored auth from 20261201T020000Z-auth in 24.6 s (RTO ok)"
    )
    assert known_rto_line(record, "billing") is None
    assert known_rto_line(None, "auth") is None
