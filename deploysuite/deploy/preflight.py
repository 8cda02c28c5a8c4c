"""Read-only checks of a host before a deploy changes anything: SSH, the engine and Compose
versions, free disk, the deploy lock."""

from __future__ import annotations

import datetime as dt
import re

from deploysuite.core.errors import ChecksFailed
from deploysuite.core.runner import Command
from deploysuite.deploy.lock import lock_path, read_info
from deploysuite.deploy.target import Target

MIN_DOCKER = (20, 10)
MIN_COMPOSE = (2, 20)


def parse_version(text: str) -> tuple[int, int]:
    match = re.match(r"\s*v?(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def parse_df_free_mb(text: str) -> int:
    """`df -Pk PATH`: the Available column of the last line, in MiB."""
    lines = [line for line in text.splitlines() if line.strip()]
    return int(lines[-1].split()[3]) // 1024 if len(lines) >= 2 else 0


def free_disk_argv(path: str) -> tuple[str, ...]:
    """df of the nearest folder that exists on the way to `path` (a first deploy has none)."""
    script = 'd=$1; while [ ! -d "$d" ]; do d=$(dirname "$d"); done; df -Pk "$d"'
    return ("sh", "-c", script, "sh", path)


def preflight(t: Target) -> list[dict[str, str]]:
    """Read-only checks of the host; raises ChecksFailed naming every failed one."""
    rows: list[dict[str, str]] = [{"check": "ssh", "result": "ok", "detail": t.conn.host.target}]

    def query(argv: tuple[str, ...]) -> tuple[bool, str]:
        result = t.runner.run(Command(argv, mutates=False, timeout=60), check=False)
        return result.ok, (result.stdout.strip() or result.stderr.strip())

    ok, text = query(("docker", "version", "--format", "{{.Server.Version}}"))
    good = ok and parse_version(text) >= MIN_DOCKER
    rows.append(
        {
            "check": "docker",
            "result": "ok" if good else "FAIL",
            "detail": text if good else f"need engine >= 20.10 reachable by the user: {text}",
        }
    )
    ok, text = query(("docker", "compose", "version", "--short"))
    good = ok and parse_version(text) >= MIN_COMPOSE
    rows.append(
        {
            "check": "compose",
            "result": "ok" if good else "FAIL",
            "detail": text if good else f"need Docker Compose v2.20+: {text[:120]}",
        }
    )
    ok, text = query(free_disk_argv(t.layout.root))
    need = int(t.config.get("DEPLOY_MIN_FREE_MB") or 2048)
    free = parse_df_free_mb(text) if ok else 0
    rows.append(
        {
            "check": "disk",
            "result": "ok" if free >= need else "FAIL",
            "detail": f"{free} MiB free under {t.layout.root} (need {need})",
        }
    )
    held = read_info(t.conn, lock_path(t.config.require("DEPLOY_ROOT"), t.config.env))
    rows.append(
        {
            "check": "lock",
            "result": "ok" if held is None else "held",
            "detail": "free" if held is None else held.describe(dt.datetime.now(dt.UTC)),
        }
    )
    failed = [r["check"] for r in rows if r["result"] == "FAIL"]
    if failed:
        for row in rows:
            t.runner.events.info(f"  {row['check']}: {row['result']} ({row['detail']})")
        raise ChecksFailed(
            f"preflight of {t.conn.host.name} failed: {', '.join(failed)}",
            "fix the host (see each check's detail) and deploy again",
        )
    return rows
