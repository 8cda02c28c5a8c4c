"""The locally built base images honour the contract of their official counterparts.

Each image is started with the Docker SDK and exercised from inside (``exec_run``) or
from a throw-away container of the python image that shares its network namespace, so
no port is published. Every container (and its anonymous volumes) is removed afterwards.
"""

import contextlib
import gzip
import io
import secrets
import tarfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator

import docker.errors
import pytest
from docker.models.containers import Container

pytestmark = pytest.mark.integration

TEST_LABEL = {"com.mysaaschat.test": "base-images"}

# Python run in a sidecar sharing the network namespace of the container under test:
# GET argv[1] (with HTTP basic auth when PROBE_USER is set) until the answer has the
# status PROBE_EXPECT and a body containing PROBE_CONTAINS, or PROBE_TIMEOUT seconds have
# passed; print "<status> <body>" and exit 0 only on the expected answer.
HTTP_PROBE = """
import base64, os, sys, time, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1])
if os.environ.get("PROBE_USER"):
    token = f"{os.environ['PROBE_USER']}:{os.environ['PROBE_PASSWORD']}"
    request.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
expected = int(os.environ["PROBE_EXPECT"])
contains = os.environ["PROBE_CONTAINS"]
deadline = time.monotonic() + float(os.environ["PROBE_TIMEOUT"])
while True:
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status, body = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read().decode()
    except OSError as error:
        status, body = 0, repr(error)
    ok = status == expected and contains in body
    if ok or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(status, body)
sys.exit(0 if ok else 1)
"""

RunContainer = Callable[..., Container]


@pytest.fixture(scope="module")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env(timeout=120)
    yield client
    client.close()


@pytest.fixture
def run_container(docker_client: docker.DockerClient) -> Iterator[RunContainer]:
    """Start containers with unique names; remove them and their volumes afterwards.

    ``files`` maps a directory inside the container to ``{file name: (content, mode)}``;
    the files are copied in before the container starts.
    """
    created: list[Container] = []

    def run(
        image: str,
        command: list[str] | None = None,
        *,
        files: dict[str, dict[str, tuple[bytes, int]]] | None = None,
        **kwargs,
    ) -> Container:
        container = docker_client.containers.create(
            image,
            command=command,
            name=f"mysaaschat-test-{uuid.uuid4().hex[:12]}",
            labels=TEST_LABEL,
            **kwargs,
        )
        created.append(container)
        for directory, entries in (files or {}).items():
            assert container.put_archive(directory, _tar(entries))
        container.start()
        return container

    yield run
    for container in created:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)


def _tar(entries: dict[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, (content, mode) in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = mode
            info.mtime = int(time.time())
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _logs(container: Container) -> str:
    return container.logs().decode(errors="replace")


def _exec(container: Container, cmd: list[str] | str, **kwargs) -> tuple[int, str]:
    result = container.exec_run(cmd, **kwargs)
    return result.exit_code, result.output.decode(errors="replace")


def _exec_ok(container: Container, cmd: list[str] | str, **kwargs) -> str:
    code, output = _exec(container, cmd, **kwargs)
    assert code == 0, (
        f"{cmd!r} exited {code}:\n{output}\n--- container logs ---\n{_logs(container)}"
    )
    return output


def _wait_for(container: Container, cmd: list[str], timeout: float, what: str) -> str:
    """Run ``cmd`` in the container until it succeeds; fail if the container stops."""
    deadline = time.monotonic() + timeout
    output = ""
    while time.monotonic() < deadline:
        container.reload()
        if container.status not in ("created", "running"):
            pytest.fail(f"container stopped while waiting for {what}:\n{_logs(container)}")
        code, output = _exec(container, cmd)
        if code == 0:
            return output
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout}s waiting for {what}: {output}\n{_logs(container)}")


def _wait_exit(container: Container, timeout: float) -> int:
    result = container.wait(timeout=timeout)
    return result["StatusCode"]


def _ip_address(container: Container) -> str:
    container.reload()
    address = container.attrs["NetworkSettings"]["IPAddress"]
    assert address, "container has no address on the default bridge network"
    return address


def _proc_uid(container: Container) -> int:
    """Real uid of the container's PID 1."""
    status = _exec_ok(container, ["cat", "/proc/1/status"])
    line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    return int(line.split()[1])


def _http_probe(
    run_container: RunContainer,
    python_image: str,
    target: Container,
    url: str,
    *,
    auth: tuple[str, str] | None = None,
    expect: int = 200,
    contains: str = "",
    timeout: float = 60,
) -> tuple[int, str]:
    """GET ``url`` from a sidecar in ``target``'s network namespace: (exit code, output)."""
    user, password = auth or ("", "")
    probe = run_container(
        python_image,
        ["python3", "-c", HTTP_PROBE, url],
        network_mode=f"container:{target.id}",
        environment={
            "PROBE_USER": user,
            "PROBE_PASSWORD": password,
            "PROBE_EXPECT": str(expect),
            "PROBE_CONTAINS": contains,
            "PROBE_TIMEOUT": str(timeout),
        },
    )
    code = _wait_exit(probe, timeout=timeout + 30)
    return code, _logs(probe)


def _processes(container: Container) -> list[tuple[str, int, int]]:
    """(name, parent pid, uid) of every process in the container."""
    script = (
        "for f in /proc/[0-9]*/status; do "
        "awk '/^Name:/ {n = $2} /^PPid:/ {p = $2} /^Uid:/ {u = $2} END {print n, p, u}' "
        '"$f" 2>/dev/null; done; true'
    )
    output = _exec_ok(container, ["sh", "-c", script])
    rows = [line.split() for line in output.splitlines()]
    return [(name, int(ppid), int(uid)) for name, ppid, uid in (r for r in rows if len(r) == 3)]


# --- image metadata ---------------------------------------------------------------

EXPECTED_CONFIG = {
    "python": {"Cmd": ["python3"], "Entrypoint": None, "User": ""},
    "postgres": {
        "Entrypoint": ["docker-entrypoint.sh"],
        "Cmd": ["postgres"],
        "ExposedPorts": {"5432/tcp"},
        "Volumes": {"/var/lib/postgresql/data"},
        "StopSignal": "SIGINT",
        "User": "",
    },
    "redis": {
        "Entrypoint": ["docker-entrypoint.sh"],
        "Cmd": ["redis-server"],
        "ExposedPorts": {"6379/tcp"},
        "Volumes": {"/data"},
        "WorkingDir": "/data",
    },
    "nginx": {
        "Entrypoint": ["/docker-entrypoint.sh"],
        "Cmd": ["nginx", "-g", "daemon off;"],
        "ExposedPorts": {"80/tcp", "443/tcp"},
        "StopSignal": "SIGQUIT",
    },
    "rabbitmq": {
        "Cmd": ["rabbitmq-server"],
        "ExposedPorts": {"5672/tcp", "15672/tcp"},
        "Volumes": {"/var/lib/rabbitmq"},
    },
    "prometheus": {
        "Entrypoint": ["/bin/prometheus"],
        "Cmd": ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"],
        "ExposedPorts": {"9090/tcp"},
        "Volumes": {"/prometheus"},
        "User": "65534:65534",
    },
    "alertmanager": {
        "Entrypoint": ["/bin/alertmanager"],
        "Cmd": ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"],
        "ExposedPorts": {"9093/tcp"},
        "Volumes": {"/alertmanager"},
        "WorkingDir": "/alertmanager",
        "User": "65534:65534",
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED_CONFIG))
def test_image_config_matches_official_contract(
    name: str, base_images: dict[str, str], docker_client: docker.DockerClient
) -> None:
    config = docker_client.images.get(base_images[name]).attrs["Config"]
    for key, expected in EXPECTED_CONFIG[name].items():
        actual = config.get(key)
        if key == "ExposedPorts":
            assert expected <= set(actual or {}), f"{key}: {actual}"
        elif key == "Volumes":
            assert set(actual or {}) == expected, f"{key}: {actual}"
        else:
            assert (actual or None) == (expected or None), f"{key}: {actual!r}"
    labels = config.get("Labels") or {}
    assert labels.get("org.opencontainers.image.title") == f"mysaaschat/{name}"
    assert labels.get("org.opencontainers.image.description")


# --- python -------------------------------------------------------------------------


def test_python_runs_311_and_creates_venvs(
    base_images: dict[str, str], run_container: RunContainer
) -> None:
    container = run_container(base_images["python"], ["sleep", "300"])
    assert _exec_ok(container, ["python", "--version"]).startswith("Python 3.11.")
    assert _exec_ok(container, ["python3", "--version"]).startswith("Python 3.11.")
    assert _exec_ok(container, ["id", "-u"]).strip() == "0"
    _exec_ok(container, ["python", "-m", "venv", "/tmp/v"])
    prefix = _exec_ok(container, ["/tmp/v/bin/python", "-c", "import sys; print(sys.prefix)"])
    assert prefix.strip() == "/tmp/v"
    assert "pip" in _exec_ok(container, ["/tmp/v/bin/python", "-m", "pip", "--version"])
    # TLS clients find the CA bundle.
    _exec_ok(container, ["test", "-s", "/etc/ssl/certs/ca-certificates.crt"])
    cafile = _exec_ok(
        container, ["python", "-c", "import ssl; print(ssl.get_default_verify_paths().cafile)"]
    )
    assert cafile.strip() == "/usr/lib/ssl/cert.pem"
    _exec_ok(container, ["test", "-s", "/usr/lib/ssl/cert.pem"])


# --- postgres -----------------------------------------------------------------------

INIT_SQL = b"""
CREATE TABLE widgets (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO widgets (name) VALUES ('from-sql');
"""
INIT_SQL_GZ = gzip.compress(b"INSERT INTO widgets (name) VALUES ('from-sql-gz');\n")
# Not executable: the entrypoint sources it, so its helper functions are available.
INIT_SH = b"""
docker_process_sql <<'SQL'
INSERT INTO widgets (name) VALUES ('from-sh');
SQL
"""


def _psql(container: Container, url: str, sql: str) -> tuple[int, str]:
    return _exec(container, ["psql", url, "-v", "ON_ERROR_STOP=1", "-tAc", sql])


def _wait_postgres(container: Container) -> None:
    # The temporary init server listens on the unix socket only, so TCP readiness
    # means the real server is up.
    _wait_for(
        container,
        ["pg_isready", "-h", "127.0.0.1", "-p", "5432"],
        timeout=90,
        what="postgres to accept TCP connections",
    )


def test_postgres_initialises_authenticates_and_keeps_data(
    base_images: dict[str, str], run_container: RunContainer
) -> None:
    password = secrets.token_hex(16)
    container = run_container(
        base_images["postgres"],
        ["postgres", "-c", "shared_buffers=64MB"],
        environment={
            "POSTGRES_USER": "app",
            "POSTGRES_PASSWORD": password,
            "POSTGRES_DB": "appdb",
        },
        files={
            "/docker-entrypoint-initdb.d": {
                "01-schema.sql": (INIT_SQL, 0o644),
                "02-data.sql.gz": (INIT_SQL_GZ, 0o644),
                "03-data.sh": (INIT_SH, 0o644),
            }
        },
    )
    _wait_postgres(container)

    # Loopback connections are trusted by initdb's defaults (as in the official image);
    # connections from any other address go through "host all all all scram-sha-256".
    address = _ip_address(container)
    good_url = f"postgresql://app:{password}@{address}/appdb"
    code, rows = _psql(container, good_url, "SELECT name FROM widgets ORDER BY id")
    assert code == 0, rows
    assert rows.split() == ["from-sql", "from-sql-gz", "from-sh"]
    code, output = _psql(container, f"postgresql://app:{password}@127.0.0.1/appdb", "SELECT 1")
    assert (code, output.strip()) == (0, "1")

    code, output = _psql(
        container, f"postgresql://app:wrong-{password}@{address}/appdb", "SELECT 1"
    )
    assert code != 0
    assert "password authentication failed" in output

    hba = _exec_ok(container, ["cat", "/var/lib/postgresql/data/pg_hba.conf"])
    assert "host all all all scram-sha-256" in hba
    _, settings = _psql(
        container,
        good_url,
        "SELECT current_setting('shared_buffers') || ' ' || current_setting('listen_addresses')"
        " || ' ' || pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'appdb'",
    )
    assert settings.split() == ["64MB", "*", "UTF8"]
    assert _exec_ok(container, ["cat", "/proc/1/comm"]).strip() == "postgres"
    assert _proc_uid(container) == 999
    for tool in ("pg_dump", "pg_dumpall", "pg_restore", "initdb", "pg_ctl"):
        _exec_ok(container, [tool, "--version"])

    container.restart(timeout=30)
    _wait_postgres(container)
    code, rows = _psql(container, good_url, "SELECT count(*) FROM widgets")
    assert (code, rows.strip()) == (0, "3")
    logs = _logs(container)
    assert logs.count("running /docker-entrypoint-initdb.d/01-schema.sql") == 1
    assert "Skipping initialization" in logs


def test_postgres_reads_password_file_and_initdb_args(
    base_images: dict[str, str], run_container: RunContainer
) -> None:
    password = secrets.token_hex(16)
    container = run_container(
        base_images["postgres"],
        environment={
            "POSTGRES_PASSWORD_FILE": "/run/secrets/pg-password",
            "POSTGRES_INITDB_ARGS": "--data-checksums",
        },
        files={"/run": {"secrets/pg-password": (password.encode(), 0o644)}},
    )
    _wait_postgres(container)
    address = _ip_address(container)
    code, output = _psql(
        container,
        f"postgresql://postgres:{password}@{address}/postgres",
        "SELECT current_user || ' ' || current_database()"
        " || ' ' || current_setting('data_checksums')",
    )
    assert (code, output.split()) == (0, ["postgres", "postgres", "on"])


def test_postgres_without_password_exits_with_clear_error(
    base_images: dict[str, str], run_container: RunContainer
) -> None:
    container = run_container(base_images["postgres"])
    assert _wait_exit(container, timeout=60) != 0
    assert "superuser password is not specified" in _logs(container)


# --- redis --------------------------------------------------------------------------


def test_redis_serves_as_non_root_without_protected_mode(
    base_images: dict[str, str], run_container: RunContainer
) -> None:
    container = run_container(base_images["redis"], ["redis-server", "--appendonly", "yes"])
    pong = _wait_for(container, ["redis-cli", "ping"], timeout=30, what="redis PING")
    assert pong.strip() == "PONG"
    assert _exec_ok(container, ["redis-cli", "SET", "greeting", "hello"]).strip() == "OK"
    assert _exec_ok(container, ["redis-cli", "GET", "greeting"]).strip() == "hello"
    assert _exec_ok(container, ["redis-cli", "CONFIG", "GET", "appendonly"]).split() == [
        "appendonly",
        "yes",
    ]
    # A client on a non-loopback address is served: protected mode is off.
    address = _ip_address(container)
    assert _exec_ok(container, ["redis-cli", "-h", address, "ping"]).strip() == "PONG"
    assert _exec_ok(container, ["cat", "/proc/1/comm"]).strip() == "redis-server"
    assert _proc_uid(container) == 999
    assert _exec_ok(container, ["stat", "-c", "%u", "/data/appendonlydir"]).strip() == "999"


# --- nginx --------------------------------------------------------------------------

NGINX_TEMPLATE = b"""server {
    listen ${NGINX_PORT};
    location / {
        default_type text/plain;
        return 200 "port=${NGINX_PORT} host=$host\\n";
    }
}
"""
ENTRYPOINT_SCRIPT = b"#!/bin/sh\necho ran > /tmp/entrypoint-script-ran\n"


def test_nginx_renders_templates_and_serves(
    base_images: dict[str, str], run_container: RunContainer
) -> None:
    container = run_container(
        base_images["nginx"],
        environment={"NGINX_PORT": "8081"},
        files={
            "/etc/nginx": {"templates/app.conf.template": (NGINX_TEMPLATE, 0o644)},
            "/docker-entrypoint.d": {"90-test.sh": (ENTRYPOINT_SCRIPT, 0o755)},
        },
    )
    curl = ["curl", "-fsS", "--max-time", "5"]
    body = _wait_for(
        container, [*curl, "http://127.0.0.1:8081/"], timeout=30, what="the templated server"
    )
    # Environment variables are substituted; nginx's own $host is left for nginx.
    assert body == "port=8081 host=127.0.0.1\n"
    rendered = _exec_ok(container, ["cat", "/etc/nginx/conf.d/app.conf"])
    assert "listen 8081;" in rendered and "$host" in rendered
    assert "Welcome to nginx!" in _exec_ok(container, [*curl, "http://127.0.0.1/"])
    assert "successful" in _exec_ok(container, ["nginx", "-t"])
    assert _exec_ok(container, ["cat", "/tmp/entrypoint-script-ran"]).strip() == "ran"
    assert "--with-http_ssl_module" in _exec_ok(container, ["nginx", "-V"])
    _exec_ok(container, ["openssl", "version"])
    # Access log goes to the container's stdout.
    stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
    assert '"GET / HTTP/1.1" 200' in stdout
    # Master as root (PID 1), workers as nginx (uid 101) like the official image.
    workers = [uid for name, ppid, uid in _processes(container) if name == "nginx" and ppid == 1]
    assert workers and set(workers) == {101}
    assert _proc_uid(container) == 0


# --- rabbitmq -----------------------------------------------------------------------


def test_rabbitmq_default_user_and_management_api(
    base_images: dict[str, str], run_container: RunContainer
) -> None:
    password = secrets.token_hex(16)
    container = run_container(
        base_images["rabbitmq"],
        environment={
            "RABBITMQ_DEFAULT_USER": "app",
            "RABBITMQ_DEFAULT_PASS": password,
            "RABBITMQ_DEFAULT_VHOST": "appvh",
        },
    )
    _wait_for(
        container,
        ["rabbitmq-diagnostics", "-q", "check_running"],
        timeout=120,
        what="the rabbit application to run",
    )
    _exec_ok(container, ["rabbitmq-diagnostics", "-q", "ping"])
    users = _exec_ok(container, ["rabbitmqctl", "-q", "list_users"])
    assert "app" in users.split()
    assert "guest" not in users.split()
    assert "appvh" in _exec_ok(container, ["rabbitmqctl", "-q", "list_vhosts"]).split()

    # The management API answers the default user on the container's network address
    # (not loopback), and rejects a wrong password.
    address = _ip_address(container)
    url = f"http://{address}:15672/api/whoami"
    python_image = base_images["python"]
    code, output = _http_probe(run_container, python_image, container, url, auth=("app", password))
    assert code == 0, output
    assert '"name":"app"' in output.replace(" ", "")
    code, output = _http_probe(
        run_container, python_image, container, url, auth=("app", "wrong"), expect=401, timeout=5
    )
    assert code == 0, output

    assert "Server startup complete" in _logs(container)
    assert _proc_uid(container) == 999


# --- prometheus ---------------------------------------------------------------------


def test_prometheus_ready_scrapes_itself_and_config_valid(
    base_images: dict[str, str], run_container: RunContainer
) -> None:
    container = run_container(base_images["prometheus"])
    python_image = base_images["python"]
    code, output = _http_probe(
        run_container, python_image, container, "http://127.0.0.1:9090/-/ready"
    )
    assert code == 0, f"{output}\n{_logs(container)}"
    # The default configuration scrapes Prometheus itself (first scrape within ~20 s).
    query = urllib.parse.quote('up{job="prometheus"} == 1')
    code, output = _http_probe(
        run_container,
        python_image,
        container,
        f"http://127.0.0.1:9090/api/v1/query?query={query}",
        contains='"job":"prometheus"',
        timeout=60,
    )
    assert code == 0, output

    assert "SUCCESS" in _exec_ok(
        container, ["promtool", "check", "config", "/etc/prometheus/prometheus.yml"]
    )
    assert _proc_uid(container) == 65534
    assert _exec_ok(container, ["stat", "-c", "%u", "/prometheus/wal"]).strip() == "65534"


# --- alertmanager -------------------------------------------------------------------


def test_alertmanager_ready_as_nobody_with_amtool_and_a_valid_default_config(
    base_images: dict[str, str], run_container: RunContainer
) -> None:
    container = run_container(base_images["alertmanager"])
    code, output = _http_probe(
        run_container, base_images["python"], container, "http://127.0.0.1:9093/-/ready"
    )
    assert code == 0, f"{output}\n{_logs(container)}"
    checked = _exec_ok(container, ["amtool", "check-config", "/etc/alertmanager/alertmanager.yml"])
    assert "SUCCESS" in checked
    assert _proc_uid(container) == 65534
    assert _exec_ok(container, ["stat", "-c", "%u", "/alertmanager"]).strip() == "65534"
    # compose healthchecks of either image call wget
    assert "/wget" in _exec_ok(container, ["sh", "-c", "command -v wget"])
