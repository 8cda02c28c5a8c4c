"""The deploy lock on a real host over SSH: atomic, informative, released on every exit."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from deploysuite.core.ssh import Host, SshConnection
from deploysuite.deploy.lock import (
    LockHeld,
    deploy_lock,
    lock_path,
    new_info,
    read_info,
    release,
    try_acquire,
)

pytestmark = pytest.mark.integration


def like_a_terminal() -> None:
    """Ctrl-C reaches the child as in a terminal, even when this run was started with SIGINT
    ignored (a background job of a non-interactive shell ignores it, and so would the child)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def host(ssh_host) -> Host:
    return Host("app1", ssh_host.address, ssh_host.known_hosts, ssh_host.port, ssh_host.user,
                ssh_host.key_file)  # fmt: skip


@pytest.fixture
def path(ssh_host, host) -> str:
    root = f"{ssh_host.home}/srv-lock-{os.getpid()}"
    yield lock_path(root, "staging")
    with SshConnection(host) as conn:
        conn.run(("rm", "-rf", root))


def test_second_deploy_is_refused_with_the_holders_details(host, path):
    with SshConnection(host) as first, SshConnection(host) as second:
        with deploy_lock(first, path, "staging", "r-1", environ={"GITHUB_SERVER_URL": "https://gh",
                         "GITHUB_REPOSITORY": "a/b", "GITHUB_RUN_ID": "7"}) as info:  # fmt: skip
            _, mode, _ = first.run(("stat", "-c", "%a", f"{path}/info.json"))
            assert mode.strip() == "600"
            with pytest.raises(LockHeld) as refused, deploy_lock(second, path, "staging", "r-2"):
                pass
            message = refused.value.what
            assert f"held by {info.owner}" in message and "release r-1" in message
            assert "CI run https://gh/a/b/actions/runs/7" in message
            assert "inv lock.release --env=staging" in refused.value.fix
        assert read_info(first, path) is None
        assert first.run(("test", "-d", path))[0] != 0


def test_waiting_deploy_gets_the_lock_when_it_is_released(host, path):
    with SshConnection(host) as first, SshConnection(host) as second:
        held = new_info("r-1", dt.datetime.now(dt.UTC), {})
        assert try_acquire(first, path, held)
        timer = threading.Timer(2.0, release, (first, path, held.token))
        timer.start()
        started = time.monotonic()
        with deploy_lock(second, path, "staging", "r-2", wait_seconds=20) as info:
            assert read_info(second, path) == info
        assert time.monotonic() - started >= 1.5
        timer.join()


def test_only_the_holder_releases_unless_broken_on_purpose(host, path):
    with SshConnection(host) as conn, deploy_lock(conn, path, "staging", "r-1") as info:
        assert release(conn, path, token="someone-else") is False
        assert read_info(conn, path) == info
        assert release(conn, path, token=None) is True
        assert read_info(conn, path) is None


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from deploysuite.deploy.lock import deploy_lock
    from deploysuite.core.ssh import Host, SshConnection
    address, port, user, key, known, path = sys.argv[1:]
    host = Host("app1", address, Path(known), int(port), user, Path(key))
    with SshConnection(host) as conn, deploy_lock(conn, path, "staging", "r-signal"):
        print("locked", flush=True)
        time.sleep(60)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_deploy_releases_the_lock(ssh_host, host, path, signum):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, host.address, str(host.port), host.user,
         str(host.key_file), str(host.known_hosts), path],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=like_a_terminal,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "locked"
    with SshConnection(host) as conn:
        assert read_info(conn, path) is not None
        proc.send_signal(signum)
        proc.wait(timeout=20)
        assert read_info(conn, path) is None
        assert conn.run(("test", "-d", path))[0] != 0


KILLED_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from deploysuite.deploy.lock import deploy_lock
    from deploysuite.core.ssh import Host, SshConnection
    address, port, user, key, known, path = sys.argv[1:]
    host = Host("app1", address, Path(known), int(port), user, Path(key))
    with SshConnection(host) as conn, deploy_lock(conn, path, "staging", "r-killed",
                                                  heartbeat_seconds=1):
        print("locked", flush=True)
        time.sleep(120)
    """
)


def test_a_killed_deploys_lock_is_taken_over_after_its_ttl_and_never_silently(host, path):
    """SIGKILL: no handler, no finally. While the holder lives its heartbeat keeps the lock; once
    it is dead the next deploy waits out the TTL, takes the lock over and is told whose it was."""
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_HOLDER, host.address, str(host.port), host.user,
         str(host.key_file), str(host.known_hosts), path],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "locked"
        takeovers: list = []
        with SshConnection(host) as second:
            time.sleep(4)  # longer than the TTL below: only the heartbeat keeps the lock alive
            alive = deploy_lock(second, path, "staging", "r-2", wait_seconds=3, ttl_seconds=3,
                                on_takeover=takeovers.append)  # fmt: skip
            with pytest.raises(LockHeld), alive:  # alive: refused, not taken over
                pass
            assert takeovers == []
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            assert read_info(second, path).release == "r-killed"  # left behind
            started = time.monotonic()
            with deploy_lock(second, path, "staging", "r-2", wait_seconds=30, ttl_seconds=3,
                             on_takeover=takeovers.append) as info:  # fmt: skip
                waited = time.monotonic() - started
                assert read_info(second, path) == info
            assert read_info(second, path) is None
    finally:
        proc.kill()
    assert len(takeovers) == 1 and takeovers[0].previous.release == "r-killed"
    assert takeovers[0].silent_seconds > 3
    assert "took over the stale deploy lock" in takeovers[0].describe(dt.datetime.now(dt.UTC))
    assert waited < 30  # it did not wait for --lock-wait to run out


def suite_tree(tmp_path: Path, ssh_host) -> Path:
    shutil.copy(REPO / ".env.example", tmp_path / ".env.example")
    env_dir = tmp_path / "environments" / "staging"
    env_dir.mkdir(parents=True)
    (env_dir / "config.env").write_text("COMPOSE_PROJECT_NAME=mysaaschat\n")
    shutil.copy(ssh_host.known_hosts, env_dir / "known_hosts")
    (env_dir / "hosts.yml").write_text(
        f"hosts:\n  - name: app1\n    address: {ssh_host.address}\n    port: {ssh_host.port}\n"
        f"    user: {ssh_host.user}\n"
    )
    return tmp_path


def test_lock_tasks_show_and_break_a_stale_lock(ssh_host, host, path, tmp_path):
    tree = suite_tree(tmp_path, ssh_host)
    env = {**os.environ, "SUITE_ROOT": str(tree), "DEPLOY_SSH_KEY": str(host.key_file),
           "DEPLOY_ROOT": path.rsplit("/staging/", 1)[0]}  # fmt: skip

    def inv(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "invoke", "-r", str(REPO), *args],
                              capture_output=True, text=True, env=env, timeout=60)  # fmt: skip

    assert "free" in inv("lock.status", "--env=staging").stdout
    with SshConnection(host) as conn:
        info = new_info("r-stale", dt.datetime.now(dt.UTC), {})
        assert try_acquire(conn, path, info)  # a deploy that died without releasing
        shown = inv("lock.status", "--env=staging")
        assert f"held by {info.owner}" in shown.stdout and "release r-stale" in shown.stdout
        assert "STALE" not in shown.stdout and "last heartbeat" in shown.stdout
        conn.run(("touch", "-d", "1 hour ago", path))  # silent for an hour
        stale = inv("lock.status", "--env=staging", "--json")
        row = __import__("json").loads(stale.stdout)["rows"][0]
        assert row["stale"] is True and row["heartbeat_age_seconds"] >= 3600, row
        assert "STALE (TTL 120 s)" in row["state"]
        refused = inv("lock.release", "--env=staging")  # no terminal, no --yes
        assert refused.returncode != 0 and "--yes" in refused.stderr
        assert read_info(conn, path) == info
        broken = inv("lock.release", "--env=staging", "--yes")
        assert broken.returncode == 0, broken.stderr
        assert read_info(conn, path) is None
