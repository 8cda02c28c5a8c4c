"""Shared fixtures of the integration tests."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from deploysuite.images.recipes import BASE_IMAGES, base_image_ref

REPO = Path(__file__).resolve().parents[2]


def run_task(*args: str, timeout: int = 2400) -> None:
    """Run an `inv` task of the suite the way a user does; fail the test with its output."""
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(REPO), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"inv {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )


@pytest.fixture(scope="session")
def base_images() -> dict[str, str]:
    """The base images as ``{name: image_ref}``, made by the suite's own `inv images.bootstrap`
    (a no-op when every image matches its recipe)."""
    run_task("images.bootstrap")
    return {name: base_image_ref(name) for name in BASE_IMAGES}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """Debian's docker-registry (distribution v2) on loopback, with htpasswd auth."""

    def __init__(self, workdir: Path) -> None:
        import secrets

        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.username = "pusher"
        self.password = secrets.token_urlsafe(24)
        (workdir / "data").mkdir()
        htpasswd = subprocess.run(
            ["htpasswd", "-Bbn", self.username, self.password],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (workdir / "htpasswd").write_text(htpasswd)
        (workdir / "config.yml").write_text(
            "version: 0.1\n"
            f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n"
            f"http:\n  addr: {self.host}\n"
            f"auth:\n  htpasswd:\n    realm: test\n    path: {workdir / 'htpasswd'}\n"
        )
        self.log = (workdir / "registry.log").open("w")
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(workdir / "config.yml")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait(self, timeout: float = 20) -> None:
        import time
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1)
            except urllib.error.HTTPError as exc:
                if exc.code == 401:  # up, and asking for credentials
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"registry on {self.host} did not start")

    def manifest_digest(self, name: str, tag: str) -> str:
        import base64
        import urllib.request

        request = urllib.request.Request(
            f"http://{self.host}/v2/{name}/manifests/{tag}",
            method="HEAD",
            headers={
                "Authorization": "Basic "
                + base64.b64encode(f"{self.username}:{self.password}".encode()).decode(),
                "Accept": "application/vnd.docker.distribution.manifest.v2+json",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.headers["Docker-Content-Digest"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory):
    """A real image registry with htpasswd auth on 127.0.0.1."""
    import shutil

    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry is not installed: run ./scripts/test, which installs it")
    server = Registry(tmp_path_factory.mktemp("registry"))
    try:
        server.wait()
        yield server
    finally:
        server.stop()
        refs = subprocess.run(
            ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}",
             "--filter", f"reference={server.host}/*/*"],
            capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
        if refs:  # the tags the push tests made for this registry
            subprocess.run(["docker", "rmi", *refs], capture_output=True, check=False)


class S3Server:
    """moto's S3 API server on loopback. It accepts any credentials until `authenticating()`
    turns on its IAM checks, so the fixed test keys below only need to look like keys."""

    def __init__(self, workdir: Path, binary: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.region = "us-east-1"
        self.access_key = "AKIAMOTOTESTSUITE000"
        self.secret_key = "moto-test-secret-key-not-checked-000000"
        self.log = (workdir / "moto.log").open("w")
        self.process = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait(self, timeout: float = 30) -> None:
        import time
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"moto_server on {self.endpoint} did not start: see {self.log.name}")

    def settings(self, bucket: str, **changes: object):
        from dataclasses import replace

        from deploysuite.backup.s3 import S3Settings

        s = S3Settings(
            endpoint_url=self.endpoint,
            region=self.region,
            bucket=bucket,
            prefix="mysaaschat",
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            sse="AES256",
            part_size_mb=5,
        )
        return replace(s, **changes)

    def client(self, **changes: object):
        """The suite's own client (deploysuite.backup.s3.client) pointed at this server."""
        from deploysuite.backup.s3 import client

        return client(self.settings("unused", **changes))

    def new_bucket(self) -> str:
        """A fresh, empty bucket: each test gets its own."""
        import uuid

        name = f"test-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=name)
        return name

    @contextlib.contextmanager
    def authenticating(self):
        """Turn on moto's IAM checks for the block; yields (access_key, secret_key) of a user
        allowed s3:* and (access_key, secret_key) of a user with no policy at all."""
        import json
        import uuid

        import boto3

        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )
        keys = []
        for policy in ({"Effect": "Allow", "Action": "s3:*", "Resource": "*"}, None):
            user = f"suite-{uuid.uuid4().hex[:12]}"
            iam.create_user(UserName=user)
            if policy:
                iam.put_user_policy(
                    UserName=user,
                    PolicyName="s3",
                    PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [policy]}),
                )
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys.append((key["AccessKeyId"], key["SecretAccessKey"]))
        self._auth_after(b"0")
        try:
            yield keys[0], keys[1]
        finally:
            self._auth_after(b"inf")

    def _auth_after(self, count: bytes) -> None:
        """moto checks credentials after `count` more requests ("inf": never)."""
        import urllib.request

        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=count,
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request, timeout=10).close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory):
    """A real S3 API server (moto's server mode) on 127.0.0.1."""
    binary = Path(sys.executable).with_name("moto_server")
    if not binary.exists():
        pytest.fail(f"{binary} is not installed: run ./scripts/test, which installs it")
    server = S3Server(tmp_path_factory.mktemp("moto"), binary)
    try:
        server.wait()
        yield server
    finally:
        server.stop()


DEPLOY_USER = "mysaaschat-deploy"


class SshHost:
    """A real sshd on 127.0.0.1 with its own host key, a deploy user allowed to use the Docker
    engine, and that user's key: the "remote" engine is this machine's, reached over SSH."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.address = "127.0.0.1"
        self.user = DEPLOY_USER
        self.host_key = workdir / "ssh_host_ed25519_key"
        self.key_file = workdir / "id_deploy"
        self.other_key = workdir / "id_stranger"
        for key in (self.host_key, self.key_file, self.other_key):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
            )
        self.known_hosts = workdir / "known_hosts"
        public = self.host_key.with_suffix(".pub").read_text().split()
        self.known_hosts.write_text(f"[{self.address}]:{self.port} {public[0]} {public[1]}\n")
        self.fingerprint = subprocess.run(
            ["ssh-keygen", "-lf", str(self.host_key.with_suffix(".pub"))],
            capture_output=True, text=True, check=True,
        ).stdout.split()[1]  # fmt: skip
        self._create_user()
        config = workdir / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress {self.address}\nHostKey {self.host_key}\n"
            f"PidFile {workdir / 'sshd.pid'}\nAuthorizedKeysFile .ssh/authorized_keys\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin no\n"
            f"AllowUsers {self.user}\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)
        self.log = (workdir / "sshd.log").open("w")
        self.process = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stdout=self.log, stderr=self.log
        )

    def _create_user(self) -> None:
        import pwd
        import shutil

        try:
            home = Path(pwd.getpwnam(self.user).pw_dir)
        except KeyError:
            subprocess.run(
                ["useradd", "--create-home", "--shell", "/bin/bash", "--groups", "docker",
                 self.user],
                check=True,
            )  # fmt: skip
            home = Path(pwd.getpwnam(self.user).pw_dir)
        # No password, but not locked: sshd without PAM refuses locked accounts, keys included.
        subprocess.run(["usermod", "--password", "*", self.user], check=True)
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        keys = ssh_dir / "authorized_keys"
        keys.write_text(self.key_file.with_suffix(".pub").read_text())
        keys.chmod(0o600)
        # The host's Docker Compose v2: the same binary the suite's own set-up installed.
        plugins = home / ".docker" / "cli-plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        import compose

        shutil.copy2(Path(compose.__file__).parent / "docker-compose", plugins / "docker-compose")
        for path in (ssh_dir, home / ".docker"):
            subprocess.run(["chown", "-R", f"{self.user}:{self.user}", str(path)], check=True)
        self.home = home

    def wait(self, timeout: float = 15) -> None:
        import socket
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.address, self.port), timeout=1) as sock:
                    if sock.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"sshd on port {self.port} did not start: see {self.workdir}/sshd.log")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="session")
def ssh_host(tmp_path_factory: pytest.TempPathFactory):
    import shutil

    if not Path("/usr/sbin/sshd").exists() or shutil.which("ssh-keygen") is None:
        pytest.fail("openssh-server is not installed: run ./scripts/test, which installs it")
    host = SshHost(tmp_path_factory.mktemp("sshd"))
    try:
        host.wait()
        yield host
    finally:
        host.stop()


# The load retries a GET once when nginx's graceful reload closed the idle keepalive connection
# it went out on (HTTP/1.1 has no way to announce that; browsers retry such a GET, HTTP/2 gets
# GOAWAY); a POST is never retried. A deploy reloads nginx twice per batch: a few such retries
# are that race, more would be something else.
MAX_RETRIED = 3


def no_failure(report: dict) -> bool:
    """0 failed, 0 messages lost, and at most MAX_RETRIED retried GETs (printed)."""
    print(f"load: {report['requests']} requests, {report['failed']} failed, "
          f"{report['retried']} GETs retried after a closed keepalive connection")  # fmt: skip
    return (report["failed"] == 0 and report["messages_lost"] == 0
            and report["retried"] <= MAX_RETRIED)  # fmt: skip
