"""The deploy lock: one per environment, on its first host, taken with an atomic `mkdir`.

Inside the lock folder, info.json says who holds it, since when, for which release and from
which CI run. It is released in a `finally`, also on Ctrl-C (SIGINT) and SIGTERM; only its
holder's token releases it, unless a person breaks a stale lock deliberately.

A deploy killed outright (SIGKILL, a lost runner) runs no `finally`: so the holder touches a
`heartbeat` file in the lock every HEARTBEAT_SECONDS, and a lock whose heartbeat is older than
the TTL (DEPLOY_LOCK_TTL_SECONDS, judged on the host's own clock) is stale. `inv lock.status`
says so; the next deploy takes it over, says so, and the audit log records it: never silently.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from types import FrameType

from deploysuite.config.layers import Config
from deploysuite.core.errors import ConfigError, SuiteError
from deploysuite.core.ssh import SshConnection

POLL_SECONDS = 2.0
HEARTBEAT_SECONDS = 10.0
DEFAULT_TTL_SECONDS = 120  # a dozen missed heartbeats: the holder is gone, not slow


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


def lock_ttl(config: Config) -> int:
    """DEPLOY_LOCK_TTL_SECONDS: how long a lock may go without a heartbeat before it is stale."""
    text = config.get("DEPLOY_LOCK_TTL_SECONDS") or str(DEFAULT_TTL_SECONDS)
    if not text.isdigit() or int(text) <= 2 * HEARTBEAT_SECONDS:
        raise ConfigError(
            f"DEPLOY_LOCK_TTL_SECONDS={text!r}: a whole number of seconds above "
            f"{2 * HEARTBEAT_SECONDS:.0f} (two heartbeats)",
            f"set it in environments/{config.env}/config.env (default {DEFAULT_TTL_SECONDS})",
        )
    return int(text)


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


def heartbeat_argv(path: str, token: str) -> tuple[str, ...]:
    """Touch the heartbeat, only while the lock is still this holder's (a lock taken over from
    a holder thought dead is not kept alive by it)."""
    return ("sh", "-c", 'grep -q "$2" "$1/info.json" && touch "$1/heartbeat"', "sh", path, token)


def heartbeat_age_argv(path: str) -> tuple[str, ...]:
    """Seconds since the last heartbeat on the host's clock (a lock without one, from an older
    suite: since the lock was made); exit 3 when there is no lock."""
    script = ('now=$(date +%s); t=$(stat -c %Y "$1/heartbeat" 2>/dev/null || '
              'stat -c %Y "$1" 2>/dev/null) || exit 3; echo $((now - t))')  # fmt: skip
    return ("sh", "-c", script, "sh", path)


def take_over_argv(path: str, token: str) -> tuple[str, ...]:
    """Move the stale lock aside, then remove it: of two deploys taking it over at once, only
    one rename succeeds; both then race for the mkdir, as for any free lock."""
    return ("sh", "-c", 'mv "$1" "$1.stale-$2" && rm -rf "$1.stale-$2"', "sh", path, token)


def heartbeat_age(conn: SshConnection, path: str) -> int | None:
    code, out, _ = conn.run(heartbeat_age_argv(path))
    try:
        return int(out.strip()) if code == 0 else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Takeover:
    """A stale lock this deploy took over: whose it was and how long it had been silent."""

    previous: LockInfo | None
    silent_seconds: int
    ttl_seconds: int

    def describe(self, now: dt.datetime) -> str:
        who = self.previous.describe(now) if self.previous else "an unreadable holder"
        return (f"took over the stale deploy lock ({who}; no heartbeat for "
                f"{self.silent_seconds} s, TTL {self.ttl_seconds} s)")  # fmt: skip


def take_over_if_stale(conn: SshConnection, path: str, ttl: int, token: str) -> Takeover | None:
    age = heartbeat_age(conn, path)
    if age is None or age <= ttl:
        return None
    previous = read_info(conn, path)
    if conn.run(take_over_argv(path, token))[0] != 0:
        return None  # another deploy moved it first
    return Takeover(previous, age, ttl)


class Heartbeat:
    """Touches the lock's heartbeat from a daemon thread until stopped. A failed touch (the
    connection being replaced, a dropped network) is retried at the next beat."""

    def __init__(self, conn: SshConnection, path: str, token: str, every: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(conn, path, token, every), name="deploy lock heartbeat",
            daemon=True,
        )  # fmt: skip

    def _run(self, conn: SshConnection, path: str, token: str, every: float) -> None:
        while not self._stop.wait(every):
            try:
                conn.run(heartbeat_argv(path, token), timeout=30)
            except Exception:  # the next beat tries again
                continue

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=35)


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
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    on_takeover: Callable[[Takeover], None] | None = None,
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
) -> Iterator[LockInfo]:
    """Hold the environment's lock for the block: wait up to `wait_seconds` for a live holder,
    take over a stale one (`on_takeover` is told), keep the heartbeat going, release at the
    end whatever happens."""
    info = new_info(release_id, dt.datetime.now(dt.UTC), environ or os.environ)
    started = time.monotonic()
    while not try_acquire(conn, path, info):
        taken = take_over_if_stale(conn, path, ttl_seconds, info.token)
        if taken is not None:
            if on_takeover is not None:
                on_takeover(taken)
            continue
        waited = time.monotonic() - started
        if waited >= wait_seconds:
            raise holder_error(conn, path, env, waited)
        time.sleep(min(POLL_SECONDS, wait_seconds - waited))
    conn.run(heartbeat_argv(path, info.token))

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        with Heartbeat(conn, path, info.token, heartbeat_seconds):
            yield info
    except _Terminated:
        raise KeyboardInterrupt from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        if not conn.alive():  # the connection died under the deploy: the lock must still go
            conn.reconnect()
        release(conn, path, info.token)
