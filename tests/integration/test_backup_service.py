"""The compose file's backup service, run from docker-compose.prod.yml itself (postgres and backup,
profile backup) with WAL archiving on, against moto's S3 server on loopback: scheduled dumps read
back and verified, WAL segments shipped from the spool, a base backup, the healthcheck (healthy,
then unhealthy for a stale backup and for a failed run, with the webhook told), and a
point-in-time restore to a moment between two writes.

The backup service joins the host's network here (an override file) only because the S3 server
of the test listens on this machine's loopback; in production it has its own egress network."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from deploysuite.config.layers import load_config
from deploysuite.config.service_env import render_compose_doc, with_secret_files
from deploysuite.core.files import write_secret_file
from deploysuite.engines.stack import SERVICE_IMAGE_VARS
from deploysuite.images.build import images_file, read_images_file
from deploysuite.monitoring.rules import AlertThresholds, render_rules
from tests.integration.conftest import REPO, free_port, run_task

pytestmark = pytest.mark.integration
DATABASES = ("auth", "chat", "billing", "analytics")


class Webhook:
    """A Slack-style incoming webhook on loopback that records what it is sent."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body)["text"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


class BackupStack:
    def __init__(self, tmp: Path, s3, postgres_image: str, backup_image: str, hook: Webhook):
        self.project = f"bs{os.getpid()}"
        self.s3 = s3
        self.bucket = s3.new_bucket()
        self.hook = hook
        password = secrets.token_hex(16)
        config = load_config("local", process_env={})
        env = {**os.environ, **config.as_env()}
        for spec in config.schema.values():
            if spec.is_secret and not env.get(spec.name):
                env[spec.name] = "x" * 43
        for var in SERVICE_IMAGE_VARS.values():
            env[var] = f"registry.example/{var.lower()}:unused"
        self.backup_env = {
            "BACKUP_ENV": "local", "RELEASE_ID": "test", "POSTGRES_USER": "mysaaschat",
            "POSTGRES_PASSWORD": password, "S3_ENDPOINT_URL": s3.endpoint,
            "S3_BUCKET": self.bucket, "S3_PREFIX": "mysaaschat", "S3_SSE": "AES256",
            "S3_ACCESS_KEY_ID": s3.access_key, "S3_SECRET_ACCESS_KEY": s3.secret_key,
            "S3_PART_SIZE_MB": "5", "BACKUP_INTERVAL_HOURS": "6", "BACKUP_RPO_HOURS": "6",
            "BASEBACKUP_INTERVAL_HOURS": "24", "POSTGRES_ARCHIVE_MODE": "on",
            "WAL_MAX_LAG_SECONDS": "120", "NOTIFY_WEBHOOK_URL": hook.url,
            # the host's network (moto is on loopback): the metrics on a free loopback port
            "BACKUP_METRICS_ADDRESS": "127.0.0.1", "BACKUP_METRICS_PORT": str(free_port()),
        }  # fmt: skip
        env.update(
            COMPOSE_PROJECT_NAME=self.project, COMPOSE_PROFILES="backup",
            POSTGRES_IMAGE=postgres_image, BACKUP_IMAGE=backup_image,
            POSTGRES_PASSWORD=password, POSTGRES_ARCHIVE_MODE="on", POSTGRES_ARCHIVE_TIMEOUT="300",
            NGINX_RENDERED_DIR="/nonexistent", TLS_DIR="/nonexistent",
        )  # fmt: skip
        self.env = env
        # as a deploy writes them: the secrets as files for their readers (the agent reads
        # POSTGRES_PASSWORD_FILE, PostgreSQL its own), the rest in the generated compose file
        doc, files = with_secret_files(
            {"backup": self.backup_env, "postgres": {"POSTGRES_PASSWORD": password}},
            {"POSTGRES_PASSWORD", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "NOTIFY_WEBHOOK_URL"},
            str(tmp),
        )
        for f in files:
            write_secret_file(tmp / f.path, f.content, f.owner)
        services_env = tmp / "services.env.yml"
        services_env.write_text(render_compose_doc(doc))
        override = tmp / "test-override.yml"
        override.write_text(
            "services:\n"
            "  backup:\n"
            "    network_mode: host\n"
            "    networks: !reset []\n"
            "    healthcheck:\n"
            "      interval: 3s\n"
            "      start_period: 5m\n"
        )
        self.files = ["-f", str(REPO / "docker-compose.prod.yml"), "-f", str(services_env),
                      "-f", str(override)]  # fmt: skip

    def compose(self, *args: str, check: bool = True, timeout: int = 300):
        result = subprocess.run(
            ["docker", "compose", "-p", self.project, *self.files, *args],
            capture_output=True, text=True, env=self.env, timeout=timeout, check=False,
        )  # fmt: skip
        if check:
            assert result.returncode == 0, result.stderr[-3000:]
        return result

    def sql(self, query: str, db: str = "postgres") -> str:
        result = self.compose("exec", "-T", "postgres", "psql", "-X", "-U", "mysaaschat", "-d",
                              db, "-v", "ON_ERROR_STOP=1", "-tAc", query)  # fmt: skip
        return result.stdout.strip()

    def agent(self, *args: str, **env: str):
        flags = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        return self.compose("run", "--rm", "--no-deps", *flags, "backup", *args, check=False)

    def status(self) -> dict:
        out = self.compose("exec", "-T", "backup", "cat", "/var/lib/backup/status.json",
                           check=False).stdout  # fmt: skip
        return json.loads(out) if out.strip() else {}

    def health(self) -> str:
        fmt = "{{.State.Health.Status}}"
        out = subprocess.run(["docker", "inspect", "--format", fmt, f"{self.project}-backup-1"],
                             capture_output=True, text=True, check=False)  # fmt: skip
        return out.stdout.strip()

    def keys(self, part: str) -> list[str]:
        listing = self.s3.client().list_objects_v2(
            Bucket=self.bucket, Prefix=f"mysaaschat/local/{part}/"
        )
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def wait_for(self, what: str, check, timeout: float = 180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(2)
        logs = self.compose("logs", "--tail", "40", "backup", check=False).stdout
        pytest.fail(f"timed out waiting for {what}; status {self.status()}\n{logs}")

    def inv(self, *args: str, script: str = "") -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "COMPOSE_PROJECT_NAME": self.project, "POSTGRES_USER": "mysaaschat",
               **{k: v for k, v in self.backup_env.items() if k.startswith("S3_")}}  # fmt: skip
        argv = [script, *args] if script else [sys.executable, "-m", "invoke", "-r", str(REPO),
                                               *args]  # fmt: skip
        return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=env,
                              timeout=900)  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3, base_images):
    run_task("images.build", "--service", "backup")
    built = read_images_file(images_file(REPO, load_config("local").require("IMAGE_REPOSITORY")))
    hook = Webhook()
    st = BackupStack(tmp_path_factory.mktemp("backup-service"), s3, base_images["postgres"],
                     str(built["backup"]["content_ref"]), hook)  # fmt: skip
    try:
        st.compose("up", "-d", "--wait", "postgres")
        for db in DATABASES:
            st.sql(f"CREATE DATABASE {db}")
        st.sql("CREATE TABLE schema_migrations (version int PRIMARY KEY);"
               "INSERT INTO schema_migrations VALUES (1);"
               "CREATE TABLE items (id int PRIMARY KEY, body text NOT NULL, at timestamptz);"
               "INSERT INTO items SELECT g, md5(g::text), now() FROM generate_series(1, 2000) g",
               "auth")  # fmt: skip
        st.compose("up", "-d", "backup")
        yield st
    finally:
        st.compose("down", "--volumes", "--timeout", "5", check=False)
        hook.stop()


def test_the_service_dumps_verifies_ships_wal_and_takes_a_base_backup(stack):
    status = stack.wait_for(
        "the first dumps and the base backup",
        lambda: (s := stack.status()).get("newest_verified") and s.get("newest_base") and s,
    )
    dumps = stack.keys("postgres")
    for db in DATABASES:
        manifests = [k for k in dumps if f"/postgres/{db}/" in k and k.endswith(".manifest.json")]
        assert len(manifests) == 1, dumps
        body = stack.s3.client().get_object(Bucket=stack.bucket, Key=manifests[0])["Body"].read()
        record = json.loads(body)
        assert record["verified"] is True and record["kind"] == "scheduled"
    bases = stack.keys("postgres-base")
    assert any(k.endswith(".tar.zst") for k in bases) and any(
        k.endswith(".manifest.json") for k in bases
    )
    assert "last_error" not in status
    # the agent (PID 1) runs as postgres (uid 999) from the start, with no capability at all
    proc = stack.compose("exec", "-T", "backup", "cat", "/proc/1/status").stdout
    fields = dict(line.split(":", 1) for line in proc.splitlines() if ":" in line)
    assert fields["Uid"].split() == ["999"] * 4 and fields["Gid"].split() == ["999"] * 4
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapPrm"], 16) == 0

    # a finished WAL segment goes from the spool to S3 and leaves the spool
    segment = stack.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    stack.sql("INSERT INTO items VALUES (100001, 'after', now())", "auth")
    stack.sql("SELECT pg_switch_wal()")
    shipped = stack.wait_for(
        f"WAL segment {segment} in S3",
        lambda: [k for k in stack.keys("postgres-wal") if k.endswith(f"/{segment}.zst")],
    )
    head = stack.s3.client().head_object(Bucket=stack.bucket, Key=shipped[0])
    assert len(head["Metadata"]["sha256"]) == 64 and head["ServerSideEncryption"] == "AES256"
    spool = stack.compose("exec", "-T", "-u", "postgres", "backup", "ls",
                          "/var/lib/postgresql/wal-spool").stdout  # fmt: skip
    assert segment not in spool.split()

    assert stack.wait_for("docker's health status", lambda: stack.health() == "healthy")
    healthy = stack.compose("exec", "-T", "backup", "python3", "-m", "deploysuite.backup.agent",
                            "health")  # fmt: skip
    assert healthy.stdout.startswith("healthy: newest verified backup")


def test_the_healthcheck_fails_on_a_stale_backup(stack):
    stack.wait_for("the first dumps", lambda: stack.status().get("newest_verified"))
    stale = stack.compose("exec", "-T", "-e", "BACKUP_RPO_HOURS=0.0001", "backup", "python3",
                          "-m", "deploysuite.backup.agent", "health", check=False)  # fmt: skip
    assert stale.returncode == 1
    assert "the newest verified backup is" in stale.stdout and "(RPO 0.0001 h)" in stale.stdout


def test_a_backup_older_than_the_rpo_fires_backup_too_old_in_prometheus(stack, base_images,
                                                                       tmp_path):  # fmt: skip
    """The stack's Prometheus image scrapes the running agent's metrics and evaluates the
    suite's own backup rules, rendered with an RPO of 3.6 s: BackupTooOld fires on real data."""
    stack.wait_for("the first dumps", lambda: stack.status().get("newest_verified"))
    rules = render_rules(AlertThresholds(rpo_hours=0.001, backup_age_for="2s"))
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "backups.yml").write_text(rules["backups.yml"])
    port, agent = free_port(), f"127.0.0.1:{stack.backup_env['BACKUP_METRICS_PORT']}"
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 2s, evaluation_interval: 2s}\n"
        "rule_files: [/etc/prometheus/rules/*.yml]\n"
        "scrape_configs:\n"
        "  - job_name: backup\n"
        f"    static_configs: [{{targets: ['{agent}']}}]\n"
    )
    tmp_path.chmod(0o755)
    name = f"{stack.project}-prometheus"
    subprocess.run(
        ["docker", "run", "--detach", "--name", name, "--network", "host", "--read-only",
         "--tmpfs", "/prometheus:uid=65534", "-v", f"{tmp_path}:/etc/prometheus:ro",
         base_images["prometheus"], "--config.file=/etc/prometheus/prometheus.yml",
         "--storage.tsdb.path=/prometheus", f"--web.listen-address=127.0.0.1:{port}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    try:

        def firing() -> dict | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts",
                                            timeout=5) as answer:  # fmt: skip
                    alerts = json.loads(answer.read())["data"]["alerts"]
            except OSError:
                return None
            return next((a for a in alerts if a["labels"]["alertname"] == "BackupTooOld"
                         and a["state"] == "firing"), None)  # fmt: skip

        alert = stack.wait_for("BackupTooOld to fire", firing, timeout=90)
        assert alert["labels"]["severity"] == "critical"
        assert float(alert["value"]) > 3.6  # seconds since the newest verified backup
        assert "inv backup" in alert["annotations"]["runbook"]
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True, timeout=60)


def test_point_in_time_restore_replays_to_the_moment_between_two_writes(stack):
    stack.wait_for("a base backup", lambda: stack.status().get("newest_base"))
    stack.sql("INSERT INTO items VALUES (200001, 'before the target', now())", "auth")
    time.sleep(1.5)
    target = stack.sql("SELECT to_char(now() AT TIME ZONE 'UTC', "
                       "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")  # fmt: skip
    time.sleep(1.5)
    stack.sql("INSERT INTO items VALUES (200002, 'after the target', now());"
              "DELETE FROM items WHERE id <= 10", "auth")  # fmt: skip
    segment = stack.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    stack.sql("SELECT pg_switch_wal()")
    stack.wait_for(
        f"WAL segment {segment} in S3",
        lambda: any(k.endswith(f"/{segment}.zst") for k in stack.keys("postgres-wal")),
    )
    chat_before = stack.sql("SELECT count(*) FROM pg_class", "chat")

    done = stack.inv("restore", "--target-time", target, "--db", "auth", "--yes", "--json")
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)
    assert [r["database"] for r in result["restored"]] == ["auth"]
    # the stack shares its socket directory in a volume: the restore could run pg_restore -j
    assert "restored with pg_restore -j" in done.stderr, done.stderr[-3000:]
    ids = set(stack.sql("SELECT id FROM items WHERE id > 200000 OR id <= 10", "auth").split())
    assert ids == {str(i) for i in range(1, 11)} | {"200001"}
    kept = result["restored"][0]["kept_as"]
    assert stack.sql("SELECT count(*) FROM items WHERE id = 200002", kept) == "1"
    assert stack.sql("SELECT count(*) FROM pg_class", "chat") == chat_before  # not asked for
    scratch = subprocess.run(["docker", "ps", "-aq", "--filter", f"name={stack.project}-pitr"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert scratch.strip() == ""


def test_point_in_time_restore_refuses_what_it_cannot_reach_and_changes_nothing(stack):
    before = stack.sql("SELECT md5(string_agg(id::text || body, ',' ORDER BY id)) FROM items",
                       "auth")  # fmt: skip
    cases = {
        "2001-01-01T00:00:00Z": "no base backup had finished by 2001-01-01T00:00:00Z",
        "2999-01-01T00:00:00Z": "is in the future",
        "2024-13-01": "bad target time",
        "2024-01-15T10:42:00": "has no time zone",
    }
    for text, message in cases.items():
        refused = stack.inv("restore", "--target-time", text, "--db", "auth", "--yes")
        assert refused.returncode != 0 and message in refused.stderr, (text, refused.stderr)
    # the seed's interface: scripts/restore.sh -t
    seed = stack.inv(
        "-t", "2001-01-01T00:00:00Z", "-b", "auth", "-y", script="./scripts/restore.sh"
    )
    assert seed.returncode != 0 and "no base backup had finished by" in seed.stderr, seed.stderr
    now = stack.sql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
    # the newest WAL has not reached S3 yet (it waits for POSTGRES_ARCHIVE_TIMEOUT)
    stack.sql("INSERT INTO items VALUES (300001, 'not yet archived', now())", "auth")
    late = stack.inv("restore", "--target-time", now, "--db", "auth", "--yes")
    assert late.returncode != 0 and "the WAL archive reaches only" in late.stderr, late.stderr
    stack.sql("DELETE FROM items WHERE id = 300001", "auth")
    after = stack.sql("SELECT md5(string_agg(id::text || body, ',' ORDER BY id)) FROM items",
                      "auth")  # fmt: skip
    assert after == before


def test_a_failed_run_makes_the_service_unhealthy_and_tells_the_webhook(stack):
    stack.wait_for("the first dumps", lambda: stack.status().get("newest_verified"))
    stack.compose("stop", "backup")
    before = len(stack.hook.received)
    failed = stack.agent("once", S3_BUCKET="no-such-bucket-here")
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert any("dumps failed" in t and "no-such-bucket-here" in t
               for t in stack.hook.received[before:]), stack.hook.received  # fmt: skip
    assert stack.s3.secret_key not in "".join(stack.hook.received)
    health = stack.agent("health")
    assert health.returncode == 1 and "the last run failed: dumps:" in health.stdout
    stack.compose("start", "backup")


def test_dr_drill_checks_the_newest_base_backup_with_pg_verifybackup(stack, tmp_path):
    """The drill unpacks the newest base backup into a scratch server and checks every file
    against the manifest pg_basebackup wrote into it. A base backup whose object is intact (its
    SHA-256 matches) but whose files differ from their manifest (changed before the upload)
    fails the drill, naming the file."""
    stack.wait_for(
        "the first dumps and a base backup",
        lambda: (s := stack.status()).get("newest_verified") and s.get("newest_base"),
    )
    done = stack.inv("dr.drill", "--json")
    assert done.returncode == 0, done.stderr[-4000:]
    rows = {r["database"]: r for r in json.loads(done.stdout)["results"]}
    assert set(DATABASES) <= set(rows)
    base = rows["(cluster base backup)"]
    assert base["rows"] == "SHA-256 of the object and pg_verifybackup of every file", base

    # a newer base backup, the same files but PG_VERSION changed (same size, other checksum)
    client = stack.s3.client()
    record = json.loads(client.get_object(Bucket=stack.bucket, Key=next(
        k for k in stack.keys("postgres-base") if base["backup"] in k
        and k.endswith(".manifest.json")))["Body"].read())  # fmt: skip
    raw = subprocess.run(["zstd", "-q", "-dc"], input=client.get_object(
        Bucket=stack.bucket, Key=record["object"])["Body"].read(), capture_output=True,
        check=True).stdout  # fmt: skip
    changed = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(raw)) as source,
        tarfile.open(fileobj=changed, mode="w") as out,
    ):
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isfile() else None
            if member.name == "PG_VERSION":
                data = b"99\n"[: len(data)].ljust(len(data), b"\n")
            out.addfile(member, io.BytesIO(data) if data is not None else None)
    body = subprocess.run(["zstd", "-q", "-c"], input=changed.getvalue(), capture_output=True,
                          check=True).stdout  # fmt: skip
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    backup_id = f"{later:%Y%m%dT%H%M%SZ}-cluster-base"
    data_key = record["object"].replace(record["backup_id"], backup_id)
    tampered = {**record, "backup_id": backup_id, "object": data_key, "size": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "finished": later.isoformat(), "started": later.isoformat()}  # fmt: skip
    manifest_key = data_key.removesuffix(".tar.zst") + ".manifest.json"
    client.put_object(Bucket=stack.bucket, Key=data_key, Body=body, ServerSideEncryption="AES256",
                      Metadata={"sha256": tampered["sha256"]})  # fmt: skip
    client.put_object(Bucket=stack.bucket, Key=manifest_key, Body=json.dumps(tampered).encode(),
                      ServerSideEncryption="AES256")  # fmt: skip
    try:
        failed = stack.inv("dr.drill", "--json")
        assert failed.returncode != 0
        assert f"base backup {backup_id} fails pg_verifybackup" in failed.stderr, failed.stderr
        assert "PG_VERSION" in failed.stderr, failed.stderr
    finally:
        client.delete_object(Bucket=stack.bucket, Key=data_key)
        client.delete_object(Bucket=stack.bucket, Key=manifest_key)
    scratch = subprocess.run(["docker", "ps", "-aq", "--filter", f"name={stack.project}-drill"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert scratch.strip() == ""
