"""`inv deploy --env=loopback`: the remote deploy through a real sshd (its own host key, a deploy
user) to the real engine behind it, images pushed to and pulled from a real registry.

One stack for the module, driven the way an operator does: refused connections, a first
deploy, a dry run, a change under load (HTTP and WebSockets), a no-op, a broken release rolled
back, a concurrent deploy, Ctrl-C, and `inv rollback`.

The notification webhook is a local HTTP receiver standing in for Slack (which cannot be
reached from here); everything else is real.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.loadgen import BackgroundLoad
from deploysuite.config.layers import load_config
from deploysuite.core.events import Events
from deploysuite.core.runner import Runner
from deploysuite.core.ssh import Host, SshConnection
from deploysuite.deploy.lock import deploy_lock, lock_path, new_info, try_acquire
from deploysuite.engines.state import remove_project
from deploysuite.images.build import images_file, read_images_file
from deploysuite.images.registry import push_all
from tests.integration.conftest import REPO, free_port, no_failure

pytestmark = pytest.mark.integration


def like_a_terminal() -> None:
    """Ctrl-C reaches the child as in a terminal, even when this run was started with SIGINT
    ignored (a background job of a non-interactive shell ignores it, and so would the child)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def watchdog(proc: subprocess.Popen[str], seconds: float = 600) -> Iterator[None]:
    """A deploy that hangs prints every thread's stack (SIGUSR1: the suite's faulthandler) and
    is killed: the test then fails with where it waited, in bounded time."""

    def fire() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGUSR1)
            time.sleep(3)
            proc.kill()

    timer = threading.Timer(seconds, fire)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


ROLLING = ("auth", "chat", "billing", "analytics", "orchestrator", "email-worker")


class Receiver:
    """A Slack-compatible incoming webhook on loopback: keeps every JSON body it gets."""

    def __init__(self) -> None:
        self.messages: list[dict[str, object]] = []
        received = self.messages

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/secret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts(self) -> list[str]:
        return [str(m.get("text", "")) for m in self.messages]


class Remote:
    def __init__(self, ssh_host, registry, s3, workdir: Path) -> None:
        self.ssh = ssh_host
        self.s3 = s3
        self.bucket = s3.new_bucket()
        self.workdir = workdir
        self.project = f"rd{os.getpid()}"
        self.https = free_port()
        self.root = f"{ssh_host.home}/srv-{os.getpid()}"
        self.hosts_file = workdir / "hosts.yml"
        self.write_hosts(ssh_host.known_hosts)
        self.receiver = Receiver()
        self.hooks = workdir / "hooks.log"
        self.env = {
            **os.environ,
            "DEPLOY_HOSTS_FILE": str(self.hosts_file),
            "DEPLOY_ROOT": self.root,
            "IMAGE_REPOSITORY": f"{registry.host}/mysaaschat",
            "REGISTRY_USERNAME": registry.username,
            "REGISTRY_PASSWORD": registry.password,
            "COMPOSE_PROJECT_NAME": self.project,
            "HTTP_PORT": str(free_port()),
            "HTTPS_PORT": str(self.https),
            "PROMETHEUS_PORT": str(free_port()),
            "PUBLIC_URL": f"https://localhost:{self.https}",
            "NOTIFY_WEBHOOK_URL": self.receiver.url,
            "DEPLOY_PRE_HOOK": f'echo "pre $DEPLOY_ENV $DEPLOY_RELEASE" >> {self.hooks}',
            "DEPLOY_POST_HOOK": f'echo "post $DEPLOY_OUTCOME $DEPLOY_RELEASE" >> {self.hooks}',
            "S3_ENDPOINT_URL": s3.endpoint,
            "S3_BUCKET": self.bucket,
            "S3_ACCESS_KEY_ID": s3.access_key,
            "S3_SECRET_ACCESS_KEY": s3.secret_key,
        }
        self.env_dir = f"{self.root}/loopback"
        self.ca_file = REPO / "build" / "loopback" / self.project / "tls" / "ca.pem"

    def write_hosts(self, known_hosts: Path) -> None:
        self.hosts_file.write_text(
            f"known_hosts: {known_hosts}\nhosts:\n  - name: app1\n    address: 127.0.0.1\n"
            f"    port: {self.ssh.port}\n    user: {self.ssh.user}\n    key: {self.ssh.key_file}\n"
        )

    def inv(self, *args: str, timeout: int = 900, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "invoke", "-r", str(REPO), *args],
            cwd=REPO, capture_output=True, text=True, env={**self.env, **env}, timeout=timeout,
        )  # fmt: skip

    def deploy(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.inv("deploy", "--env=loopback", *args, **env)

    def releases(self) -> dict[str, object]:
        result = self.inv("releases", "--env=loopback", "--json")
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout)

    def current(self) -> str | None:
        return self.releases()["current"]  # type: ignore[return-value]

    def containers(self) -> dict[str, str]:
        out = subprocess.run(
            ["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}",
             "--format", "{{.Names}} {{.ID}}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return dict(line.split() for line in out.splitlines())

    def images(self) -> dict[str, str]:
        """service -> the image id its running container was made from."""
        out = subprocess.run(
            ["docker", "ps", "--filter", f"label=com.docker.compose.project={self.project}",
             "--format", '{{.Label "com.docker.compose.service"}} {{.Image}}'],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return dict(line.split() for line in out.splitlines())

    def tree(self) -> list[str]:
        """Every path under the environment's folder on the host (same machine: read directly)."""
        base = Path(self.env_dir)
        return sorted(str(p.relative_to(base)) for p in base.rglob("*")) if base.exists() else []

    def load(self) -> BackgroundLoad:
        return BackgroundLoad(
            f"https://localhost:{self.https}", ca_file=self.ca_file, rate=20, ws_clients=3,
            connect_host="127.0.0.1", retry_closed=True,  # GETs only: see bench/loadgen.py
        )  # fmt: skip

    def remove(self) -> None:
        remove_project(Runner(Events()), self.project)
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(REPO / "build" / "loopback" / self.project, ignore_errors=True)
        self.receiver.server.shutdown()


@pytest.fixture(scope="module")
def remote(ssh_host, registry, s3, base_images, tmp_path_factory):
    r = Remote(ssh_host, registry, s3, tmp_path_factory.mktemp("remote"))
    secrets_ok = r.inv("env.secrets", "--env=loopback")
    assert secrets_ok.returncode == 0, secrets_ok.stderr
    try:
        yield r
    finally:
        r.remove()


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (the sessions of an sshd), read from ps."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = (int(x) for x in line.split())
        children.setdefault(parent, []).append(child)
    found, todo = [], list(children.get(pid, []))
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_an_unknown_host_key_is_refused_before_anything_happens(remote, ssh_host):
    empty = remote.workdir / "known_hosts_empty"
    empty.write_text("")
    remote.write_hosts(empty)
    try:
        result = remote.deploy()
    finally:
        remote.write_hosts(ssh_host.known_hosts)
    assert result.returncode == 7, result.stderr[-2000:]
    line = last_line(result)
    assert "unknown host key" in line and ssh_host.fingerprint in line
    assert f"ssh-keyscan -p {ssh_host.port} 127.0.0.1 >> {empty}" in line
    assert "service images" not in result.stderr  # nothing was built, pushed or shipped
    assert remote.tree() == []


def test_a_wrong_ssh_key_gets_one_clear_line(remote, ssh_host):
    result = remote.deploy(DEPLOY_SSH_KEY=str(ssh_host.other_key))
    assert result.returncode == 7
    line = last_line(result)
    assert f"the server refused the key {ssh_host.other_key} for user {ssh_host.user}" in line
    assert "authorized_keys" in line
    assert remote.tree() == []


def test_first_deploy_ships_a_release_and_passes_smoke(remote, ssh_host):
    user_config = Path(ssh_host.home) / ".docker" / "config.json"
    user_config.unlink(missing_ok=True)  # whatever an older suite's login left there
    result = remote.deploy("--json")
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout)
    assert report["outcome"] == "deployed" and report["previous"] is None
    assert {row["check"] for row in report["preflight"]} == {"ssh", "docker", "compose", "disk",
                                                             "lock"}  # fmt: skip
    assert {"tls", "backups", "dr-drill"} <= set(report["preflight_skipped"])
    assert "not checked by the deploy (inv preflight --env=loopback runs them): " in result.stderr
    assert report["smoke"] and all(row["result"] == "pass" for row in report["smoke"])
    release = report["release"]
    listing = remote.releases()
    assert listing["current"] == release
    folder = Path(remote.env_dir) / "releases" / release
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["outcome"] == "deployed" and manifest["finished"]
    assert set(manifest["images"]) == {*ROLLING, "mailsink", "backup"}
    assert all("@sha256:" in ref for ref in manifest["images"].values())  # pinned by digest
    assert manifest["schema_versions"] == {"auth": "2", "chat": "1", "billing": "3",
                                           "analytics": "2"}  # fmt: skip
    for name in (".env", "services.env.yml"):
        assert (folder / name).stat().st_mode & 0o777 == 0o600
    dotenv = (folder / ".env").read_text()
    # only what compose itself interpolates, and no secret: those are files of their readers
    config = load_config("loopback", process_env=remote.env)
    values = [config.get(s.name) or "" for s in config.schema.values() if s.is_secret]
    values = [v for v in values if len(v) >= 8]
    assert "POSTGRES_PASSWORD" not in dotenv and "AUTH_TOKEN_SECRET" not in dotenv
    generated = (folder / "services.env.yml").read_text()
    assert values and not [v for v in values if v in dotenv or v in generated]
    secret = Path(remote.env_dir) / "secrets" / "auth" / "postgres_password"
    assert (secret.stat().st_mode & 0o777, secret.stat().st_uid) == (0o400, 1001)
    assert secret.read_text() == config.get("POSTGRES_PASSWORD")
    assert (secret.parent.parent.stat().st_mode & 0o777) == 0o700
    # the registry login lived in the release's own folder for the pulls only
    assert not (folder / "docker-config").exists()
    assert not user_config.exists() or not json.loads(user_config.read_text()).get("auths")
    # the deploy lock is gone, the audit log has the deploy, hooks and webhook ran
    assert not Path(lock_path(remote.root, "loopback")).exists()
    audit = json.loads(remote.inv("audit", "--env=loopback", "--json").stdout)["records"]
    assert audit[-1]["release"] == release and audit[-1]["outcome"] == "deployed"
    hooks = remote.hooks.read_text().splitlines()
    assert hooks == [f"pre loopback {release}", f"post deployed {release}"]
    assert any(f"release {release} deployed" in t for t in remote.receiver.texts())


def test_dry_run_prints_the_commands_per_host_and_changes_nothing(remote):
    before = (remote.tree(), remote.containers(), remote.current())
    # what a dry run killed outright left behind an hour ago: its copy, secrets included
    leftover = Path(remote.env_dir) / ".plan-Kill9ed"
    leftover.mkdir(mode=0o700)
    (leftover / ".env").write_text("SECRET=1\n")
    owner = os.stat(remote.env_dir)  # the deploy user's, as its own dry run would have made it
    for path in (leftover, leftover / ".env"):
        os.chown(path, owner.st_uid, owner.st_gid)
    os.utime(leftover, (time.time() - 3600, time.time() - 3600))
    result = remote.deploy("--dry-run", "--set", "LOG_LEVEL=DEBUG")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "removed 1 leftover planning folder(s) of an interrupted --dry-run" in result.stderr
    assert not leftover.exists()
    out = result.stdout  # the plan: every command that would change something, per host
    assert "[app1] $ docker compose --project-name" in out
    assert "--scale auth=2 --scale chat=2" in out
    assert "[app1] write " in out and "/.env (mode 0600" in out
    assert "/tmp/tmp." not in out  # the plan's scratch copy is shown as the release's own folder
    assert f"{remote.env_dir}/releases/" in out
    assert (remote.tree(), remote.containers(), remote.current()) == before


def test_a_change_rolls_every_service_without_a_failed_request_or_lost_message(remote):
    previous = remote.current()
    with remote.load() as background:
        time.sleep(1)
        result = remote.deploy("--no-smoke", "--set", "LOG_LEVEL=WARNING")
        time.sleep(1)
    assert result.returncode == 0, result.stderr[-4000:]
    for service in ROLLING:
        assert f"roll {service} (configuration changed)" in result.stderr
    report = background.report
    assert report["requests"] > 200 and report["messages_sent"] > 50, report
    assert no_failure(report), (
        report["failures"],
        report["samples"],
    )
    assert remote.current() != previous


def test_the_same_deploy_again_changes_nothing(remote):
    current = remote.current()
    result = remote.deploy("--no-smoke", "--set", "LOG_LEVEL=WARNING")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"nothing to do: {current} is live" in result.stderr
    assert remote.current() == current


def test_a_broken_release_rolls_back_while_the_old_version_serves(remote):
    current = remote.current()
    before = remote.containers()
    with remote.load() as background:
        broken = remote.deploy(
            "--no-smoke", "--wait-timeout", "60",
            "--set", "AUTH_DB_NAME=no_such_database",  # the new auth can never become ready
            "--set", "LOG_LEVEL=WARNING",
        )  # fmt: skip
    assert broken.returncode == 9, broken.stderr[-4000:]
    line = last_line(broken)
    assert line.startswith("error: auth: the new container did not become healthy")
    assert f"rolled back to {current}" in line and "--env=loopback --service auth" in line
    # the failed check says why, and the error's line carries it: the database is missing
    assert "healthcheck of" in broken.stderr and "ready 503" in broken.stderr
    assert 'database "no_such_database" does not exist' in line, line
    assert remote.current() == current and remote.containers() == before
    assert no_failure(background.report), (
        background.report["failures"],
        background.report["samples"],
    )
    assert background.report["messages_lost"] == 0, background.report
    failed = [r for r in remote.releases()["releases"] if r["outcome"] == "failed"]
    assert failed and failed[-1]["previous"] == current
    audit = json.loads(remote.inv("audit", "--env=loopback", "--json").stdout)["records"]
    assert audit[-1]["outcome"] == "rolled back"
    assert any("failed and was rolled back" in t for t in remote.receiver.texts())


# The analytics image with one route broken the way a code defect breaks it: every request for
# all counts raises (500), while the health checks and the smoke tests' `counts?name=` pass.
BREAK_ONE_ROUTE = """
import pathlib
app = pathlib.Path("/app/service/analytics_service/app.py")
text = app.read_text()
good = '    if name is None:\\n        return json_response({"counts": await store.counts()})'
assert good in text, "the counts route changed: update this test's patch"
app.write_text(text.replace(good, '    if name is None:\\n        raise RuntimeError("defect")'))
"""


def broken_analytics_image(remote, registry) -> str:
    """Built FROM the analytics image that runs, patched, pushed; repository@digest."""
    built = read_images_file(images_file(REPO, f"{registry.host}/mysaaschat"))
    base = str(built["analytics"]["ref"])
    context = remote.workdir / "broken-analytics"
    context.mkdir(exist_ok=True)
    (context / "patch.py").write_text(BREAK_ONE_ROUTE)
    (context / "Dockerfile").write_text(
        f"FROM {base}\nUSER root\nCOPY patch.py /tmp/patch.py\n"
        "RUN python3 /tmp/patch.py && rm /tmp/patch.py && python3 -m compileall -q /app/service\n"
        "USER 1001:1001\n"
    )
    ref = f"{registry.host}/mysaaschat/analytics:broken-{os.getpid()}"
    subprocess.run(["docker", "build", "-q", "-t", ref, str(context)], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    runner = Runner(Events(json_mode=True))
    auth = {"username": registry.username, "password": registry.password}
    return push_all(runner, [ref], auth)[0].pinned


@contextmanager
def requests_to(
    url: str, ca_file: Path, rate: float = 10, seconds: float = 600
) -> Iterator[Counter]:
    """GET one URL `rate` times a second until the block ends (or `seconds` at most): status ->
    count ("error" for a failed connection)."""
    seen: Counter = Counter()
    stop = threading.Event()
    context = ssl.create_default_context(cafile=str(ca_file))

    def loop() -> None:
        deadline = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, context=context, timeout=5) as answer:
                    seen[answer.status] += 1
            except urllib.error.HTTPError as exc:
                seen[exc.code] += 1
            except OSError:
                seen["error"] += 1
            stop.wait(1 / rate)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=10)


def test_a_release_that_breaks_one_route_is_rolled_back_by_the_bake_window(remote, registry):
    current = remote.current()
    before = remote.images()
    pinned = broken_analytics_image(remote, registry)
    url = f"https://localhost:{remote.https}/api/analytics/counts"
    with requests_to(url, remote.ca_file) as seen:
        time.sleep(5)  # the live release answers the route: the baseline
        result = remote.deploy(
            "--set", f"ANALYTICS_IMAGE={pinned}", "--set", "DEPLOY_BAKE_SECONDS=90",
            "--set", "LOG_LEVEL=WARNING",
        )  # fmt: skip
        during = dict(seen)
        time.sleep(3)
    assert result.returncode == 1, result.stderr[-4000:]  # a check failed, as a smoke check
    line = last_line(result)
    assert line.startswith("error: bake window: analytics answered "), line
    assert "--env=loopback --service analytics" in line
    assert "with 5xx" in line and "0.0% before" in line and f"rolled back to {current}" in line
    # healthy and passing its smoke tests: only the bake window could catch it
    assert "smoke" not in line and "journey:analytics count" in result.stdout + result.stderr
    assert during.get(500, 0) >= 20 and during.get(200, 0) >= 20, during
    # the broken release took traffic (that is how it was caught): the rollback replaced its
    # containers again, with the previous release's images
    assert remote.current() == current and remote.images() == before
    after = dict(seen)
    assert after.get(200, 0) > during.get(200, 0), (during, after)  # answered again
    failed = [r for r in remote.releases()["releases"] if r["outcome"] == "failed"]
    assert failed[-1]["previous"] == current


def test_a_service_image_not_pinned_by_digest_is_refused_before_anything(remote, registry):
    current = remote.current()
    result = remote.deploy("--set", f"ANALYTICS_IMAGE={registry.host}/mysaaschat/analytics:x")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "ANALYTICS_IMAGE=" in last_line(result) and "not pinned by digest" in last_line(result)
    assert remote.current() == current


def test_a_password_rabbitmq_does_not_hold_stops_the_deploy_before_any_change(remote):
    current, before = remote.current(), remote.containers()
    password = secrets.token_urlsafe(32)
    drifted = remote.deploy("--set", f"RABBITMQ_PASSWORD={password}")
    assert drifted.returncode == 2, drifted.stderr[-3000:]
    line = last_line(drifted)
    assert "RabbitMQ's data volume holds another password than RABBITMQ_PASSWORD" in line
    assert "rabbitmqctl change_password" in line
    assert password not in drifted.stderr + drifted.stdout
    assert remote.current() == current and remote.containers() == before


def test_rotation_over_ssh_changes_the_stores_then_the_services_without_a_failed_request(remote):
    secrets_file = REPO / "environments" / "loopback" / "secrets.env"
    before = load_config("loopback", process_env=remote.env)
    with remote.load() as background:
        time.sleep(1)
        # the live release's LOG_LEVEL (the tests after this one expect the stack as it was)
        result = remote.inv("env.rotate", "--env=loopback", "--secret", "POSTGRES_PASSWORD",
                            "--secret", "RABBITMQ_PASSWORD", "--json",
                            LOG_LEVEL="WARNING")  # fmt: skip
        time.sleep(1)
    assert result.returncode == 0, result.stderr[-4000:]
    rows = {r["secret"]: r["result"] for r in json.loads(result.stdout)["rows"]}
    assert rows == {"POSTGRES_PASSWORD": "rotated", "RABBITMQ_PASSWORD": "rotated"}
    report = background.report
    assert report["requests"] > 100 and report["messages_sent"] > 20, report
    assert no_failure(report), (report["failures"], report["samples"])
    after = load_config("loopback", process_env=remote.env)
    for name in ("POSTGRES_PASSWORD", "RABBITMQ_PASSWORD"):
        new = after.get(name) or ""
        assert new and new != before.get(name)
        assert new not in result.stdout + result.stderr and new in secrets_file.read_text()
    # the host's files hold the new value; the stores accept it (no drift: nothing to do)
    on_host = Path(remote.env_dir) / "secrets" / "auth" / "postgres_password"
    assert on_host.read_text() == after.get("POSTGRES_PASSWORD")
    again = remote.deploy("--no-smoke", "--set", "LOG_LEVEL=WARNING")
    assert again.returncode == 0 and "nothing to do" in again.stderr, again.stderr[-3000:]
    audit = json.loads(remote.inv("audit", "--env=loopback", "--json").stdout)["records"]
    rotated = [r for r in audit if r.get("action") == "rotate"]
    assert rotated and rotated[-1]["outcome"] == "rotated"
    assert rotated[-1]["changed"] == ["POSTGRES_PASSWORD", "RABBITMQ_PASSWORD"]


def test_a_concurrent_deploy_is_refused_with_the_holders_details(remote, ssh_host):
    host = Host("app1", "127.0.0.1", ssh_host.known_hosts, ssh_host.port, ssh_host.user,
                ssh_host.key_file)  # fmt: skip
    with SshConnection(host) as conn, deploy_lock(conn, lock_path(remote.root, "loopback"),
                                                  "loopback", "r-held") as info:  # fmt: skip
        started = time.monotonic()
        result = remote.deploy("--no-smoke", "--lock-wait", "3")
        waited = time.monotonic() - started
    assert result.returncode == 8, result.stderr[-2000:]
    line = last_line(result)
    assert f"held by {info.owner}" in line and "release r-held" in line
    assert "inv lock.release --env=loopback" in line
    assert waited >= 3  # it waited for the lock, as asked, then gave up


def test_a_stale_lock_is_taken_over_with_a_warning_and_an_audit_line(remote, ssh_host):
    host = Host("app1", "127.0.0.1", ssh_host.known_hosts, ssh_host.port, ssh_host.user,
                ssh_host.key_file)  # fmt: skip
    path = lock_path(remote.root, "loopback")
    with SshConnection(host) as conn:  # a deploy that died without a word: no heartbeat since
        assert try_acquire(conn, path, new_info("r-dead", dt.datetime.now(dt.UTC), {}))
        conn.run(("touch", "-d", "1 hour ago", path))
    current = remote.current()
    # the live configuration again: the lock is taken over, nothing else changes (the tests
    # after this one expect the stack as it was)
    result = remote.deploy("--no-smoke", "--set", "LOG_LEVEL=WARNING")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"nothing to do: {current} is live" in result.stderr
    assert "warning: took over the stale deploy lock" in result.stderr
    assert "release r-dead" in result.stderr and "TTL 120 s" in result.stderr
    assert not Path(path).exists()
    audit = json.loads(remote.inv("audit", "--env=loopback", "--json").stdout)["records"]
    takeover = [r for r in audit if r["action"] == "lock takeover"]
    assert takeover and takeover[-1]["previous"] == "r-dead", audit[-3:]


def test_ctrl_c_mid_deploy_rolls_back_and_releases_the_lock(remote):
    current = remote.current()
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "-r", str(REPO), "deploy", "--env=loopback",
         "--no-smoke", "--set", "LOG_LEVEL=INFO"],
        cwd=REPO, env=remote.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=like_a_terminal,
    )  # fmt: skip
    lines: list[str] = []
    assert proc.stderr is not None
    with watchdog(proc):
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("✓ roll auth"):  # one service replaced, the next one starting
                proc.send_signal(signal.SIGINT)
                break
        lines += proc.stderr.readlines()
    code = proc.wait(timeout=60)
    text = "".join(lines)
    assert code == 130, text[-3000:]
    assert "interrupted: rolling back" in text and f"roll back to {current}" in text
    assert "the interrupted connection is not reused" in text
    assert not Path(lock_path(remote.root, "loopback")).exists()
    assert remote.current() == current
    # consistent: what runs is exactly the live release (a deploy of it has nothing to do)
    again = remote.deploy("--no-smoke", "--set", "LOG_LEVEL=WARNING")
    assert again.returncode == 0 and "nothing to do" in again.stderr, again.stderr[-3000:]
    status = remote.inv("status", "--env=loopback")
    assert status.returncode == 0, status.stderr[-2000:]


def test_a_dropped_ssh_connection_mid_rollout_rolls_back_over_a_new_one(remote, ssh_host):
    current = remote.current()
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "-r", str(REPO), "deploy", "--env=loopback",
         "--no-smoke", "--set", "LOG_LEVEL=INFO"],
        cwd=REPO, env=remote.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    assert proc.stderr is not None
    with watchdog(proc):
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("✓ roll auth"):  # one service replaced, the next one starting
                # every session of the test sshd dies (the listener stays): the deploy's
                # connection is cut under whatever command it runs, as when a network drops
                for pid in descendants(ssh_host.process.pid):
                    os.kill(pid, signal.SIGKILL)
                break
        lines += proc.stderr.readlines()
    code = proc.wait(timeout=60)
    text = "".join(lines)
    last = text.strip().splitlines()[-1]
    assert code == 7, text[-3000:]
    assert "the SSH connection was lost" in last and f"rolled back to {current}" in last, last
    assert "reconnect to app1" in text and f"roll back to {current}" in text
    assert not Path(lock_path(remote.root, "loopback")).exists()
    assert remote.current() == current
    failed = [r for r in remote.releases()["releases"] if r["outcome"] == "failed"]
    assert failed and failed[-1]["previous"] == current  # the final manifest was written
    audit = json.loads(remote.inv("audit", "--env=loopback", "--json").stdout)["records"]
    assert audit[-1]["outcome"] == "rolled back"
    # consistent: what runs is exactly the live release (a deploy of it has nothing to do)
    again = remote.deploy("--no-smoke", "--set", "LOG_LEVEL=WARNING")
    assert again.returncode == 0 and "nothing to do" in again.stderr, again.stderr[-3000:]


def test_rollback_returns_to_the_previous_release_without_a_hash(remote):
    releases = remote.releases()
    current = releases["current"]
    deployed = sorted(r["release"] for r in releases["releases"] if r["outcome"] == "deployed")
    previous = deployed[deployed.index(current) - 1]
    with remote.load() as background:
        result = remote.inv("rollback", "--env=loopback", "--json")
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout)
    assert report["outcome"] == "rolled back to" and report["release"] == previous
    assert all(row["result"] == "pass" for row in report["smoke"])
    assert remote.current() == previous
    assert no_failure(background.report), (
        background.report["failures"],
        background.report["samples"],
    )
    assert background.report["messages_lost"] == 0, background.report
    # and forward again by a prefix of the release id
    forward = remote.inv("rollback", "--env=loopback", "--to", current[:17], "--no-smoke")
    assert forward.returncode == 0, forward.stderr[-3000:]
    assert remote.current() == current


def s3_keys(remote) -> list[str]:
    listing = remote.s3.client().list_objects_v2(Bucket=remote.bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def test_every_release_manifest_is_also_in_s3(remote):
    keys = s3_keys(remote)
    for item in remote.releases()["releases"]:
        if item["outcome"] in ("deployed", "failed"):
            assert f"mysaaschat/loopback/releases/{item['release']}.manifest.json" in keys


def test_migrations_are_preceded_by_a_backup_of_their_database(remote):
    # auth has no container on the host: its image may bring migrations, which run only after
    # a backup of its database
    subprocess.run(["docker", "rm", "-f", f"{remote.project}-auth-1"], capture_output=True)
    for name in [n for n in remote.containers() if n.startswith(f"{remote.project}-auth-")]:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=True)
    result = remote.deploy("--no-smoke", "--set", "LOG_LEVEL=WARNING")
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stderr
    assert text.index("back up auth") < text.index("migrations of auth")
    backups = json.loads(remote.inv("backup.list", "--env=loopback", "--db", "auth",
                                    "--json").stdout)["backups"]  # fmt: skip
    assert [b["kind"] for b in backups] == ["pre-migration"]


def test_backup_and_restore_of_a_remote_environment_over_ssh(remote):
    made = remote.inv("backup", "--env=loopback", "--db", "chat", "--json")
    assert made.returncode == 0, made.stderr[-3000:]
    record = json.loads(made.stdout)["backups"][0]
    restored = remote.inv("restore", "--env=loopback", "--db", "chat", "--backup-id",
                          record["backup_id"], "--json")  # fmt: skip
    assert restored.returncode == 0, restored.stderr[-3000:]
    report = json.loads(restored.stdout)
    assert report["backup"]["backup_id"] == record["backup_id"]
    assert "messages" in report["counts"]
    assert "restart chat and wait for its readiness" in restored.stderr
    status = remote.inv("status", "--env=loopback")
    assert status.returncode == 0, status.stderr[-2000:]


def test_third_party_images_are_pinned_by_digest_in_the_release(remote, registry):
    """A third-party image named by a tag in a registry is resolved to the digest the registry
    serves when the release is made: the manifest records it, the release's .env names it and
    the container runs it; the loopback's local images, which no registry holds, keep their
    tags and the deploy says so. (Last in the module: it replaces the Redis container.)"""
    local = "mysaaschat/redis:bookworm"
    tag = f"{registry.host}/base/redis:pin-{os.getpid()}"
    subprocess.run(["docker", "tag", local, tag], check=True, capture_output=True)
    auth = {"username": registry.username, "password": registry.password}
    pushed = push_all(Runner(Events(json_mode=True)), [tag], auth)[0].pinned
    result = remote.deploy("--no-smoke", "--json", "--set", f"REDIS_IMAGE={tag}")
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"REDIS_IMAGE: {pushed}" in result.stderr
    assert "kept by tag (no registry answered; staging, production refuse this)" in result.stderr
    assert "POSTGRES_IMAGE=mysaaschat/postgres:bookworm" in result.stderr
    release = remote.current()
    record = next(r for r in remote.releases()["releases"] if r["release"] == release)
    assert record["third_party_images"] == {"REDIS_IMAGE": pushed}
    dotenv = (Path(remote.env_dir) / "releases" / release / ".env").read_text()
    assert f"REDIS_IMAGE='{pushed}'\n" in dotenv and tag not in dotenv
    ids = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={remote.project}",
         "--filter", "label=com.docker.compose.service=redis"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    running = subprocess.run(["docker", "inspect", "--format", "{{.Config.Image}}", *ids],
                             capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert running == [pushed]
