"""The rendered nginx configuration in the real nginx image: `nginx -t`, gixy's analysis of what
nginx actually loads (`nginx -T`), and a served stack checked from 127.0.0.1 over TLS: as
`localhost` (a server name) it answers, as any other name (or none) it refuses.

Every container and network is named with a random suffix and removed afterwards.
"""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import REPO, free_port

from deploysuite.edge import tls
from deploysuite.edge.nginx import (
    DEFAULT_UPSTREAMS,
    DOCKER_DNS,
    SERVICES,
    NginxSettings,
    apply_action,
    nginx_dump_argv,
    nginx_reload_argv,
    nginx_test_argv,
    nginx_volume_args,
    render_nginx,
    upstream_hosts,
    write_rendered,
)
from deploysuite.images.recipes import base_image_ref
from tests.unit.certs import Chain, issue_chain, key_pem, pem

pytestmark = pytest.mark.integration

NGINX_IMAGE = base_image_ref("nginx")
PYTHON_IMAGE = base_image_ref("python")
LABEL = "com.mysaaschat.test=nginx-config"
SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; base-uri 'self'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def run(argv: Sequence[str], stdin: str | None = None, timeout: float = 120):
    return subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )


def must(argv: Sequence[str]) -> str:
    result = run(argv)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stderr}"
    return result.stdout


def render_to(
    out: Path, settings: NginxSettings, edits: dict[str, tuple[str, str]] | None = None
) -> Path:
    """Renders into out; edits maps a file to (old, new) for a deliberately broken variant."""
    files = render_nginx(settings)
    for rel, (old, new) in (edits or {}).items():
        assert old in files[rel], f"{old!r} is not in {rel}"
        files[rel] = files[rel].replace(old, new, 1)
    write_rendered(files, out)
    return out


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed certificate for localhost and 127.0.0.1, and the ffdhe2048 group."""
    tls = tmp_path_factory.mktemp("tls")
    must(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(tls / "privkey.pem"), "-out", str(tls / "fullchain.pem"),
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ]
    )  # fmt: skip
    must(
        [
            "openssl", "genpkey", "-genparam", "-algorithm", "DH",
            "-pkeyopt", "dh_param:ffdhe2048", "-out", str(tls / "dhparam.pem"),
        ]
    )  # fmt: skip
    return tls


# The OCSP responder of the stapling test, inside nginx's own container.
OCSP_PORT = 2560


@pytest.fixture(scope="module")
def ocsp_chain() -> Chain:
    """localhost's certificate from a test CA, naming an OCSP responder on 127.0.0.1."""
    return issue_chain(("localhost",), ocsp=f"http://127.0.0.1:{OCSP_PORT}/")


@pytest.fixture(scope="module")
def ocsp_tls_dir(tmp_path_factory, tls_dir, ocsp_chain) -> Path:
    """nginx's TLS folder with that certificate: fullchain.pem holds the leaf and its issuer."""
    folder = tmp_path_factory.mktemp("tls-ocsp")
    (folder / "fullchain.pem").write_bytes(ocsp_chain.fullchain_pem)
    (folder / "privkey.pem").write_bytes(ocsp_chain.leaf_key_pem)
    (folder / "dhparam.pem").write_bytes((tls_dir / "dhparam.pem").read_bytes())
    for path in folder.iterdir():
        path.chmod(0o644)  # the test's material, read by nginx's workers
    return folder


DEFAULTS = NginxSettings(server_names=("localhost",))
STAPLING = NginxSettings(server_names=("localhost",), ocsp_stapling=True)


# --- nginx -t -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "ocsp"),
    [
        (DEFAULTS, False),
        (
            NginxSettings(
                server_names=("chat.example.com", "www.chat.example.com"),
                public_https_port=8443,
                upstreams={**DEFAULT_UPSTREAMS, "chat": ("chat-blue:8000", "chat-green:8000")},
                resolver="127.0.0.11",
            ),
            False,
        ),
        (STAPLING, True),
    ],
    ids=["defaults", "rolling-deploy", "ocsp-stapling"],
)
def test_nginx_accepts_the_rendered_config(
    base_images, tls_dir, ocsp_tls_dir, tmp_path, settings, ocsp
):
    # Without a warning: the stapling lines are there exactly when the certificate names a
    # responder, which is what nginx wants.
    certs = ocsp_tls_dir if ocsp else tls_dir
    assert (tls.ocsp_url((certs / "fullchain.pem").read_bytes()) is not None) == ocsp
    rendered = render_to(tmp_path / "nginx", settings)
    argv = nginx_test_argv(NGINX_IMAGE, rendered, certs, upstream_hosts(settings))
    result = run(argv)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert "[emerg]" not in result.stderr and "[warn]" not in result.stderr


def test_stapling_without_a_responder_url_is_what_nginx_warns_about(base_images, tls_dir, tmp_path):
    # Why stapling follows the certificate: the local CA's kind of certificate names no
    # responder, and nginx would warn on every load.
    rendered = render_to(tmp_path / "nginx", STAPLING)
    result = run(nginx_test_argv(NGINX_IMAGE, rendered, tls_dir, upstream_hosts(STAPLING)))
    assert result.returncode == 0, result.stderr
    assert '"ssl_stapling" ignored, no OCSP responder URL in the certificate' in result.stderr


@pytest.mark.parametrize(
    ("edits", "missing_host", "message"),
    [
        (
            {"conf.d/20-servers.conf": ("zone=auth burst", "zone=nowhere burst")},
            None,
            'zero size shared memory zone "nowhere"',
        ),
        (
            {"conf.d/20-servers.conf": ("ssl_reject_handshake on;", "ssl_reject_handshake on")},
            None,
            "/etc/nginx/conf.d/20-servers.conf",
        ),
        ({}, "billing", 'host not found in upstream "billing:8000"'),
    ],
    ids=["unknown-zone", "syntax", "unresolvable-upstream"],
)
def test_nginx_refuses_a_broken_config(
    base_images, tls_dir, tmp_path, edits, missing_host, message
):
    rendered = render_to(tmp_path / "nginx", DEFAULTS, edits)
    hosts = [host for host in upstream_hosts(DEFAULTS) if host != missing_host]
    result = run(nginx_test_argv(NGINX_IMAGE, rendered, tls_dir, hosts))
    assert result.returncode != 0
    assert message in result.stderr
    assert "test failed" in result.stderr


# --- gixy -----------------------------------------------------------------------------------


def gixy_issues(dump: str, *options: str) -> list[dict]:
    """gixy's findings on an `nginx -T` dump: every file nginx loaded, includes resolved at
    their container paths (gixy reads the dump's `# configuration file` markers)."""
    gixy = Path(sys.executable).with_name("gixy")
    if not gixy.exists():
        pytest.fail("gixy is not installed: pip install gixy-next (a test dependency)")
    result = run([str(gixy), "--format", "json", *options, "-"], stdin=dump)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def nginx_dump(tls_dir: Path, rendered: Path, settings: NginxSettings) -> str:
    result = run(nginx_dump_argv(NGINX_IMAGE, rendered, tls_dir, upstream_hosts(settings)))
    assert result.returncode == 0, result.stderr
    for rel in ("nginx.conf", "conf.d/20-servers.conf", "snippets/security-headers.conf"):
        assert f"# configuration file /etc/nginx/{rel}:" in result.stdout
    return result.stdout


def test_gixy_finds_nothing_with_address_upstreams(base_images, tls_dir, tmp_path):
    settings = NginxSettings(
        server_names=("localhost",),
        upstreams={name: (f"10.1.0.{i}:8000",) for i, name in enumerate(SERVICES, 2)},
    )
    dump = nginx_dump(tls_dir, render_to(tmp_path / "nginx", settings), settings)
    assert gixy_issues(dump) == []


def test_gixy_finds_nothing_with_ocsp_stapling(base_images, ocsp_tls_dir, tmp_path):
    # ssl_stapling needs a resolver in scope (gixy's ssl_stapling_without_resolver) and that one
    # must not be a public server (resolver_external): Docker's DNS.
    settings = NginxSettings(
        server_names=("localhost",),
        upstreams={name: (f"10.1.0.{i}:8000",) for i, name in enumerate(SERVICES, 2)},
        ocsp_stapling=True,
    )
    dump = nginx_dump(ocsp_tls_dir, render_to(tmp_path / "nginx", settings), settings)
    assert f"resolver {DOCKER_DNS} " in dump and "ssl_stapling on;" in dump
    assert gixy_issues(dump) == []


def test_gixy_finds_only_startup_dns_with_service_names(base_images, tls_dir, tmp_path):
    # Upstream blocks resolve names when nginx loads the configuration (nginx 1.22 has no
    # `server ... resolve`); the deploy re-renders and reloads whenever containers change,
    # which re-resolves them. Everything else gixy checks stays clean.
    dump = nginx_dump(tls_dir, render_to(tmp_path / "nginx", DEFAULTS), DEFAULTS)
    assert {issue["plugin"] for issue in gixy_issues(dump)} == {"stale_dns_cache"}
    assert gixy_issues(dump, "--skips", "stale_dns_cache") == []


@pytest.mark.parametrize(
    ("edits", "plugin", "where"),
    [
        (
            # A location with its own add_header and no snippet loses HSTS, CSP and the rest.
            {
                "conf.d/20-servers.conf": (
                    "location /api/chat/ {\n"
                    "        include /etc/nginx/snippets/security-headers.conf;",
                    'location /api/chat/ {\n        add_header Cache-Control "no-store" always;',
                )
            },
            "add_header_redefinition",
            "/api/chat/",
        ),
        (
            {
                "snippets/proxy.conf": (
                    "proxy_set_header Host $host;",
                    "proxy_set_header Host $http_host;",
                )
            },
            "host_spoofing",
            "$http_host",
        ),
    ],
    ids=["dropped-security-headers", "host-spoofing"],
)
def test_gixy_flags_a_bad_variant(base_images, tls_dir, tmp_path, edits, plugin, where):
    dump = nginx_dump(tls_dir, render_to(tmp_path / "nginx", DEFAULTS, edits), DEFAULTS)
    issues = gixy_issues(dump, "--skips", "stale_dns_cache")
    assert [issue["plugin"] for issue in issues if issue["plugin"] == plugin]
    assert any(where in issue["config"] for issue in issues if issue["plugin"] == plugin)


# --- a served stack -------------------------------------------------------------------------


@dataclass
class Stack:
    suffix: str
    network: str
    nginx: str
    http_port: int
    https_port: int
    rendered: Path
    tls_dir: Path
    docroot: Path
    containers: list[str]

    def https(self, name: str = "localhost") -> http.client.HTTPSConnection:
        """To the published port as `name`, its SNI and Host (localhost resolves to 127.0.0.1)."""
        context = ssl.create_default_context(cafile=str(self.tls_dir / "fullchain.pem"))
        return http.client.HTTPSConnection(name, self.https_port, context=context, timeout=10)

    def http(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)

    def get(self, path: str, headers: dict[str, str] | None = None):
        connection = self.https()
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def start_upstream(self, name: str, aliases: Sequence[str], docroot: Path) -> None:
        # Python's file server plays every service: it answers the paths present in docroot.
        argv = ["docker", "run", "--detach", "--name", name, "--label", LABEL]
        argv += ["--network", self.network]
        for alias in aliases:
            argv += ["--network-alias", alias]
        argv += ["--user", "65534:65534", "--volume", f"{docroot}:/srv:ro", PYTHON_IMAGE]
        argv += ["python3", "-m", "http.server", "8000", "--directory", "/srv"]
        self.containers.append(name)
        must(argv)


def make_docroot(root: Path, text: str) -> Path:
    """The paths the tests ask a service for, each answering text; readable by any user."""
    for rel in ("health/ready", "api/chat/hello", "api/auth/x"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def wait_for_health(stack: Stack, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if stack.get("/health")[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            logs = run(["docker", "logs", stack.nginx])
            pytest.fail(f"nginx did not answer on /health:\n{logs.stdout}\n{logs.stderr}")
        time.sleep(0.3)


# The canonical name first; the second one is configured too, but is never a redirect target.
SERVER_NAMES = ("localhost", "chat.localhost")


@pytest.fixture(scope="module")
def stack(base_images, tls_dir, tmp_path_factory) -> Iterator[Stack]:
    suffix = secrets.token_hex(4)
    work = tmp_path_factory.mktemp("nginx-stack")
    webroot = work / "certbot"
    (webroot / ".well-known/acme-challenge").mkdir(parents=True)
    (webroot / ".well-known/acme-challenge/token-1").write_text("token-1.thumbprint")
    # nginx's workers (uid 101) read the challenge files.
    for path in [webroot, *webroot.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)

    http_port, https_port = free_port(), free_port()
    settings = NginxSettings(server_names=SERVER_NAMES, public_https_port=https_port)
    stack = Stack(
        suffix=suffix,
        network=f"nginx-it-{suffix}",
        nginx=f"nginx-it-{suffix}-nginx",
        http_port=http_port,
        https_port=https_port,
        rendered=render_to(work / "nginx", settings),
        tls_dir=tls_dir,
        docroot=make_docroot(work / "blue", "blue"),
        containers=[],
    )
    try:
        must(["docker", "network", "create", "--label", LABEL, stack.network])
        stack.start_upstream(f"nginx-it-{suffix}-blue", SERVICES, stack.docroot)
        stack.containers.append(stack.nginx)
        must(
            [
                "docker", "run", "--detach", "--name", stack.nginx, "--label", LABEL,
                "--network", stack.network,
                "--publish", f"127.0.0.1:{http_port}:80",
                "--publish", f"127.0.0.1:{https_port}:443",
                *nginx_volume_args(stack.rendered, tls_dir, webroot),
                NGINX_IMAGE,
            ]
        )  # fmt: skip
        wait_for_health(stack)
        yield stack
    finally:
        for name in reversed(stack.containers):
            run(["docker", "rm", "--force", "--volumes", name])
        run(["docker", "network", "rm", stack.network])


def test_https_health_is_nginx_itself(stack):
    status, headers, body = stack.get("/health")
    assert status == 200
    assert json.loads(body) == {"status": "pass"}
    assert headers["Content-Type"] == "application/json"
    assert headers["Server"] == "nginx"  # no version


def http_get(stack: Stack, path: str, headers: dict[str, str]):
    connection = stack.http()
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("host", ["localhost", "chat.localhost", "LOCALHOST:80"])
def test_http_redirects_to_the_first_server_name_and_public_https_port(stack, host):
    # Whatever configured name the request gives, and whatever else it sends about hosts, the
    # redirect names the canonical one: only the path comes from the request.
    status, headers, _ = http_get(
        stack,
        "/api/chat/hello?room=1",
        {"Host": host, "X-Forwarded-Host": "evil.example", "Forwarded": "host=evil.example"},
    )
    assert status == 301
    assert headers["Location"] == f"https://localhost:{stack.https_port}/api/chat/hello?room=1"


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1", "localhost.evil.example"])
def test_http_with_an_unknown_host_gets_no_answer(stack, host):
    # 444: nginx closes the connection without a status line (curl: exit 52, empty reply).
    with pytest.raises(http.client.RemoteDisconnected):
        http_get(stack, "/api/chat/hello", {"Host": host})
    with pytest.raises(http.client.RemoteDisconnected):
        http_get(stack, "/.well-known/acme-challenge/token-1", {"Host": host})


def tls_connect(port: int, server_name: str | None) -> ssl.SSLSocket:
    """A TLS handshake with 127.0.0.1:port sending server_name as SNI (None: no SNI, as a
    client that connects by address does)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        return context.wrap_socket(raw, server_hostname=server_name)
    except BaseException:
        raw.close()
        raise


@pytest.mark.parametrize("server_name", ["evil.example", None], ids=["unknown-sni", "no-sni"])
def test_https_handshake_for_an_unknown_name_is_refused(stack, server_name):
    with pytest.raises(ssl.SSLError) as refused:
        tls_connect(stack.https_port, server_name)
    # The server's unrecognized_name alert, before any certificate was sent.
    assert "unrecognized name" in str(refused.value).lower()


def test_https_handshake_for_a_server_name_shows_its_certificate(stack):
    with tls_connect(stack.https_port, "localhost") as connection:
        cert = connection.getpeercert(binary_form=True)
    assert cert == ssl.PEM_cert_to_DER_cert((stack.tls_dir / "fullchain.pem").read_text())


def test_https_request_for_another_host_is_misdirected(stack):
    # The handshake was for localhost; the request names another host: 421, and nothing of the
    # name it gave comes back.
    connection = stack.https()
    try:
        connection.request("GET", "/api/chat/hello", headers={"Host": "evil.example"})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 421
    assert b"evil.example" not in body
    assert not [v for _, v in response.getheaders() if "evil.example" in v]


def test_the_compose_healthcheck_passes_inside_the_container(stack):
    # It asks https://127.0.0.1/health with no server name: the container's own loopback is the
    # named server's, while the same request from outside is refused (above).
    compose = yaml.safe_load((REPO / "docker-compose.prod.yml").read_text())
    test = compose["services"]["nginx"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    result = run(["docker", "exec", stack.nginx, *test[1:]], timeout=30)
    assert result.returncode == 0, result.stderr


def test_acme_challenge_is_served_over_http(stack):
    connection = stack.http()
    try:
        connection.request(
            "GET", "/.well-known/acme-challenge/token-1", headers={"Host": "localhost"}
        )
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert (response.status, body) == (200, b"token-1.thumbprint")


@pytest.mark.parametrize("path", ["/api/chat/hello", "/health/auth", "/metrics", "/nothing"])
def test_security_headers_on_proxied_routes_and_404(stack, path):
    status, headers, body = stack.get(path)
    if path in ("/metrics", "/nothing"):
        assert status == 404
        assert json.loads(body) == {"error": "not found"}
    else:
        assert (status, body) == (200, b"blue")
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, name
    assert len(headers["X-Request-ID"]) == 32


def test_every_service_readiness_through_nginx(stack):
    for service in SERVICES:
        assert stack.get(f"/health/{service}")[:1] == (200,), service


def test_http2_is_offered(stack):
    context = ssl.create_default_context(cafile=str(stack.tls_dir / "fullchain.pem"))
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", stack.https_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"


# The intermediate profile's TLS 1.2 ciphers that an RSA certificate can use with ECDHE.
RSA_TLS12_CIPHERS = {
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305",
}


def handshake(port: int, version: ssl.TLSVersion, server_name: str = "localhost") -> ssl.SSLSocket:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = version
    context.maximum_version = version
    # Security level 0 lets this client offer TLS 1.1 at all: the refusal must be the server's.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        return context.wrap_socket(raw, server_hostname=server_name)
    except BaseException:
        raw.close()
        raise


# Python warns that TLS 1.1 is deprecated: offering it is the point of this test.
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
@pytest.mark.parametrize("server_name", ["localhost", "evil.example"])
def test_tls_1_1_is_refused_by_the_server(stack, server_name):
    # The protocol is settled before the server name selects a server: the default server's
    # protocols must be the named server's.
    with pytest.raises(ssl.SSLError) as refused:
        handshake(stack.https_port, ssl.TLSVersion.TLSv1_1, server_name)
    # An alert from the server ("tlsv1 alert protocol version"), not a local refusal to try.
    assert "alert protocol version" in str(refused.value).lower()


@pytest.mark.parametrize(
    ("version", "name"),
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
)
def test_tls_1_2_and_1_3_are_accepted(stack, version, name):
    with handshake(stack.https_port, version) as tls:
        assert tls.version() == name
        cipher = tls.cipher()
        assert cipher is not None
        if version == ssl.TLSVersion.TLSv1_2:
            assert cipher[0] in RSA_TLS12_CIPHERS


def test_access_log_is_json_without_the_query_string(stack):
    assert stack.get("/api/chat/hello?token=s3cr3t-token", {"User-Agent": "nginx-it"})[0] == 200
    deadline = time.monotonic() + 5
    while True:
        logs = run(["docker", "logs", stack.nginx])
        entries = [json.loads(line) for line in logs.stdout.splitlines() if line.startswith("{")]
        mine = [e for e in entries if e.get("http_user_agent") == "nginx-it"]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "s3cr3t-token" not in logs.stdout + logs.stderr
    assert mine, logs.stdout[-2000:]
    entry = mine[-1]
    assert entry["uri"] == "/api/chat/hello"
    assert entry["status"] == 200
    assert entry["method"] == "GET"
    assert isinstance(entry["request_time"], float)
    assert entry["upstream_response_time"] not in ("", "-")
    assert entry["upstream_addr"].endswith(":8000")
    assert len(entry["request_id"]) == 32


def test_refused_requests_stay_out_of_the_access_log(stack):
    # The access log is the stack's own traffic (the bake window's error share per service):
    # requests for other names are not in it, while the next request for localhost is.
    with pytest.raises(http.client.RemoteDisconnected):
        http_get(stack, "/api/chat/hello", {"Host": "evil.example", "User-Agent": "refused-it"})
    connection = stack.https()
    try:
        connection.request(
            "GET", "/api/chat/hello", headers={"Host": "evil.example", "User-Agent": "refused-it"}
        )
        assert connection.getresponse().status == 421
    finally:
        connection.close()
    assert stack.get("/api/chat/hello", {"User-Agent": "after-refused-it"})[0] == 200
    deadline = time.monotonic() + 5
    while "after-refused-it" not in (logs := run(["docker", "logs", stack.nginx])).stdout:
        assert time.monotonic() < deadline, logs.stdout[-2000:]
        time.sleep(0.2)
    assert "refused-it" not in logs.stdout.replace("after-refused-it", "")


def test_auth_burst_is_rate_limited(stack):
    connection = stack.https()
    statuses = []
    limited: tuple[dict[str, str], bytes] | None = None
    try:
        for _ in range(40):
            connection.request("GET", "/api/auth/x")
            response = connection.getresponse()
            body = response.read()
            statuses.append(response.status)
            if response.status == 429:
                limited = (dict(response.getheaders()), body)
    finally:
        connection.close()
    assert statuses[0] == 200
    assert 429 in statuses, statuses
    assert limited is not None
    headers, body = limited
    assert json.loads(body) == {"error": "too many requests"}
    assert headers["Retry-After"] == "1"
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, name


def test_reload_moves_traffic_to_new_upstream_servers(stack, tmp_path):
    # A rolling deploy: the new container joins the upstream, the old one leaves, nginx reloads.
    green = f"nginx-it-{stack.suffix}-green"
    stack.start_upstream(green, ["chat-green"], make_docroot(tmp_path / "green", "green"))
    settings = NginxSettings(
        server_names=SERVER_NAMES,
        public_https_port=stack.https_port,
        upstreams={**DEFAULT_UPSTREAMS, "chat": ("chat-green:8000",)},
    )
    changed = write_rendered(render_nginx(settings), stack.rendered)
    assert changed == [stack.rendered / "conf.d/10-upstreams.conf"]
    assert apply_action(changed, stack.rendered) == "reload"
    must(nginx_reload_argv(stack.nginx))

    deadline = time.monotonic() + 10
    while stack.get("/api/chat/hello")[2] != b"green":
        assert time.monotonic() < deadline, "the reload did not switch /api/chat/ to green"
        time.sleep(0.2)
    assert stack.get("/api/auth/x")[2] in (b"blue", b'{"error":"too many requests"}')
    assert stack.get("/health")[0] == 200


# --- OCSP stapling --------------------------------------------------------------------------


def test_the_responders_answer_is_stapled(base_images, ocsp_chain, ocsp_tls_dir, tmp_path):
    """The certificate names a responder (openssl ocsp, on 127.0.0.1 in nginx's own container):
    nginx fetches its answer, verifies it against the chain it serves, and staples it."""
    ocsp = tmp_path / "ocsp"
    ocsp.mkdir()
    (ocsp / "ca.pem").write_bytes(pem(ocsp_chain.ca))
    (ocsp / "ca-key.pem").write_bytes(key_pem(ocsp_chain.ca_key))
    (ocsp / "leaf.pem").write_bytes(pem(ocsp_chain.leaf))
    expiry = ocsp_chain.leaf.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
    serial = f"{ocsp_chain.leaf.serial_number:X}"
    (ocsp / "index.txt").write_text(f"V\t{expiry}\t\t{serial}\tunknown\t/CN=localhost\n")
    for path in [ocsp, *ocsp.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    settings = NginxSettings(
        server_names=("localhost",),
        upstreams={name: ("127.0.0.1:8000",) for name in SERVICES},
        ocsp_stapling=True,
    )
    rendered = render_to(tmp_path / "nginx", settings)
    name, port = f"nginx-it-{secrets.token_hex(4)}-ocsp", free_port()
    try:
        must(
            [
                "docker", "run", "--detach", "--name", name, "--label", LABEL,
                "--publish", f"127.0.0.1:{port}:443", "--volume", f"{ocsp}:/ocsp:ro",
                *nginx_volume_args(rendered, ocsp_tls_dir),
                NGINX_IMAGE,
            ]
        )  # fmt: skip
        must(
            [
                "docker", "exec", "--detach", name, "openssl", "ocsp", "-port", str(OCSP_PORT),
                "-index", "/ocsp/index.txt", "-CA", "/ocsp/ca.pem",
                "-rsigner", "/ocsp/ca.pem", "-rkey", "/ocsp/ca-key.pem",
            ]
        )  # fmt: skip
        # The responder must answer before the first handshake: nginx fetches then, and after a
        # failed fetch it waits five minutes. Asked with a real request (a bare connection
        # would hold the single-threaded responder).
        ask = [
            "openssl", "ocsp", "-issuer", "/ocsp/ca.pem", "-cert", "/ocsp/leaf.pem",
            "-CAfile", "/ocsp/ca.pem", "-url", f"http://127.0.0.1:{OCSP_PORT}/", "-timeout", "2",
        ]  # fmt: skip
        deadline = time.monotonic() + 20
        while "/ocsp/leaf.pem: good" not in run(["docker", "exec", name, *ask], timeout=10).stdout:
            assert time.monotonic() < deadline, "openssl ocsp did not answer"
            time.sleep(0.2)
        deadline = time.monotonic() + 20
        while True:
            result = run(
                ["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                 "-servername", "localhost", "-status"],
                stdin="", timeout=10,
            )  # fmt: skip
            if "OCSP Response Status: successful" in result.stdout:
                break
            if time.monotonic() > deadline:
                logs = run(["docker", "logs", name])
                pytest.fail(f"no stapled OCSP answer:\n{result.stdout[-1500:]}\n{logs.stderr}")
            time.sleep(0.5)
        assert "Cert Status: good" in result.stdout
    finally:
        run(["docker", "rm", "--force", "--volumes", name])
