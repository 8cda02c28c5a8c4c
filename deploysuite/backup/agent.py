"""The backup service of the compose file (profile `backup`): runs the schedule on the stack's
host, beside PostgreSQL, and records what it did for its healthcheck.

    python3 -m deploysuite.backup.agent run      the service: loop until SIGTERM
    python3 -m deploysuite.backup.agent once     one dump of every database now (then exit)
    python3 -m deploysuite.backup.agent health   the healthcheck: exit 1 naming every problem

Every loop (10 s) it
- ships the WAL segments PostgreSQL's archive_command copied into the spool volume to S3
  (zstd, SHA-256 in the object's metadata), deleting each from the spool only once S3 has it;
- dumps every database every BACKUP_INTERVAL_HOURS (the same path as `inv backup`, through the
  server's socket), reads each dump back from S3 to verify it, and only then applies retention;
- takes a base backup (pg_basebackup) every BASEBACKUP_INTERVAL_HOURS when WAL archiving is on.
A failed run is retried after BACKUP_RETRY_MINUTES and posted to NOTIFY_WEBHOOK_URL. The state
(status.json in BACKUP_STATE_DIR) is what the healthcheck judges: the newest verified backup
against the RPO, the spool's oldest segment against WAL_MAX_LAG_SECONDS, the archiver's last
failure, the last run's error and the loop's heartbeat. While `run` loops, the same state is
served as Prometheus metrics on BACKUP_METRICS_ADDRESS:BACKUP_METRICS_PORT (`GET /metrics`).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from deploysuite.backup import catalog as bk
from deploysuite.backup import dump, metrics, pitr, postgres, wal
from deploysuite.backup import s3 as s3store
from deploysuite.backup.context import BackupContext, open_bucket
from deploysuite.config.layers import Config, load_config
from deploysuite.config.session import Session
from deploysuite.core import notify
from deploysuite.core.errors import SuiteError
from deploysuite.core.events import Events
from deploysuite.core.runner import Runner

LOOP_SECONDS = 10
STATUS_FILE = "status.json"


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(when: dt.datetime | None) -> str | None:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds") if when else None


@dataclass(frozen=True)
class AgentSettings:
    env: str
    interval: dt.timedelta
    base_interval: dt.timedelta
    retry: dt.timedelta
    rpo_hours: float
    keep: int
    retention_days: int
    wal_archiving: bool
    wal_max_lag_seconds: float
    spool: Path
    state_dir: Path
    metrics_address: str
    metrics_port: int


def agent_settings(config: Config) -> AgentSettings:
    def env_number(key: str) -> float:
        raw = config.require(key)
        try:
            value = float(raw)
        except ValueError:
            raise SuiteError(f"{key}={raw!r} is not a number", f"fix {key}") from None
        if value <= 0:
            raise SuiteError(f"{key}={raw!r} must be more than 0", f"fix {key}")
        return value

    raw_port = config.require("BACKUP_METRICS_PORT")
    if not (raw_port.isascii() and raw_port.isdigit()) or not 1 <= int(raw_port) <= 65535:
        raise SuiteError(f"BACKUP_METRICS_PORT={raw_port!r} is not a TCP port (1-65535)",
                         "fix BACKUP_METRICS_PORT")  # fmt: skip

    return AgentSettings(
        env=config.require("BACKUP_ENV"),
        interval=dt.timedelta(hours=env_number("BACKUP_INTERVAL_HOURS")),
        base_interval=dt.timedelta(hours=env_number("BASEBACKUP_INTERVAL_HOURS")),
        retry=dt.timedelta(minutes=env_number("BACKUP_RETRY_MINUTES")),
        rpo_hours=env_number("BACKUP_RPO_HOURS"),
        keep=int(env_number("BACKUP_KEEP")),
        retention_days=int(env_number("BACKUP_RETENTION_DAYS")),
        wal_archiving=config.require("POSTGRES_ARCHIVE_MODE") == "on",
        wal_max_lag_seconds=env_number("WAL_MAX_LAG_SECONDS"),
        spool=Path(config.require("WAL_SPOOL_DIR")),
        state_dir=Path(config.require("BACKUP_STATE_DIR")),
        metrics_address=config.require("BACKUP_METRICS_ADDRESS"),
        metrics_port=int(raw_port),
    )


def container_session(environ: dict[str, str]) -> Session:
    """Config from the defaults and the process environment only (compose passes every value)."""
    config = load_config(environ.get("BACKUP_ENV", "local"), process_env=environ, with_files=False)
    masker = config.masker()
    events = Events(json_mode=False, verbose=False, masker=masker)
    return Session(config, events, Runner(events, masker))


def read_status(state_dir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((state_dir / STATUS_FILE).read_text()))
    except (OSError, ValueError):
        return {}


def write_status(state_dir: Path, status: dict[str, Any]) -> None:
    """Atomically: the healthcheck never reads half a file."""
    path = state_dir / STATUS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


class Agent:
    def __init__(self, s: Session, settings: AgentSettings) -> None:
        self.s = s
        self.settings = settings
        self.store, self.s3 = open_bucket(s)
        self.pg = postgres.Postgres(s, s.runner, None, s.config.require("POSTGRES_USER"))
        self.ctx = BackupContext(s, self.pg, self.store, self.s3)
        self.status = read_status(settings.state_dir)
        self.system_id: str | None = None

    # --- schedule ---------------------------------------------------------------------------

    def due(self, key: str, every: dt.timedelta, now: dt.datetime) -> bool:
        retry_at = self.status.get(f"{key}_retry_at")
        if retry_at:
            return now >= dt.datetime.fromisoformat(retry_at)
        last = self.status.get(key)
        return not last or now - dt.datetime.fromisoformat(last) >= every

    def learn_from_s3(self) -> None:
        """After a restart, the schedule goes on from what S3 holds, not from zero."""
        databases = list(postgres.databases(self.s.config))
        newest = []
        for db in databases:
            found = dump.list_backups(self.store, self.s3, self.settings.env, db)
            found = [m for m in found if m.get("kind") == "scheduled" and m.get("verified")]
            newest.append(max((str(m["finished"]) for m in found), default=None))
        if all(newest):
            oldest_newest = min(n for n in newest if n)
            self.status.setdefault("newest_verified", oldest_newest)
            self.status.setdefault("dumps", oldest_newest)
        if self.settings.wal_archiving:
            bases = pitr.list_bases(self.store, self.s3, self.settings.env)
            if bases:
                last = max(str(m["finished"]) for m in bases)
                self.status.setdefault("newest_base", last)
                self.status.setdefault("base", last)

    def tick(self) -> None:
        now = now_utc()
        self.status["heartbeat"] = iso(now)
        if self.settings.wal_archiving:
            self.guard("wal", self.ship_wal)
        if self.due("dumps", self.settings.interval, now):
            self.guard("dumps", self.run_dumps)
        if self.settings.wal_archiving and self.due("base", self.settings.base_interval, now):
            self.guard("base", self.run_base_backup)
        write_status(self.settings.state_dir, self.status)

    def guard(self, key: str, work: Any) -> None:
        """Run one job: a failure is recorded, retried later and posted to the webhook."""
        started = now_utc()
        try:
            work()
        except (SuiteError, OSError, subprocess.SubprocessError) as exc:
            line = exc.one_line() if isinstance(exc, SuiteError) else f"{type(exc).__name__}: {exc}"
            line = self.s.runner.masker(line)
            self.s.events.info(f"error: {key}: {line}")
            self.status["last_error"] = f"{key}: {line}"
            self.status["last_error_at"] = iso(started)
            if key != "wal":
                self.status[f"{key}_retry_at"] = iso(started + self.settings.retry)
            text = f":x: backup service of {self.settings.env}: {key} failed: {line}"
            notify.send(self.s.config, self.s.events, self.s.runner.masker, text)
            return
        if key != "wal":
            self.status[key] = iso(started)
            self.status.pop(f"{key}_retry_at", None)
        if str(self.status.get("last_error", "")).startswith(f"{key}:"):
            self.status.pop("last_error", None)
            self.status.pop("last_error_at", None)

    # --- dumps ------------------------------------------------------------------------------

    def run_dumps(self) -> None:
        """Every database dumped and read back; retention only once all of them verified."""
        records = []
        for db in postgres.databases(self.s.config):
            record = dump.backup_database(self.ctx, db, verify=dump.verify_object)
            records.append(record)
        self.status["newest_verified"] = min(str(r["finished"]) for r in records)
        for db in postgres.databases(self.s.config):
            dump.prune(self.s, self.store, self.s3, db, self.settings.retention_days,
                            self.settings.keep)  # fmt: skip

    # --- WAL --------------------------------------------------------------------------------

    def cluster_id(self) -> str:
        if self.system_id is None:
            self.system_id = self.pg.sql("SELECT system_identifier FROM pg_control_system()")
        return self.system_id

    def ship_wal(self) -> None:
        spool = self.settings.spool
        names = sorted(n for n in os.listdir(spool) if wal.is_archivable(n))
        shipped = 0
        for name in names:
            path = spool / name
            data = subprocess.run(["zstd", "-q", "-3", "-c", str(path)], check=True,
                                  capture_output=True, timeout=120).stdout  # fmt: skip
            key = wal.wal_key(self.store.prefix, self.settings.env, self.cluster_id(), name)
            s3store.put_bytes(self.s3, self.store.bucket, key, data, sse=self.store.sse,
                              Metadata={"sha256": hashlib.sha256(data).hexdigest()})  # fmt: skip
            path.unlink()
            shipped += 1
            self.status["wal_last_shipped"] = name
            self.status["wal_last_shipped_at"] = iso(now_utc())
        self.status["wal_shipped"] = int(self.status.get("wal_shipped", 0)) + shipped
        waiting = [spool / n for n in os.listdir(spool) if wal.is_archivable(n)]
        oldest = min((p.stat().st_mtime for p in waiting), default=None)
        self.status["wal_spool_oldest_seconds"] = round(time.time() - oldest) if oldest else 0
        row = self.pg.sql("SELECT coalesce(last_archived_time::text, '') || '|' || "
                          "coalesce(last_failed_time::text, '') FROM pg_stat_archiver")  # fmt: skip
        archived, _, failed = row.partition("|")
        self.status["archiver_last_archived"] = iso(parse_pg_time(archived))
        self.status["archiver_last_failed"] = iso(parse_pg_time(failed))

    def run_base_backup(self) -> None:
        started = now_utc()
        start = self.pg.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        backup_id = bk.new_backup_id(started, "cluster", "base")
        data_key, manifest_key = wal.base_keys(self.store.prefix, self.settings.env, backup_id)
        # one tar on stdout, with the server's backup_manifest inside it (every file's size and
        # CRC-32C): the restore and the drill check the unpacked files with pg_verifybackup
        producer = ("pg_basebackup", "-U", self.pg.user, "-D", "-", "-Ft", "-X", "none",
                    "-c", "fast")  # fmt: skip
        uploaded = dump.stream_to_s3(self.ctx, producer, data_key, "base backup",
            tool="pg_basebackup",
        )  # fmt: skip
        end = self.pg.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        record: dict[str, object] = {
            "backup_id": backup_id, "kind": "base", "env": self.settings.env,
            "object": data_key, "size": uploaded.size, "sha256": uploaded.sha256,
            "system_id": self.cluster_id(), "wal_start": start, "wal_end": end,
            "postgres_version": self.pg.sql("SHOW server_version_num"), "manifest": True,
            "started": iso(started), "finished": iso(now_utc()),
        }  # fmt: skip
        dump.verify_object(self.s3, self.store.bucket, record)
        record["verified"] = True
        s3store.put_json(self.s3, self.store.bucket, manifest_key, record, sse=self.store.sse)
        self.status["newest_base"] = record["finished"]


def parse_pg_time(text: str) -> dt.datetime | None:
    """`2026-12-02 12:44:23.123+00` (timestamptz::text) -> aware datetime."""
    text = text.strip()
    if not text:
        return None
    if len(text) > 3 and text[-3] in "+-" and text[-2:].isdigit():
        text += ":00"
    return dt.datetime.fromisoformat(text)


class MetricsServer(ThreadingHTTPServer):
    """`GET /metrics`: the state file rendered anew on every scrape, so it shows the latest tick
    without the loop and the server sharing anything but the file."""

    daemon_threads = True

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        if ":" in settings.metrics_address:
            self.address_family = socket.AF_INET6
        super().__init__((settings.metrics_address, settings.metrics_port), MetricsHandler)

    def server_bind(self) -> None:
        # HTTPServer's own also asks the resolver for the host's full name, a lookup that can
        # hang where DNS is slow, for a name nothing here uses.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])


class MetricsHandler(BaseHTTPRequestHandler):
    server: MetricsServer
    # a scraper that connects and sends nothing must not hold a thread for ever
    timeout = 10
    # the default header names the Python version, which no scraper needs
    server_version = "backup-agent"
    sys_version = ""

    def do_GET(self) -> None:
        if urlsplit(self.path).path != "/metrics":
            self.reply(404, "text/plain; charset=utf-8", b"not found: try /metrics\n")
            return
        settings = self.server.settings
        text = metrics.status_metrics(
            read_status(settings.state_dir), now_utc(), rpo_hours=settings.rpo_hours,
            wal_archiving=settings.wal_archiving,
            wal_max_lag_seconds=settings.wal_max_lag_seconds,
        )  # fmt: skip
        self.reply(200, metrics.CONTENT_TYPE, text.encode())

    def reply(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Prometheus scrapes every 15 s: a line each would bury the agent's own log.
        pass


def start_metrics_server(settings: AgentSettings) -> MetricsServer:
    """Bound and serving in a daemon thread; the caller stops it with `shutdown()` and
    `server_close()`."""
    server = MetricsServer(settings)
    # serve_forever notices shutdown() only between polls: 0.1 s rather than its 0.5 s default
    serve = functools.partial(server.serve_forever, poll_interval=0.1)
    threading.Thread(target=serve, name="metrics", daemon=True).start()
    return server


def health(environ: dict[str, str]) -> int:
    s = container_session(environ)
    settings = agent_settings(s.config)
    status = read_status(settings.state_dir)
    problems = wal.health_problems(
        status, now_utc(), rpo_hours=settings.rpo_hours, wal_archiving=settings.wal_archiving,
        wal_max_lag_seconds=settings.wal_max_lag_seconds,
    )  # fmt: skip
    if problems:
        print("unhealthy: " + "; ".join(problems))
        return 1
    print(f"healthy: newest verified backup {status.get('newest_verified')}, "
          f"newest base backup {status.get('newest_base', '-')}, "
          f"WAL shipped {status.get('wal_shipped', 0)}")  # fmt: skip
    return 0


def serve_metrics(s: Session, settings: AgentSettings) -> MetricsServer | None:
    """None when the address cannot be bound: the backups matter more than their metrics, and
    Prometheus's BackupMetricsAbsent alert reports the missing target."""
    address = f"{settings.metrics_address}:{settings.metrics_port}"
    try:
        server = start_metrics_server(settings)
    except OSError as exc:
        s.events.info(f"error: metrics: cannot listen on {address}: {exc.strerror or exc}; "
                      "backups go on without metrics (fix BACKUP_METRICS_PORT)")  # fmt: skip
        return None
    s.events.info(f"metrics on http://{address}/metrics")
    return server


def read_secret_files(environ: dict[str, str]) -> None:
    """<VAR>_FILE -> VAR: the secrets the deploy mounts as files (/run/secrets), read into this
    process alone (a child sees only what it is given: PGPASSWORD for libpq)."""
    for key in [k for k in environ if k.endswith("_FILE") and environ[k].strip()]:
        var = key.removesuffix("_FILE")
        if environ.get(var):
            raise SystemExit(f"both {var} and {key} are set: set one of them")
        try:
            environ[var] = Path(environ.pop(key).strip()).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SystemExit(f"{key} cannot be read: {exc.strerror}") from None


def main(argv: list[str], environ: dict[str, str]) -> int:
    command = argv[0] if argv else "run"
    read_secret_files(environ)
    # libpq's own variables, for pg_dump, psql and pg_basebackup run by the agent
    environ.setdefault("PGHOST", "/var/run/postgresql")
    if environ.get("POSTGRES_PASSWORD"):
        environ.setdefault("PGPASSWORD", environ["POSTGRES_PASSWORD"])
    os.environ.update({k: environ[k] for k in ("PGHOST", "PGPASSWORD") if k in environ})
    try:
        if command == "health":
            return health(environ)
        s = container_session(environ)
        agent = Agent(s, agent_settings(s.config))
        if command == "once":
            agent.guard("dumps", agent.run_dumps)
            write_status(agent.settings.state_dir, agent.status)
            return 1 if str(agent.status.get("last_error", "")).startswith("dumps:") else 0
        if command != "run":
            print(f"unknown command {command!r}: use run, once or health", file=sys.stderr)
            return 2
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        s.events.info(f"backup service of '{agent.settings.env}': dumps every "
                      f"{agent.settings.interval}, WAL archiving "
                      f"{'on' if agent.settings.wal_archiving else 'off'}")  # fmt: skip
        server = serve_metrics(s, agent.settings)
        try:
            agent.learn_from_s3()
            while not stop.is_set():
                agent.tick()
                stop.wait(LOOP_SECONDS)
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()
        return 0
    except SuiteError as exc:
        print(exc.one_line(), file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], dict(os.environ)))
