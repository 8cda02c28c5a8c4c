import hashlib

import pytest

from saaschat.db import (
    MigrationError,
    advisory_lock_key,
    discover_migrations,
    latest_version,
    plan_migrations,
    quote_identifier,
)


def write(directory, name, sql="SELECT 1;"):
    (directory / name).write_text(sql)


def test_discovery_orders_by_version_and_ignores_other_files(tmp_path):
    write(tmp_path, "0010_add_index.sql")
    write(tmp_path, "0002_add_column.sql")
    write(tmp_path, "0001_create_users.sql", "CREATE TABLE users (id int);")
    (tmp_path / "README.md").write_text("notes")
    migrations = discover_migrations(tmp_path)
    assert [m.version for m in migrations] == [1, 2, 10]
    assert migrations[0].name == "create_users"
    expected = hashlib.sha256(b"CREATE TABLE users (id int);").hexdigest()
    assert migrations[0].checksum == expected
    assert latest_version(migrations) == 10
    assert latest_version([]) == 0


@pytest.mark.parametrize("bad", ["1_short.sql", "0001-dash.sql", "0001_Upper.sql", "abcd_x.sql"])
def test_badly_named_sql_files_are_refused(tmp_path, bad):
    write(tmp_path, bad)
    with pytest.raises(MigrationError, match="NNNN_description"):
        discover_migrations(tmp_path)


def test_duplicate_versions_and_empty_files_are_refused(tmp_path):
    write(tmp_path, "0001_a.sql")
    write(tmp_path, "0001_b.sql")
    with pytest.raises(MigrationError, match="0001"):
        discover_migrations(tmp_path)
    (tmp_path / "0001_b.sql").unlink()
    write(tmp_path, "0002_empty.sql", "  \n")
    with pytest.raises(MigrationError, match="empty"):
        discover_migrations(tmp_path)


def test_plan_skips_applied_and_detects_edited_files(tmp_path):
    write(tmp_path, "0001_a.sql", "A")
    write(tmp_path, "0002_b.sql", "B")
    migrations = discover_migrations(tmp_path)
    applied = {1: migrations[0].checksum}
    assert [m.version for m in plan_migrations(migrations, applied)] == [2]
    assert plan_migrations(migrations, {1: migrations[0].checksum, 2: migrations[1].checksum}) == []
    with pytest.raises(MigrationError, match="modified after it was applied"):
        plan_migrations(migrations, {1: "0" * 64})


def test_newer_versions_in_the_database_are_tolerated(tmp_path):
    write(tmp_path, "0001_a.sql", "A")
    migrations = discover_migrations(tmp_path)
    assert plan_migrations(migrations, {1: migrations[0].checksum, 2: "f" * 64}) == []


def test_lock_key_is_stable_signed_64_bit_and_per_database():
    key = advisory_lock_key("auth")
    assert key == advisory_lock_key("auth")
    assert key != advisory_lock_key("chat")
    assert -(2**63) <= key < 2**63


def test_database_names_are_validated_before_quoting():
    assert quote_identifier("chat_db") == '"chat_db"'
    for bad in ('x"; DROP DATABASE auth; --', "Chat", "1abc", ""):
        with pytest.raises(MigrationError):
            quote_identifier(bad)


def test_every_service_migration_directory_is_valid():
    from pathlib import Path

    services = Path(__file__).resolve().parents[2]
    for name in ("auth", "chat", "billing", "analytics"):
        migrations = discover_migrations(services / name / "migrations")
        assert migrations, name
        assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
