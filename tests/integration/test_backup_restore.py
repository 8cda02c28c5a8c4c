"""`inv backup` / `inv restore` against a real PostgreSQL (the stack's own image, as the stack
names it: <project>-postgres-1) and a real S3 API server (moto's server) on loopback."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import REPO

pytestmark = pytest.mark.integration
DB = "auth"


class Stack:
    def __init__(self, s3, image: str) -> None:
        self.project = f"bk{os.getpid()}"
        self.container = f"{self.project}-postgres-1"
        self.s3 = s3
        self.bucket = s3.new_bucket()
        subprocess.run(
            ["docker", "run", "-d", "--name", self.container, "-e", "POSTGRES_USER=mysaaschat",
             "-e", f"POSTGRES_PASSWORD={secrets.token_hex(16)}", "-e", "POSTGRES_DB=mysaaschat",
             image],
            check=True, capture_output=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not self.initialised() or self.sql("SELECT 1", "postgres", check=False) != "1":
            assert time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.5)
        self.env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": self.project,
            "POSTGRES_USER": "mysaaschat",
            "S3_ENDPOINT_URL": s3.endpoint,
            "S3_BUCKET": self.bucket,
            "S3_ACCESS_KEY_ID": s3.access_key,
            "S3_SECRET_ACCESS_KEY": s3.secret_key,
            "S3_PART_SIZE_MB": "5",
        }

    def initialised(self) -> bool:
        """The entrypoint's temporary server has stopped and the real one started."""
        logs = subprocess.run(["docker", "logs", self.container], capture_output=True, text=True)
        return "init process complete" in logs.stdout + logs.stderr

    def sql(self, query: str, db: str = DB, check: bool = True) -> str:
        result = subprocess.run(
            ["docker", "exec", self.container, "psql", "-X", "-U", "mysaaschat", "-d", db,
             "-v", "ON_ERROR_STOP=1", "-tAc", query],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if check:
            assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def fingerprint(self, db: str = DB) -> str:
        return self.sql("SELECT md5(string_agg(id || ':' || body, ',' ORDER BY id)) FROM items", db)

    def databases(self) -> set[str]:
        return set(self.sql("SELECT datname FROM pg_database", "postgres").split())

    def inv(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "invoke", "-r", str(REPO), *args],
            cwd=REPO, capture_output=True, text=True, env={**self.env, **env}, timeout=600,
        )  # fmt: skip

    def objects(self) -> list[str]:
        client = self.s3.client()
        listing = client.list_objects_v2(Bucket=self.bucket)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def incomplete(self) -> int:
        listing = self.s3.client().list_multipart_uploads(Bucket=self.bucket)
        return len(listing.get("Uploads", []))

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.container], capture_output=True, check=False)


@pytest.fixture(scope="module")
def stack(s3, base_images):
    s = Stack(s3, base_images["postgres"])
    s.sql(f"CREATE DATABASE {DB}", "postgres")
    s.sql("CREATE TABLE schema_migrations (version int PRIMARY KEY);"
          "INSERT INTO schema_migrations VALUES (1), (2);"
          "CREATE TABLE items (id int PRIMARY KEY, body text NOT NULL);"
          "INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 5000) g")  # fmt: skip
    try:
        yield s
    finally:
        s.remove()


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_round_trip_restores_the_data_exactly_and_keeps_a_safety_copy(stack):
    original = stack.fingerprint()
    made = stack.inv("backup", "--db", DB, "--json")
    assert made.returncode == 0, made.stderr[-3000:]
    record = json.loads(made.stdout)["backups"][0]
    assert record["schema_version"] == 2 and record["size"] > 0 and len(record["sha256"]) == 64
    assert record["object"] in stack.objects() and record["globals_object"] in stack.objects()
    head = stack.s3.client().head_object(Bucket=stack.bucket, Key=record["object"])
    assert head["ServerSideEncryption"] == "AES256"
    listed = json.loads(stack.inv("backup.list", "--db", DB, "--json").stdout)["backups"]
    assert [b["backup_id"] for b in listed] == [record["backup_id"]]

    stack.sql("DELETE FROM items WHERE id % 2 = 0; UPDATE items SET body = 'x' WHERE id < 10")
    assert stack.fingerprint() != original
    today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    restored = stack.inv("restore", "--date", today, "--db", DB, "--json")
    assert restored.returncode == 0, restored.stderr[-3000:]
    report = json.loads(restored.stdout)
    assert report["backup"]["backup_id"] == record["backup_id"]
    assert report["counts"] == {"items": 5000, "schema_migrations": 2}
    assert stack.fingerprint() == original
    kept = report["kept_as"]
    assert kept in stack.databases() and stack.fingerprint(kept) != original  # the damaged one
    safety = json.loads(stack.inv("backup.list", "--db", DB, "--json").stdout)["backups"]
    assert any(b["backup_id"] == report["safety_backup"] and b["kind"] == "pre-restore"
               for b in safety)  # fmt: skip


def test_restore_while_clients_are_connected(stack):
    holder = subprocess.Popen(
        ["docker", "exec", stack.container, "psql", "-U", "mysaaschat", "-d", DB, "-c",
         "SELECT pg_sleep(300)"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        time.sleep(1)
        assert stack.sql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{DB}'") != "0"
        result = stack.inv("restore", "--db", DB)
        assert result.returncode == 0, result.stderr[-3000:]
        assert holder.wait(timeout=30) != 0  # its connection was terminated for the swap
    finally:
        holder.kill()
    assert stack.sql("SELECT count(*) FROM items") == "5000"


def newest(stack) -> dict:
    return json.loads(stack.inv("backup.list", "--db", DB, "--json").stdout)["backups"][0]


@pytest.mark.parametrize("damage", ["corrupted", "truncated"])
def test_a_damaged_backup_is_refused_and_the_database_is_untouched(stack, damage):
    made = stack.inv("backup", "--db", DB)
    assert made.returncode == 0, made.stderr[-2000:]
    record = newest(stack)
    client = stack.s3.client()
    body = client.get_object(Bucket=stack.bucket, Key=record["object"])["Body"].read()
    changed = body[: len(body) // 2] if damage == "truncated" else bytes(reversed(body))
    client.put_object(Bucket=stack.bucket, Key=record["object"], Body=changed)
    before, dbs = stack.fingerprint(), stack.databases()
    result = stack.inv("restore", "--backup-id", record["backup_id"], "--db", DB)
    assert result.returncode == 11, result.stderr[-2000:]
    expected = "is truncated" if damage == "truncated" else "fails its checksum"
    assert expected in last_line(result) and "nothing changed" in last_line(result)
    assert stack.fingerprint() == before and stack.databases() == dbs


def test_a_dump_that_does_not_restore_leaves_the_live_database_untouched(stack):
    """The object is intact (its SHA-256 and size match the manifest) but the dump in it is cut
    short, as a dump that was bad when it was made: the restore into a new database is the full
    read that refuses it; the new database is dropped, the live one never changed."""
    made = stack.inv("backup", "--db", DB)
    assert made.returncode == 0, made.stderr[-2000:]
    record = newest(stack)
    client = stack.s3.client()
    body = client.get_object(Bucket=stack.bucket, Key=record["object"])["Body"].read()
    dump = subprocess.run(["zstd", "-q", "-dc"], input=body, capture_output=True,
                          check=True).stdout  # fmt: skip
    cut = subprocess.run(["zstd", "-q", "-c"], input=dump[: len(dump) * 2 // 3],
                         capture_output=True, check=True).stdout  # fmt: skip
    client.put_object(Bucket=stack.bucket, Key=record["object"], Body=cut)
    manifest = record["object"].removesuffix(".dump.zst") + ".manifest.json"
    stored = json.loads(client.get_object(Bucket=stack.bucket, Key=manifest)["Body"].read())
    stored.update(size=len(cut), sha256=hashlib.sha256(cut).hexdigest())
    client.put_object(Bucket=stack.bucket, Key=manifest, Body=json.dumps(stored).encode())
    before, dbs = stack.fingerprint(), stack.databases()
    result = stack.inv("restore", "--backup-id", record["backup_id"], "--db", DB)
    assert result.returncode == 11, result.stderr[-2000:]
    assert f"restoring {record['backup_id']} failed" in last_line(result), result.stderr[-2000:]
    assert "swap" not in result.stderr and "safety backup" not in result.stderr
    assert stack.fingerprint() == before and stack.databases() == dbs


def test_bad_dates_and_days_without_a_backup_name_the_nearest_days(stack):
    bad = stack.inv("restore", "--date", "2024-01-15", "--db", DB)
    assert bad.returncode == 11 and "bad date '2024-01-15'" in last_line(bad)
    assert "YYYYMMDD" in last_line(bad)
    none = stack.inv("restore", "--date", "20240115", "--db", DB)
    today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    assert none.returncode == 11
    assert f"no backup of database {DB} on 20240115; nearest days with one: {today}" in (
        last_line(none)
    )


def test_a_failing_pg_dump_stores_nothing(stack):
    before = stack.objects()
    result = stack.inv("backup", "--db", "missing", "--set", "AUTH_DB_NAME=missing")
    assert result.returncode != 0
    assert "pg_dump exited" in result.stderr or "does not exist" in result.stderr
    assert stack.objects() == before and stack.incomplete() == 0


def test_pg_dump_killed_partway_aborts_the_upload(stack):
    stack.sql("CREATE TABLE IF NOT EXISTS bulk AS SELECT g AS id, md5(random()::text) "
              "|| md5(random()::text) AS a FROM generate_series(1, 1500000) g")  # fmt: skip
    before = stack.objects()
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "-r", str(REPO), "backup", "--db", DB],
        cwd=REPO, env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "uploaded" in line:  # the first part is in S3: kill pg_dump inside the server
            kill = (
                'for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = pg_dump ] '
                '&& kill -9 "${p#/proc/}"; done'
            )
            subprocess.run(["docker", "exec", stack.container, "sh", "-c", kill], check=False)
            break
    lines += proc.stderr.readlines()
    assert proc.wait(timeout=120) != 0, "".join(lines)
    assert "pg_dump exited" in "".join(lines)
    assert stack.objects() == before and stack.incomplete() == 0


def test_kill_9_mid_backup_leaves_no_backup_and_the_next_run_cleans_up(stack):
    before = stack.objects()
    listed_before = stack.inv("backup.list", "--db", DB, "--json").stdout
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "-r", str(REPO), "backup", "--db", DB],
        cwd=REPO, env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:
        if "uploaded" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    time.sleep(1)
    listed = json.loads(stack.inv("backup.list", "--db", DB, "--json").stdout)["backups"]
    assert listed == json.loads(listed_before)["backups"]  # nothing listed from the killed run
    new = [k for k in stack.objects() if k not in before]
    assert new == [] and stack.incomplete() == 1  # only the upload kill -9 could not abort
    again = stack.inv("backup", "--db", DB)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "aborted 1 incomplete upload" in again.stderr
    assert stack.incomplete() == 0


def test_a_missing_bucket_is_one_clear_line(stack):
    result = stack.inv("backup", "--db", DB, S3_BUCKET="no-such-bucket")
    assert result.returncode == 10
    assert "no-such-bucket" in last_line(result) and "does not exist" in last_line(result)


def test_the_seed_scripts_keep_their_interface(stack):
    made = subprocess.run(["./scripts/backup.sh", "-b", DB, "--", "--json"], cwd=REPO,
                          env=stack.env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    backup_id = json.loads(made.stdout)["backups"][0]["backup_id"]
    listed = subprocess.run(["./scripts/restore.sh", "-l", "-b", DB], cwd=REPO, env=stack.env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert listed.returncode == 0 and backup_id in listed.stdout
    today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    argv = ["./scripts/restore.sh", "-d", today, "-b", DB]
    restored = subprocess.run(argv, cwd=REPO, env=stack.env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
    assert restored.returncode == 0, restored.stderr[-2000:]
    assert f"from {backup_id}" in restored.stdout


def age(stack, backup: dict, days: int) -> None:
    """Make a backup look `days` old (its manifest's times): retention cannot wait a month."""
    client = stack.s3.client()
    key = backup["object"].removesuffix(".dump.zst") + ".manifest.json"
    when = (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).isoformat(timespec="seconds")
    body = json.dumps({**backup, "started": when, "finished": when}).encode()
    client.put_object(Bucket=stack.bucket, Key=key, Body=body)


def test_retention_keeps_the_newest_and_never_leaves_the_prefix(stack):
    client = stack.s3.client()
    for foreign in ("other-team/db.dump", "mysaaschat-old/keep.me"):
        client.put_object(Bucket=stack.bucket, Key=foreign, Body=b"not ours")
    made = [json.loads(stack.inv("backup", "--db", DB, "--json").stdout)["backups"][0]
            for _ in range(2)]  # fmt: skip
    listed = json.loads(stack.inv("backup.list", "--db", DB, "--json").stdout)["backups"]
    for backup in listed:
        age(stack, backup, 40)  # every backup so far is past a 30-day retention
    failed = stack.inv("backup", "--db", "missing", "--set", "AUTH_DB_NAME=missing", "--prune")
    assert failed.returncode != 0
    assert len(json.loads(stack.inv("backup.list", "--db", DB, "--json").stdout)["backups"]) == (
        len(listed)
    )  # a failed backup prunes nothing
    result = stack.inv("backup.prune", "--db", DB, "--days", "30", "--keep", "1", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    deleted = json.loads(result.stdout)["deleted"]
    assert len(deleted) == len(listed) - 1
    left = json.loads(stack.inv("backup.list", "--db", DB, "--json").stdout)["backups"]
    assert [b["backup_id"] for b in left] == [made[-1]["backup_id"]]  # the newest stays
    keys = stack.objects()
    assert "other-team/db.dump" in keys and "mysaaschat-old/keep.me" in keys
    assert not any(d["backup_id"] in k for d in deleted for k in keys)


def test_lifecycle_rule_is_applied_beside_the_buckets_other_rules(stack):
    client = stack.s3.client()
    client.put_bucket_lifecycle_configuration(Bucket=stack.bucket, LifecycleConfiguration={
        "Rules": [{"ID": "logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
                   "Expiration": {"Days": 7}}]})  # fmt: skip
    result = stack.inv("backup.lifecycle", "--days", "30", "--archive-after", "7", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    rules = {r["ID"]: r for r in
             client.get_bucket_lifecycle_configuration(Bucket=stack.bucket)["Rules"]}  # fmt: skip
    assert set(rules) == {"logs", "mysaaschat-backups"}
    ours = rules["mysaaschat-backups"]
    assert ours["Filter"] == {"Prefix": "mysaaschat/"} and ours["Expiration"] == {"Days": 30}
    assert ours["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert ours["Transitions"][0]["StorageClass"] == "GLACIER"


def test_dr_drill_restores_into_a_scratch_database_and_checks_the_targets(stack):
    assert stack.inv("backup", "--db", DB).returncode == 0
    before = stack.databases()
    ok = stack.inv("dr.drill", "--db", DB, "--json")
    assert ok.returncode == 0, ok.stderr[-2000:]
    (row,) = json.loads(ok.stdout)["results"]
    assert row["rpo"] == "ok" and row["rto"] == "ok" and int(row["rows"]) >= 5002
    assert stack.databases() == before  # the scratch database is gone
    # a restore says beforehand how long the last drill took for its database
    dry = stack.inv("restore", "--db", DB, "--dry-run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert f"the last drill ({dt.datetime.now(dt.UTC):%Y-%m-%d}) restored {DB} from " in dry.stderr
    assert f"in {row['restore']} (RTO ok)" in dry.stderr
    missed = stack.inv("dr.drill", "--db", DB, "--rto-hours", "0.000001")
    assert missed.returncode == 1
    assert "DR targets missed: auth rto" in last_line(missed)


def test_a_local_copy_restores_without_s3_and_a_damaged_one_is_refused(stack, tmp_path):
    copies = tmp_path / "copies"
    made = stack.inv("backup", "--db", DB, "--local-dir", str(copies), "--verify", "--json")
    assert made.returncode == 0, made.stderr[-3000:]
    record = json.loads(made.stdout)["backups"][0]
    assert record["verified"] is True
    local = copies / "local" / "postgres" / DB / record["backup_id"][:8]
    data = local / f"{record['backup_id']}.dump.zst"
    assert data.read_bytes() == stack.s3.client().get_object(
        Bucket=stack.bucket, Key=record["object"])["Body"].read()  # fmt: skip
    assert oct(data.stat().st_mode & 0o777) == "0o600"
    listed = stack.inv("backup.list", "--db", DB, "--from", "local", "--local-dir", str(copies),
                       "--json")  # fmt: skip
    assert [b["backup_id"] for b in json.loads(listed.stdout)["backups"]] == [record["backup_id"]]

    original = stack.fingerprint()
    stack.sql("DELETE FROM items WHERE id > 4000")
    unreachable = {"S3_ENDPOINT_URL": "http://127.0.0.1:9", "S3_BUCKET": "nowhere"}
    restored = stack.inv("restore", "--db", DB, "--from", "local", "--local-dir", str(copies),
                         "--backup-id", record["backup_id"], "--json", **unreachable)  # fmt: skip
    assert restored.returncode == 0, restored.stderr[-3000:]
    assert stack.fingerprint() == original
    safety = json.loads(restored.stdout)["safety_backup"]
    assert (local / f"{safety}.manifest.json").exists()  # the safety copy stayed local too

    data.write_bytes(data.read_bytes()[:-10])
    before = stack.fingerprint()
    refused = stack.inv("restore", "--db", DB, "--from", "local", "--local-dir", str(copies),
                        "--backup-id", record["backup_id"], **unreachable)  # fmt: skip
    assert refused.returncode == 11 and "is truncated" in last_line(refused), refused.stderr
    assert stack.fingerprint() == before
    missing = stack.inv("restore", "--db", DB, "--from", "local", **unreachable)
    assert missing.returncode != 0 and "add --local-dir DIR" in last_line(missing)


def test_mongodb_is_backed_up_when_the_stack_runs_it(stack):
    """MongoDB cannot run here (no image of it, no Debian package of its tools): a container
    under the stack's MongoDB name whose `mongodump` prints a fixed archive stands in for it, so
    this tests the suite's path (detection, streaming, checksum, manifest, a failing mongodump)
    and not MongoDB itself."""
    name = f"{stack.project}-mongodb-1"
    image = subprocess.run(["docker", "inspect", "--format", "{{.Config.Image}}", stack.container],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    subprocess.run(["docker", "run", "-d", "--name", name, "--entrypoint", "sleep", "-e",
                    "MONGO_INITDB_ROOT_USERNAME=root", "-e", "MONGO_INITDB_ROOT_PASSWORD=pw",
                    image, "infinity"], check=True, capture_output=True)  # fmt: skip
    # it checks what the suite hands it: the user, and the password only in a 0600 --config file
    fake = (
        '#!/bin/sh\n[ "$6" = root ] && [ "$7" = --config ] && [ "$(stat -c %a "$8")" = 600 ] '
        "&& grep -qx '  pw' \"$8\" || exit 3\n"
        'head -c 300000 /dev/zero | tr "\\0" m\n[ -e /tmp/fail ] && exit 1\nexit 0\n'
    )
    try:
        subprocess.run(["docker", "exec", "-u", "root", "-i", name, "sh", "-c",
                        "cat > /usr/local/bin/mongodump && chmod +x /usr/local/bin/mongodump"],
                       input=fake.encode(), check=True)  # fmt: skip
        made = stack.inv("backup", "--db", "mongodb", "--json")
        assert made.returncode == 0, made.stderr[-3000:]
        mongo = [r for r in json.loads(made.stdout)["backups"] if r["database"] == "mongodb"]
        assert len(mongo) == 1 and mongo[0]["format"] == "mongodump archive"
        body = stack.s3.client().get_object(Bucket=stack.bucket, Key=mongo[0]["object"])["Body"]
        assert subprocess.run(["zstd", "-dc"], input=body.read(), capture_output=True,
                              check=True).stdout == b"m" * 300000  # fmt: skip

        subprocess.run(["docker", "exec", name, "touch", "/tmp/fail"], check=True)
        before = stack.objects()
        failed = stack.inv("backup", "--db", "mongodb")
        assert failed.returncode == 11 and "mongodump exited 1" in last_line(failed)
        assert not [k for k in set(stack.objects()) - set(before) if "/mongodb/" in k]
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    gone = stack.inv("backup", "--db", "mongodb")
    assert gone.returncode != 0 and "MongoDB does not run" in last_line(gone)
