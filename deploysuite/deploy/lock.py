"""The deploy lock: one per environment, on its first host, taken with an atomic `mkdir`.

Inside the lock folder, info.json says who holds it, since when, for which release and from
which CI run. It is released in a `finally`, also on Ctrl-C (SIGINT) and SIGTERM; only its
holder's token releases it, unless a person breaks a stale lock deliberately.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import secrets
import signal
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from types import FrameType

from deploysuite.core.errors import SuiteError
from deploysuite.core.ssh import SshConnection

POLL_SECONDS = 2.0


class LockHeld(SuiteError):
    exit_code = 8


@dataclass(frozen=True)
class LockInfo:
    owner: str
    started: str  # ISO 8601, UTC
    release: str
    ci_run_url: str
    token: str
    pid: int

    def describe(self, now: dt.datetime) -> str:
        started = dt.datetime.fromisoformat(self.started)
        age = int((now - started).total_seconds())
        text = f"held by {self.owner} since {self.started} ({age // 60} min {age % 60} s ago)"
        if self.release:
            text += f", release {self.release}"
        if self.ci_run_url:
            text += f", CI run {self.ci_run_url}"
        return text


def lock_path(deploy_root: str, env: str) -> str:
    return f"{deploy_root.rstrip('/')}/{env}/deploy.lock"


def ci_run_url(environ: Mapping[str, str]) -> str:
    """The GitHub Actions run that deploys, when one does."""
    server = environ.get("GITHUB_SERVER_URL")
    repo = environ.get("GITHUB_REPOSITORY")
    run = environ.get("GITHUB_RUN_ID")
    return f"{server}/{repo}/actions/runs/{run}" if server and repo and run else ""


def new_info(release: str, now: dt.datetime, environ: Mapping[str, str]) -> LockInfo:
    return LockInfo(
        owner=f"{getpass.getuser()}@{socket.gethostname()}",
        started=now.replace(microsecond=0).isoformat(),
        release=release,
        ci_run_url=ci_run_url(environ),
        token=secrets.token_hex(16),
        pid=os.getpid(),
    )


def parse_info(text: str) -> LockInfo | None:
    try:
        return LockInfo(**json.loads(text))
    except (ValueError, TypeError):
        return None


def read_info(conn: SshConnection, path: str) -> LockInfo | None:
    code, out, _ = conn.run(("cat", f"{path}/info.json"))
    return parse_info(out) if code == 0 else None


def try_acquire(conn: SshConnection, path: str, info: LockInfo) -> bool:
    """mkdir is atomic on every POSIX file system: exactly one of two racing deploys wins."""
    parent = path.rsplit("/", 1)[0]
    conn.run(("mkdir", "-p", "-m", "0700", parent))
    code, _, err = conn.run(("mkdir", "-m", "0700", path))
    if code != 0:
        if "File exists" in err:
            return False
        raise SuiteError(
            f"cannot create the deploy lock {path}: {err.strip()}", "check DEPLOY_ROOT"
        )
    conn.put(json.dumps(asdict(info)).encode(), f"{path}/info.json", mode=0o600)
    return True


def release(conn: SshConnection, path: str, token: str | None) -> bool:
    """Remove the lock if `token` holds it (None: break it whoever holds it)."""
    if token is not None:
        held = read_info(conn, path)
        if held is not None and held.token != token:
            return False
    code, _, _ = conn.run(("rm", "-rf", path))
    return code == 0


def holder_error(conn: SshConnection, path: str, env: str, waited: float) -> LockHeld:
    held = read_info(conn, path)
    now = dt.datetime.now(dt.UTC)
    who = held.describe(now) if held else "held, with no readable owner information"
    waited_text = f" (waited {waited:.0f} s)" if waited else ""
    return LockHeld(
        f"deploy lock of '{env}' on {conn.host.name} is {who}{waited_text}",
        f"wait for it (--lock-wait SECONDS), or if it is dead: inv lock.release --env={env}",
    )


class _Terminated(BaseException):
    """SIGTERM, turned into an exception so that `finally` blocks run."""


@contextmanager
def deploy_lock(
    conn: SshConnection,
    path: str,
    env: str,
    release_id: str,
    wait_seconds: float = 0,
    environ: Mapping[str, str] | None = None,
) -> Iterator[LockInfo]:
    info = new_info(release_id, dt.datetime.now(dt.UTC), environ or os.environ)
    started = time.monotonic()
    while not try_acquire(conn, path, info):
        waited = time.monotonic() - started
        if waited >= wait_seconds:
            raise holder_error(conn, path, env, waited)
        time.sleep(min(POLL_SECONDS, wait_seconds - waited))

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield info
    except _Terminated:
        raise KeyboardInterrupt from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        if not conn.alive():  # the connection died under the deploy: the lock must still go
            conn.reconnect()
        release(conn, path, info.token)
