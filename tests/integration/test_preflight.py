"""`inv preflight` as a user runs it, on suite roots made under tmp_path (SUITE_ROOT) with a
real S3 API server (moto), a real registry with credentials, a real git tree, certificates made
here, and, for the drill, a real PostgreSQL; and once on the repository's own `local`.

Each failure test breaks one item on purpose and reads the named failure and its fix."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import pytest

from deploysuite.backup import catalog
from deploysuite.backup import s3 as s3store
from deploysuite.config.layers import load_schema
from deploysuite.config.session import Session
from deploysuite.core.events import Events
from deploysuite.core.runner import Runner
from deploysuite.deploy.preflight_items import checks, records
from deploysuite.deploy.release import layout
from deploysuite.deploy.target import Target
from tests.integration.conftest import REPO
from tests.unit.envtree import config_in
from tests.unit.test_preflight_items import STRONG, key_pem, pem, pki

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
DATABASES = ("auth", "chat", "billing", "analytics")
DOCUMENTED = set(load_schema(REPO))


class Suite:
    """A suite root: .env.example, environments/local with strong secrets (0600), a
    certificate signed by an intermediate of its own CA, and a clean git tree."""

    def __init__(self, root: Path, example: str | None = None) -> None:
        self.root = root
        self.project = f"pf{uuid.uuid4().hex[:8]}"
        self.env_dir = root / "environments" / "local"
        self.env_dir.mkdir(parents=True)
        (root / ".env.example").write_text(example or (REPO / ".env.example").read_text())
        (root / ".gitignore").write_text("build/\ntmp/\nenvironments/*/secrets.env\n")
        self.config = {
            "COMPOSE_PROJECT_NAME": self.project, "SERVER_NAMES": "localhost",
            "PUBLIC_URL": "https://localhost:8443", "COMPOSE_PROFILES": "monitoring",
        }  # fmt: skip
        self.write_config()
        self.write_secrets(STRONG)
        self.tls_dir = root / "build" / "local" / self.project / "tls"
        self.write_certificate(days=90)
        self.tmpdir = root / "tmp"
        self.tmpdir.mkdir()
        self.git("init", "-q")
        self.commit()
        self.env: dict[str, str] = {}

    def commit(self) -> None:
        self.git("add", "-A")
        self.git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "change")

    def git(self, *args: str) -> None:
        subprocess.run(["git", "-C", str(self.root), *args], check=True, capture_output=True)

    def write_config(self, **values: str) -> None:
        self.config.update(values)
        text = "".join(f"{k}={v}\n" for k, v in self.config.items())
        (self.env_dir / "config.env").write_text(text)

    def write_secrets(self, values: dict[str, str], mode: int = 0o600) -> None:
        path = self.env_dir / "secrets.env"
        path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        path.chmod(mode)

    def write_certificate(self, days: float, start: dt.datetime | None = None) -> None:
        start = start or dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        root, mid, leaf, key = pki(("localhost",), days=days, start=start)
        self.tls_dir.mkdir(parents=True, exist_ok=True)
        (self.tls_dir / "fullchain.pem").write_bytes(pem(leaf, mid))
        (self.tls_dir / "ca.pem").write_bytes(pem(root))
        (self.tls_dir / "privkey.pem").write_bytes(key_pem(key))
        (self.tls_dir / "privkey.pem").chmod(0o600)

    def use_s3(self, s3, bucket: str) -> None:
        self.env.update(
            S3_ENDPOINT_URL=s3.endpoint, S3_BUCKET=bucket,
            S3_ACCESS_KEY_ID=s3.access_key, S3_SECRET_ACCESS_KEY=s3.secret_key,
        )  # fmt: skip

    def inv(self, *args: str, timeout: int = 150) -> subprocess.CompletedProcess[str]:
        # Documented variables come from the suite root only, never from the caller's shell.
        env = {k: v for k, v in os.environ.items() if k not in DOCUMENTED}
        env.update(SUITE_ROOT=str(self.root), TMPDIR=str(self.tmpdir), **self.env)
        return subprocess.run(
            [sys.executable, "-m", "invoke", "-r", str(REPO), *args],
            cwd=REPO, capture_output=True, text=True, env=env, timeout=timeout,
        )  # fmt: skip

    def preflight(self, *only: str) -> tuple[subprocess.CompletedProcess[str], dict[str, dict]]:
        result = self.inv("preflight", "--env=local", "--json", *(f"--only={i}" for i in only))
        assert result.stdout.strip(), result.stderr[-3000:]
        rows = {row["item"]: row for row in json.loads(result.stdout)["rows"]}
        return result, rows


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.strip().splitlines()[-1]


def assert_failed(result, rows, item: str, evidence: str, fix: str) -> None:
    """The item failed with this evidence and fix, and the run ended non-zero naming it."""
    row = rows[item]
    assert row["result"] == "failed", row
    assert evidence in row["evidence"], row
    assert fix in row["fix"], row
    assert result.returncode == 1
    line = last_line(result)
    assert line.startswith(f"error: preflight of 'local' failed: {item} (fix: "), line
    assert fix in line


@pytest.fixture
def suite(tmp_path) -> Suite:
    return Suite(tmp_path / "suite")


def put_backup(s3, bucket: str, db: str, hours_ago: float, verified: bool = True) -> None:
    finished = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours_ago)
    backup_id = catalog.new_backup_id(finished, db)
    keys = catalog.keys_for("mysaaschat", "local", db, backup_id)
    record = catalog.manifest(
        backup_id=backup_id, env="local", db=db, keys=keys, size=10, sha256="0" * 64,
        globals_size=1, globals_sha256="1" * 64, pg_version="150000", schema_version=2,
        release=None, started=finished - dt.timedelta(minutes=1), finished=finished,
    )  # fmt: skip
    record["verified"] = verified
    s3store.put_json(s3.client(), bucket, keys.manifest, record, sse="AES256")


def put_record(s3, bucket: str, kind: records.Kind, days_ago: float, passed: bool = True):
    record = records.new_record(passed, [] if passed else ["auth rto"], rpo_hours=6.0,
                                rto_hours=2.0)  # fmt: skip
    finished = dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)
    record["finished"] = finished.isoformat(timespec="seconds")
    place = records.RecordPlace("local", Path("unused"), s3.settings(bucket), s3.client())
    records.save(place, kind, record)


# --- the checkable items pass


def test_every_checkable_item_passes_on_a_ready_environment(suite, s3, registry):
    bucket = s3.new_bucket()
    suite.use_s3(s3, bucket)
    rules = catalog.lifecycle_rules("mysaaschat", 30, None, "GLACIER")
    s3store.apply_lifecycle(s3.client(), bucket, rules)
    for db in DATABASES:
        put_backup(s3, bucket, db, hours_ago=1)
    put_record(s3, bucket, "drills", days_ago=2)
    put_record(s3, bucket, "alert-tests", days_ago=1)
    suite.write_config(IMAGE_REPOSITORY=f"{registry.host}/mysaaschat",
                       REGISTRY_USERNAME=registry.username)  # fmt: skip
    suite.write_secrets({**STRONG, "REGISTRY_PASSWORD": registry.password})
    suite.commit()
    result, rows = suite.preflight()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    not_passed = {item: row["evidence"] for item, row in rows.items() if row["result"] != "passed"}
    # Nothing over SSH in `local`; no PostgreSQL runs in this stack (the drill test has one).
    assert set(not_passed) == {"ssh-host-keys", "migrations"}, not_passed
    assert all(row["result"] == "skipped" for item, row in rows.items() if item in not_passed)
    assert "chain of 2 to a trusted root" in rows["tls"]["evidence"]
    assert f"{registry.host} accepted the login of pusher" == rows["registry-login"]["evidence"]
    assert "rule mysaaschat-backups" in rows["s3-lifecycle"]["evidence"]
    assert registry.password not in result.stdout + result.stderr
    assert not any(suite.tmpdir.iterdir())  # the login's DOCKER_CONFIG folder is gone


def test_the_repositorys_local_environment_skips_what_it_cannot_check():
    env = {k: v for k, v in os.environ.items() if k not in DOCUMENTED}
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(REPO), "preflight", "--env=local", "--json"],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=150,
    )  # fmt: skip
    doc = json.loads(result.stdout)
    rows = {row["item"]: row for row in doc["rows"]}
    for item in ("s3-bucket", "s3-lifecycle", "backups", "dr-drill"):
        assert rows[item]["result"] == "skipped", rows[item]
        assert rows[item]["evidence"] == "S3_BUCKET is not set: 'local' keeps no backups in S3"
    assert rows["ssh-host-keys"]["result"] == "skipped"
    assert rows["registry-login"]["result"] == "skipped"  # IMAGE_REPOSITORY names no registry
    for row in rows.values():
        assert row["result"] in ("passed", "failed", "skipped")
        assert bool(row["fix"]) == (row["result"] == "failed"), row
    assert result.returncode == (1 if any(r["result"] == "failed" for r in rows.values()) else 0)
    assert len(doc["manual"]) == 14 and all(m["why"] for m in doc["manual"])


# --- each item made to fail


def test_a_weak_secret_fails_without_showing_it(suite):
    weak = "ab" * 20
    suite.write_secrets({**STRONG, "AUTH_TOKEN_SECRET": weak})
    result, rows = suite.preflight("secrets")
    assert_failed(result, rows, "secrets", "AUTH_TOKEN_SECRET: weak secret",
                  "delete the line, then inv env.secrets --env=local")  # fmt: skip
    assert weak not in result.stdout + result.stderr


def test_the_example_value_of_env_example_fails(tmp_path):
    published = secrets.token_urlsafe(32)  # strong, but printed in the repository for all
    example = (REPO / ".env.example").read_text().replace(
        "\nPOSTGRES_PASSWORD=\n", f"\nPOSTGRES_PASSWORD={published}\n")  # fmt: skip
    suite = Suite(tmp_path / "suite", example=example)
    suite.write_secrets({**STRONG, "POSTGRES_PASSWORD": published})
    result, rows = suite.preflight("secrets", "config")
    assert_failed(result, rows, "secrets", "POSTGRES_PASSWORD: the example value of .env.example",
                  "inv env.secrets --env=local")  # fmt: skip
    assert rows["config"]["result"] == "passed"
    assert published not in result.stdout + result.stderr


def test_a_secrets_file_readable_by_others_fails(suite):
    suite.write_secrets(STRONG, mode=0o644)
    result, rows = suite.preflight("secret-files")
    path = suite.env_dir / "secrets.env"
    assert_failed(result, rows, "secret-files", f"{path} is mode 0644", f"chmod 600 {path}")


@pytest.mark.parametrize(
    ("days", "start_days_ago", "evidence"),
    [(10, 0, "in 9 days (needs more than 14"), (30, 40, "expired on")],
)
def test_an_expiring_or_expired_certificate_fails(suite, days, start_days_ago, evidence):
    now = dt.datetime.now(dt.UTC)
    suite.write_certificate(days=days, start=now - dt.timedelta(days=start_days_ago, hours=1))
    result, rows = suite.preflight("tls")
    assert_failed(result, rows, "tls", evidence, "inv certs.local --env=local")


def test_a_missing_bucket_fails_and_the_items_that_need_it_are_skipped(suite, s3):
    suite.use_s3(s3, f"missing-{uuid.uuid4().hex[:12]}")
    result, rows = suite.preflight("s3-bucket", "backups", "dr-drill")
    assert_failed(result, rows, "s3-bucket", "does not exist", "create it or fix S3_BUCKET")
    for item in ("backups", "dr-drill"):
        assert rows[item]["result"] == "skipped"
        assert rows[item]["evidence"].startswith("the bucket could not be reached (bucket missing")


def test_a_stale_or_missing_backup_fails(suite, s3):
    bucket = s3.new_bucket()
    suite.use_s3(s3, bucket)
    put_backup(s3, bucket, "auth", hours_ago=8)
    put_backup(s3, bucket, "chat", hours_ago=1, verified=False)
    for db in ("billing", "analytics"):
        put_backup(s3, bucket, db, hours_ago=1)
    result, rows = suite.preflight("backups")
    assert_failed(result, rows, "backups", "h old", "inv backup --env=local --verify")
    evidence = rows["backups"]["evidence"]
    assert "auth " in evidence and "8.0 h old" in evidence and "(RPO 6 h)" in evidence
    assert "chat: no verified backup (1 unverified)" in evidence
    assert "billing" not in evidence


def test_no_drill_record_fails_and_an_old_one_too(suite, s3):
    bucket = s3.new_bucket()
    suite.use_s3(s3, bucket)
    result, rows = suite.preflight("dr-drill")
    assert_failed(result, rows, "dr-drill",
                  f"no restore drill on record in s3://{bucket}/mysaaschat/local/drills/",
                  "inv dr.drill --env=local")  # fmt: skip
    put_record(s3, bucket, "drills", days_ago=31)
    result, rows = suite.preflight("dr-drill")
    assert_failed(result, rows, "dr-drill", "is older than 30 days", "inv dr.drill --env=local")


def test_a_dirty_tree_fails_naming_the_change(suite):
    (suite.root / "hotfix.py").write_text("print('not committed')\n")
    result, rows = suite.preflight("clean-tree")
    assert_failed(result, rows, "clean-tree", "1 uncommitted change(s)", "git -C")
    assert "hotfix.py" in rows["clean-tree"]["evidence"]
    assert "-dirty" in rows["clean-tree"]["evidence"]


def test_a_refused_registry_login_fails_and_leaves_no_credentials(suite, registry):
    wrong = secrets.token_urlsafe(16)
    suite.write_config(IMAGE_REPOSITORY=f"{registry.host}/mysaaschat",
                       REGISTRY_USERNAME=registry.username)  # fmt: skip
    suite.write_secrets({**STRONG, "REGISTRY_PASSWORD": wrong})
    result, rows = suite.preflight("registry-login")
    assert_failed(result, rows, "registry-login", f"{registry.host} refused the login of pusher",
                  "check REGISTRY_USERNAME and REGISTRY_PASSWORD")  # fmt: skip
    assert wrong not in result.stdout + result.stderr
    assert not any(suite.tmpdir.iterdir())


# --- a real drill, recorded by inv dr.drill and read by preflight; migrations on the target


@pytest.fixture
def postgres(suite, s3, base_images):
    container = f"{suite.project}-postgres-1"
    subprocess.run(
        ["docker", "run", "-d", "--name", container, "-e", "POSTGRES_USER=mysaaschat",
         "-e", f"POSTGRES_PASSWORD={secrets.token_hex(16)}", "-e", "POSTGRES_DB=mysaaschat",
         base_images["postgres"]],
        check=True, capture_output=True,
    )  # fmt: skip

    def sql(query: str, db: str = "postgres") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "exec", container, "psql", "-X", "-U", "mysaaschat", "-d", db,
             "-v", "ON_ERROR_STOP=1", "-tAc", query],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    try:
        deadline = time.monotonic() + 60
        while True:
            logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
            ready = sql("SELECT 1")
            if "init process complete" in logs.stdout + logs.stderr and ready.stdout.strip() == "1":
                break
            assert time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.5)
        yield sql
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)


def test_a_drill_records_its_result_and_preflight_reads_it(suite, s3, postgres):
    bucket = s3.new_bucket()
    suite.use_s3(s3, bucket)
    assert postgres("CREATE DATABASE auth").returncode == 0
    assert postgres("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1)",
                    "auth").returncode == 0  # fmt: skip
    made = suite.inv("backup", "--env=local", "--db", "auth", "--verify")
    assert made.returncode == 0, made.stderr[-3000:]
    drilled = suite.inv("dr.drill", "--env=local", "--db", "auth")
    assert drilled.returncode == 0, drilled.stderr[-3000:]
    result, rows = suite.preflight("dr-drill")
    assert result.returncode == 0, result.stderr[-2000:]
    assert rows["dr-drill"]["result"] == "passed"
    assert "(targets: RPO 6.0 h, RTO 2.0 h)" in rows["dr-drill"]["evidence"]
    missed = suite.inv("dr.drill", "--env=local", "--db", "auth", "--rto-hours", "0.000001")
    assert missed.returncode == 1
    result, rows = suite.preflight("dr-drill")
    assert_failed(result, rows, "dr-drill", "failed: auth rto", "inv dr.drill --env=local")


def test_a_migration_edited_after_it_ran_fails(suite, postgres):
    migrations = suite.root / "services" / "auth" / "migrations"
    migrations.mkdir(parents=True)
    (migrations / "0001_create_users.sql").write_text("CREATE TABLE users (id int);\n")
    (migrations / "0002_add_name.sql").write_text("ALTER TABLE users ADD name text;\n")
    suite.commit()
    applied = "CREATE TABLE users (id bigint);\n"  # what ran before the file was edited
    checksum = hashlib.sha256(applied.encode()).hexdigest()
    assert postgres("CREATE DATABASE auth").returncode == 0
    assert postgres("CREATE TABLE schema_migrations (version int PRIMARY KEY, name text, "
                    f"checksum text); INSERT INTO schema_migrations VALUES (1, 'create_users', "
                    f"'{checksum}')", "auth").returncode == 0  # fmt: skip
    result, rows = suite.preflight("migrations")
    assert_failed(result, rows, "migrations", "auth: 0001_create_users.sql changed after it was "
                  "applied", "never edit an applied migration")  # fmt: skip


# --- the items that read a remote host, through the host's runner


def test_remote_items_read_the_host_through_its_runner(tmp_path):
    """The host is this machine here: the same commands (stat, df, cat) that go over SSH to
    a staging host run through a runner bound to it; only the connection is left out."""
    config = config_in(tmp_path, env="remote1", **STRONG)
    events = Events(json_mode=True, err=io.StringIO())
    session = Session(config, events, Runner(events))
    host = Target(config, SimpleNamespace(host=SimpleNamespace(name="app1")), session.runner,
                  layout(str(tmp_path / "srv"), "remote1"))  # fmt: skip
    (Path(host.layout.current)).mkdir(parents=True)
    (Path(host.layout.current) / ".env").write_text("POSTGRES_PASSWORD=x\n")
    (Path(host.layout.current) / ".env").chmod(0o644)
    _, mid, leaf, key = pki(("localhost",), start=dt.datetime.now(dt.UTC))
    Path(host.layout.tls).mkdir(parents=True)
    (Path(host.layout.tls) / "fullchain.pem").write_bytes(pem(leaf, mid))
    (Path(host.layout.tls) / "privkey.pem").write_bytes(key_pem(key))
    (Path(host.layout.tls) / "privkey.pem").chmod(0o600)
    probe = checks.Probe(session, tmp_path, dt.datetime.now(dt.UTC), ExitStack(), _target=host)

    files = checks.secret_files_private(probe)
    env_file = f"{host.layout.current}/.env"
    assert files.result == "failed" and f"app1:{env_file} is mode 0644" in files.evidence
    assert files.fix == f"chmod 600 {env_file}"
    assert f"app1:{host.layout.tls}/privkey.pem" not in files.evidence  # 0600: fine

    disk = checks.disk_free(probe)
    assert disk.result == "passed" and f"({host.layout.root})" in disk.evidence

    cert = checks.tls_certificate(probe)  # certbot's place on the host; this machine's CAs
    assert cert.result == "failed" and f"app1:{host.layout.tls}/fullchain.pem" in cert.evidence
    assert "no valid chain to a trusted root" in cert.evidence  # the test CA is trusted nowhere
    assert "inv certs.issue --env=remote1" in cert.fix
