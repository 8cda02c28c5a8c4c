"""Benchmark: `inv backup` and `inv restore` against the raw tools, side by side in one run.

A PostgreSQL server from the stack's image and an S3 API server (moto's server) on loopback;
a generated database (`--size-mb`, 1 GB by default; a second one of a tenth of it for the
memory comparison):

  dump throughput   raw `pg_dump -Fc -Z0 > /dev/null` (the dump's own limit),
                    `pg_dump -Fc | gzip -6 > /dev/null` (the usual script), and ours
                    (pg_dump -Fc -Z0 | zstd -3 | SHA-256 | S3 multipart upload)
  compression       bytes stored by ours vs gzip -6 of the same dump
  peak RSS          of the whole backup process tree, at both sizes
  temporary disk    bytes written under the backup's TMPDIR while it runs (polled)
  restore           ours (verify, safety backup, restore aside, swap) vs raw
                    `zstd -dc | pg_restore -d` of the same object

    .venv/bin/python bench/backup.py [--size-mb 1024]

Writes bench/results/backup.json. Needs the base images (inv images.bootstrap).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import REPO, median, row, stats, write

sys.path.insert(0, str(REPO))
from deploysuite.images.recipes import base_image_ref
from tests.integration.conftest import S3Server

PROJECT = f"benchbackup{os.getpid()}"
CONTAINER = f"{PROJECT}-postgres-1"
USER = "mysaaschat"
BIG, SMALL = "auth", "chat"  # database names the suite knows


def sh(*argv: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


def sql(query: str, db: str = "postgres") -> str:
    return sh("docker", "exec", CONTAINER, "psql", "-X", "-U", USER, "-d", db, "-v",
              "ON_ERROR_STOP=1", "-tAc", query).stdout.strip()  # fmt: skip


def start_postgres() -> None:
    sh("docker", "run", "-d", "--name", CONTAINER, "--shm-size", "256m",
       "-e", f"POSTGRES_USER={USER}", "-e", f"POSTGRES_PASSWORD={secrets.token_hex(12)}",
       "-e", "POSTGRES_DB=mysaaschat", base_image_ref("postgres"))  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        logs = subprocess.run(["docker", "logs", CONTAINER], capture_output=True, text=True)
        if "init process complete" in logs.stdout + logs.stderr:
            try:
                if sql("SELECT 1") == "1":
                    return
            except subprocess.CalledProcessError:
                pass
        time.sleep(0.5)
    raise SystemExit("PostgreSQL did not start")


def generate(db: str, size_mb: int) -> int:
    """Rows that look like an app's: ids, times, repeated names, hashes, some free text."""
    sql(f"CREATE DATABASE {db}")
    sql("CREATE TABLE schema_migrations (version int PRIMARY KEY); "
        "INSERT INTO schema_migrations VALUES (1); "
        "CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz, account text, "
        "kind text, digest text, payload text)", db)  # fmt: skip
    rows = size_mb * 1024 * 1024 // 200
    sql("INSERT INTO events SELECT g, now() - g * interval '1 second', "
        "'account-' || (g % 5000), (ARRAY['login','message','invoice','view'])[1 + g % 4], "
        "md5(g::text), md5((g % 997)::text) || ' ' || repeat(chr(97 + g % 26), 40) || ' ' "
        f"|| md5(random()::text) FROM generate_series(1, {rows}) g", db)  # fmt: skip
    sql("VACUUM ANALYZE events", db)
    return int(sql(f"SELECT pg_database_size('{db}')"))


def timed_shell(script: str) -> tuple[float, int]:
    """Wall seconds and the bytes the pipeline wrote to its end (counted with wc -c)."""
    started = time.perf_counter()
    out = sh("bash", "-o", "pipefail", "-c", script + " | wc -c").stdout
    return time.perf_counter() - started, int(out.strip())


def dump(db: str, tail: str) -> str:
    return f"docker exec {CONTAINER} pg_dump -Fc {tail} -U {USER} {db}"


class TmpWatch:
    """The peak of bytes under a folder while something runs (the backup's TMPDIR)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.peak, self.stop = folder, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            size = sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())
            self.peak = max(self.peak, size)
            time.sleep(0.1)

    def __enter__(self) -> TmpWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def measured_inv(env: dict[str, str], *args: str) -> tuple[float, int, dict, int]:
    """Wall seconds, peak RSS (KiB) of the whole process tree, the --json result, and the peak
    bytes of its TMPDIR."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-tmpdir-"))
    probe = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(time.perf_counter() - t)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "print(p.returncode)\n"
        "sys.stdout.write(p.stdout)\n"
        "sys.stderr.write(p.stderr)\n"
    )
    with TmpWatch(tmp) as watch:
        result = subprocess.run(
            [sys.executable, "-c", probe, sys.executable, "-m", "invoke", "-r", str(REPO),
             *args, "--json"],
            capture_output=True, text=True, env={**env, "TMPDIR": str(tmp)}, cwd=REPO,
        )  # fmt: skip
    lines = result.stdout.split("\n", 3)
    if len(lines) < 4 or lines[2].strip() != "0":
        raise SystemExit(f"inv {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return float(lines[0]), int(lines[1]), json.loads(lines[3]), watch.peak


def timed_row(
    case: str, metric: str, ours: list[float], unit: str, baseline: str, base: list[float]
) -> dict[str, object]:
    """A row of medians with every run's min/median/max on both sides."""
    entry = row(case, metric, median(ours), unit, baseline, median(base), len(ours))
    entry["value_runs"], entry["baseline_runs"] = stats(ours), stats(base)
    return entry


def phase_seconds(doc: dict) -> dict[str, float]:
    """Top-level phases of a --json result: title -> seconds."""
    return {p["phase"]: p["seconds"] for p in doc.get("phases", []) if p.get("depth") == 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=("all", "backup", "restore"), default="all")
    parser.add_argument("--name", default="backup", help="results file bench/results/NAME.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    s3 = S3Server(work, Path(sys.executable).parent / "moto_server")
    s3.wait()
    start_postgres()
    rows: list[dict[str, object]] = []
    size = f"{args.size_mb / 1024:g} GiB"
    try:
        bucket = s3.new_bucket()
        env = {
            **os.environ, "COMPOSE_PROJECT_NAME": PROJECT, "POSTGRES_USER": USER,
            "S3_ENDPOINT_URL": s3.endpoint, "S3_BUCKET": bucket,
            "S3_ACCESS_KEY_ID": s3.access_key, "S3_SECRET_ACCESS_KEY": s3.secret_key,
        }  # fmt: skip
        big = generate(BIG, args.size_mb)
        small = generate(SMALL, max(args.size_mb // 10, 50))
        mib = 1024 * 1024
        print(f"databases: {BIG} {big / mib:.0f} MiB, {SMALL} {small / mib:.0f} MiB")
        if args.only in ("all", "backup"):
            rows += backup_rows(env, size, big, small, args)
        if args.only in ("all", "restore"):
            rows += restore_rows(env, bucket, s3, work, size, args)
    finally:
        subprocess.run(["docker", "rm", "-f", CONTAINER], capture_output=True, check=False)
        s3.stop()
    print(write(args.name, rows))


def backup_rows(env: dict[str, str], size: str, big: int, small: int, args) -> list[dict]:
    mib = 1024 * 1024
    raw, gzip, zstd, ours, rss, tmp, stored, raw_bytes, gzip_bytes = ([] for _ in range(9))
    for run in range(args.runs):  # side by side: each run times every variant once
        raw_s, raw_b = timed_shell(dump(BIG, "-Z0"))
        gzip_s, gzip_b = timed_shell(dump(BIG, "-Z0") + " | gzip -6")
        zstd_s, _ = timed_shell(dump(BIG, "-Z0") + " | zstd -q -3 -T0 -c")  # ours, minus S3
        ours_s, ours_rss, doc, ours_tmp = measured_inv(env, "backup", "--db", BIG)
        raw.append(big / mib / raw_s)
        gzip.append(big / mib / gzip_s)
        zstd.append(big / mib / zstd_s)
        ours.append(big / mib / ours_s)
        rss.append(ours_rss / 1024)
        tmp.append(ours_tmp)
        stored.append(doc["backups"][0]["size"])
        raw_bytes.append(raw_b)
        gzip_bytes.append(gzip_b)
        print(
            f"run {run + 1}: raw {raw[-1]:.0f} MiB/s, gzip {gzip[-1]:.0f}, zstd {zstd[-1]:.0f}, "
            f"ours {ours[-1]:.0f} MiB/s, RSS {rss[-1]:.0f} MiB, TMPDIR peak {ours_tmp} B"
        )
    _, small_rss, _, _ = measured_inv(env, "backup", "--db", SMALL)
    case = f"backup {size}: throughput"
    return [
        timed_row(case, "database MiB/s", ours, "MiB/s", "raw pg_dump -Fc -Z0 > /dev/null", raw),
        timed_row(case, "database MiB/s", ours, "MiB/s", "pg_dump -Fc | gzip -6", gzip),
        timed_row(case, "database MiB/s", ours, "MiB/s",
                  "pg_dump -Fc -Z0 | zstd -3 > /dev/null (ours without SHA-256 and S3)", zstd),
        row(f"backup {size}: compression", "bytes stored / raw dump bytes",
            median(stored) / median(raw_bytes), "ratio", "pg_dump -Fc | gzip -6",
            median(gzip_bytes) / median(raw_bytes), args.runs),
        timed_row("backup: peak RSS of the process tree", f"at {args.size_mb} MiB", rss, "MiB",
                  f"same at {max(args.size_mb // 10, 50)} MiB", [small_rss / 1024]),
        row("backup: temporary disk", "peak bytes under TMPDIR", max(tmp), "bytes",
            "(goal) 0", 0, args.runs),
    ]  # fmt: skip


def restore_rows(env, bucket: str, s3, work: Path, size: str, args) -> list[dict]:
    """Raw `zstd -dc | pg_restore -d` of the same object into a new database vs `inv restore`
    (verify, restore aside, swap, restart, safety copy), side by side, each run."""
    _, _, made, _ = measured_inv(env, "backup", "--db", BIG)
    record = made["backups"][0]
    local = work / "object.dump.zst"
    local.write_bytes(s3.client().get_object(Bucket=bucket, Key=record["object"])["Body"].read())
    raw, ours, serving, phases = [], [], [], []
    for run in range(args.runs):
        sql(f"DROP DATABASE IF EXISTS raw_restore_{run}")
        sql(f"CREATE DATABASE raw_restore_{run}")
        started = time.perf_counter()
        sh("bash", "-o", "pipefail", "-c",
           f"zstd -dc {local} | docker exec -i {CONTAINER} pg_restore --exit-on-error "
           f"--no-owner -U {USER} -d raw_restore_{run}")  # fmt: skip
        raw.append(time.perf_counter() - started)
        sql(f"DROP DATABASE raw_restore_{run}")
        seconds, _, doc, _ = measured_inv(
            env, "restore", "--db", BIG, "--backup-id", record["backup_id"], "--yes"
        )
        assert doc["counts"]["events"] > 0
        ours.append(seconds)
        serving.append(float(doc.get("serving_seconds") or doc["seconds"]))
        phases.append(phase_seconds(doc))
        print(
            f"run {run + 1}: raw pg_restore {raw[-1]:.1f} s, inv restore {ours[-1]:.1f} s "
            f"(restored and serving after {serving[-1]:.1f} s); phases {phases[-1]}"
        )
    base = "zstd -dc | pg_restore -d (same object, no verify, no safety copy)"
    whole = timed_row(f"restore {size}", "wall time", ours, "s", base, raw)
    whole["phases"] = phases
    rto = timed_row(f"restore {size}: until the restored database serves", "wall time",
                    serving, "s", base, raw)  # fmt: skip
    return [whole, rto]


if __name__ == "__main__":
    main()
