"""Point-in-time recovery: the newest base backup before the target, replayed with the archived
WAL up to the target in a scratch PostgreSQL container beside the stack (no network, no
archiving), verified, then each database taken from it through the same safe path as a dump
restore (safety backup, restore aside, swap in one transaction, restart the owner).

Nothing of the live server changes before the replay has reached the target: a missing base
backup, a gap in the WAL, a checksum mismatch or a replay that stops short is one clear error,
and the scratch container is removed whatever happens.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from deploysuite.backup import catalog as bk
from deploysuite.backup import dump, postgres, wal
from deploysuite.backup import restore as restores
from deploysuite.backup import s3 as s3store
from deploysuite.backup.context import BackupContext
from deploysuite.backup.postgres import Postgres
from deploysuite.backup.restore import RestoreOutcome
from deploysuite.config.session import Session
from deploysuite.core.runner import Command

SCRATCH_ROOT = "/var/lib/postgresql/pitr"
DATA_DIR = f"{SCRATCH_ROOT}/data"
WAL_DIR = f"{SCRATCH_ROOT}/wal"
LOG_FILE = f"{SCRATCH_ROOT}/server.log"


def scratch_run_argv(name: str, image: str) -> tuple[str, ...]:
    """A container that only waits: the replay is started in it by hand, as postgres, with no
    network (it must never archive into, or be reached from, the stack)."""
    return ("docker", "run", "-d", "--name", name, "--network", "none", "--user", "postgres",
            "--entrypoint", "sleep", image, "infinity")  # fmt: skip


def start_argv(name: str, target: dt.datetime) -> tuple[str, ...]:
    options = " ".join(wal.recovery_options(target, WAL_DIR))
    return ("docker", "exec", name, "pg_ctl", "-D", DATA_DIR, "-l", LOG_FILE, "-o", options,
            "start")  # fmt: skip


def list_bases(
    store: s3store.S3Settings, s3: s3store.S3Client, env: str
) -> list[dict[str, object]]:
    folder = wal.base_folder(store.prefix, env)
    return [s3store.get_json(s3, store.bucket, item.key)
            for item in s3store.list_keys(s3, store.bucket, folder)
            if item.key.endswith(".manifest.json")]  # fmt: skip


def archived_wal(
    store: s3store.S3Settings, s3: s3store.S3Client, env: str, system_id: str
) -> list[wal.ArchivedWal]:
    folder = wal.wal_folder(store.prefix, env, system_id)
    return [wal.ArchivedWal(item.key[len(folder):].removesuffix(".zst"), item.last_modified)
            for item in s3store.list_keys(s3, store.bucket, folder)]  # fmt: skip


def fetch_wal(
    store: s3store.S3Settings,
    s3: s3store.S3Client,
    env: str,
    system_id: str,
    names: Sequence[str],
    folder: Path,
) -> None:
    """Each WAL file downloaded, its SHA-256 checked against the one recorded when it was
    shipped, and decompressed into `folder`."""
    for name in names:
        key = wal.wal_key(store.prefix, env, system_id, name)
        with s3store.translated(s3, store.bucket, key):
            response = s3.get_object(Bucket=store.bucket, Key=key)
        data = response["Body"].read()
        expected = response.get("Metadata", {}).get("sha256")
        if hashlib.sha256(data).hexdigest() != expected:
            raise bk.BackupError(
                f"archived WAL file {name} fails its checksum; nothing changed",
                "pick a --target-time before it, or restore a dump with --date",
            )
        unzip = ["zstd", "-q", "-dc"]
        raw = subprocess.run(unzip, input=data, capture_output=True, check=True, timeout=120)
        (folder / name).write_bytes(raw.stdout)


def feed(s: Session, scratch: Postgres, source_argv: tuple[str, ...], into: str, what: str) -> None:
    """A local producer's stdout (a tar stream) unpacked into `into` inside the scratch
    container, on the stack's host."""
    unpack = scratch.exec_argv("tar", "-x", "-C", into, stdin=True)
    restores.pipe_into(s, scratch, source_argv, unpack, what)


def scratch_name(s: Session, purpose: str) -> str:
    project = s.config.require("COMPOSE_PROJECT_NAME")
    return f"{project}-{purpose}-{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}"


@contextmanager
def scratch_server(pg: Postgres, name: str) -> Iterator[Postgres]:
    """A container of the live server's own image beside it, with no network, its data and WAL
    folders made; removed whatever happens."""
    inspect = ("docker", "inspect", "--format", "{{.Image}}", pg.container or "")
    image = pg.runner.run(Command(inspect, mutates=False)).stdout.strip()
    scratch = Postgres(pg.s, pg.runner, name, pg.user)
    try:
        pg.runner.run(Command(scratch_run_argv(name, image)))
        pg.runner.run(Command(scratch.exec_argv("mkdir", "-p", "-m", "0700", DATA_DIR, WAL_DIR)))
        yield scratch
    finally:
        pg.runner.run(Command(("docker", "rm", "-f", "-v", name)), check=False)


def verify_base_argv() -> tuple[str, ...]:
    """pg_verifybackup over the unpacked base backup against its own manifest (every file's size
    and checksum); -n: its WAL is archived apart (the replay reads and checks that)."""
    return ("pg_verifybackup", "--no-parse-wal", "--quiet", DATA_DIR)


def unpack_base(s: Session, scratch: Postgres, base: Mapping[str, object], path: Path) -> str:
    """The base backup unpacked into the scratch server's data folder and, when it was taken
    with a manifest, checked file by file with pg_verifybackup: what was checked."""
    feed(s, scratch, ("zstd", "-q", "-dc", str(path)), DATA_DIR,
         f"unpacking base backup {base['backup_id']}")  # fmt: skip
    if not base.get("manifest"):
        return "SHA-256 of the object (taken without a manifest)"
    checked = scratch.runner.run(Command(scratch.exec_argv(*verify_base_argv()), mutates=False),
                                 check=False)  # fmt: skip
    if not checked.ok:
        lines = (checked.stderr or checked.stdout).strip().splitlines()
        raise bk.BackupError(
            f"base backup {base['backup_id']} fails pg_verifybackup: "
            + (lines[0] if lines else f"exit code {checked.returncode}")
            + (f" (+{len(lines) - 1} more)" if len(lines) > 1 else "")
            + "; nothing of the live databases changed",
            "use another base backup (an earlier --target-time), or restore a dump with --date",
        )
    return "SHA-256 of the object and pg_verifybackup of every file"


def wait_promoted(scratch: Postgres, timeout: float) -> None:
    """Until the replay has reached the target and the server accepts writes; a server that
    stopped (a replay that ended before the target) is the log's last lines."""
    deadline = time.monotonic() + timeout
    runner = scratch.runner
    while time.monotonic() < deadline:
        probe = runner.run(Command(scratch.exec_argv("psql", "-X", "-U", scratch.user, "-d",
                                                     "postgres", "-tAc",
                                                     "SELECT pg_is_in_recovery()"),
                                   mutates=False), check=False)  # fmt: skip
        if probe.ok and probe.stdout.strip() == "f":
            return
        alive = runner.run(Command(scratch.exec_argv("pg_ctl", "-D", DATA_DIR, "status"),
                                   mutates=False), check=False)  # fmt: skip
        if not alive.ok:
            break
        time.sleep(1)
    log = runner.run(Command(scratch.exec_argv("tail", "-n", "20", LOG_FILE), mutates=False),
                     check=False).stdout.strip()  # fmt: skip
    lines = [line for line in log.splitlines() if "FATAL" in line] or log.splitlines()
    raise bk.BackupError(
        "the replay did not reach the target: "
        + (lines[-1] if lines else "timed out")
        + "; nothing of the live databases changed",
        "pick an earlier --target-time (inv backup.list shows base backups and WAL)",
    )


def restore_to_time(
    ctx: BackupContext,
    target: dt.datetime,
    databases: Sequence[str],
    confirm: Callable[[str], None],
    timeout: float = 1800,
) -> list[RestoreOutcome]:
    s, pg, store, s3 = ctx.s, ctx.pg, ctx.store, ctx.s3
    env = s.config.env
    base = wal.choose_base(list_bases(store, s3, env), target)
    system_id = str(base["system_id"])
    end = str(base["wal_end"]) if base.get("wal_end") else None
    found = archived_wal(store, s3, env, system_id)
    names = wal.needed_wal(found, str(base["wal_start"]), target, end)
    label = f"{base['backup_id']} + {len(names)} WAL file(s) to {target:%Y-%m-%dT%H:%M:%SZ}"
    name = scratch_name(s, "pitr")
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="pitr-") as tmp:
        folder = Path(tmp)
        with s.events.step(f"verify {label}: size and SHA-256 of each file"):
            base_path = restores.fetch_verified(s, store, s3, base, folder)
            wal_dir = folder / "wal"
            wal_dir.mkdir()
            fetch_wal(store, s3, env, system_id, names, wal_dir)
        if s.runner.dry_run:
            s.events.command(f"[{pg.runner.host}] replay {label} in {name}, then "
                             f"restore {', '.join(databases)}", run=False)  # fmt: skip
            return []
        with scratch_server(pg, name) as scratch:
            with s.events.step(f"replay {label} in a scratch server {name}"):
                unpack_base(s, scratch, base, base_path)
                with tarfile.open(folder / "wal.tar", "w") as bundle:
                    for wal_name in names:
                        bundle.add(wal_dir / wal_name, arcname=wal_name)
                feed(s, scratch, ("cat", str(folder / "wal.tar")), WAL_DIR, "copying the WAL")
                pg.runner.run(Command(scratch.exec_argv("touch", f"{DATA_DIR}/recovery.signal")))
                # pg_ctl fails at once when the replay stops short: the log says why
                pg.runner.run(Command(start_argv(name, target), timeout=120), check=False)
                wait_promoted(scratch, timeout)
            confirm(label)
            for db in databases:
                outcomes.append(take_database(ctx, scratch, db, target, folder))
    return outcomes


def take_database(
    ctx: BackupContext, scratch: Postgres, db: str, target: dt.datetime, folder: Path
) -> RestoreOutcome:
    """`db` as the replay left it, dumped from the scratch server and restored into the live one
    by the dump path (safety backup first, then aside, swap, restart)."""
    started = time.monotonic()
    path = folder / f"{db}.dump.zst"
    with ctx.s.events.step(f"take {db} from the replayed server"):
        dump.dump_to_file(ctx.s, scratch, db, path)
        schema = int(scratch.sql(postgres.SCHEMA_SQL, db) or 0)
    record: Mapping[str, object] = {
        "backup_id": f"pitr-{target:%Y%m%dT%H%M%SZ}", "database": db, "schema_version": schema,
    }  # fmt: skip
    return restores.apply_restore(ctx, db, path, record, 120, started)
