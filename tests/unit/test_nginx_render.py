"""The rendered nginx configuration, read as text (and parsed by crossplane), and the argv
builders of deploysuite.edge.nginx."""

from __future__ import annotations

import re
from pathlib import Path

import crossplane
import pytest
from crossplane.analyzer import DIRECTIVES

from deploysuite.edge.nginx import (
    DEFAULT_UPSTREAMS,
    DOCKER_DNS,
    NginxSettings,
    NginxSettingsError,
    Route,
    apply_action,
    nginx_dump_argv,
    nginx_reload_argv,
    nginx_test_argv,
    render_nginx,
    upstream_hosts,
    write_rendered,
)

REPO = Path(__file__).resolve().parents[2]
SERVERS = "conf.d/20-servers.conf"
UPSTREAMS = "conf.d/10-upstreams.conf"
HTTP = "conf.d/00-http.conf"
HEADERS_SNIPPET = "snippets/security-headers.conf"
HEADERS_INCLUDE = "include /etc/nginx/snippets/security-headers.conf;"
MOZILLA_INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)


def settings(**overrides) -> NginxSettings:
    return NginxSettings(**{"server_names": ("chat.example.com",), **overrides})


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return render_nginx(settings())


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def server_blocks(text: str) -> list[str]:
    return re.findall(r"^server \{\n(.*?)^\}", text, flags=re.S | re.M)


def directives(text: str) -> list[str]:
    """lines() without the comments."""
    return [line for line in lines(text) if not line.startswith("#")]


def listen_args(server: str) -> list[list[str]]:
    """The arguments of each `listen`, without the semicolon."""
    return [
        line.removesuffix(";").split()[1:] for line in lines(server) if line.startswith("listen ")
    ]


def listen_ports(server: str) -> list[str]:
    """The port of each `listen`: "443" for both `listen 443 ...` and `listen 127.0.0.1:443`."""
    return [args[0].rpartition(":")[2] for args in listen_args(server)]


def named_server(files: dict[str, str], port: int) -> str:
    """The one server with a server_name that listens on port."""
    (found,) = [
        server
        for server in server_blocks(files[SERVERS])
        if str(port) in listen_ports(server)
        and any(line.startswith("server_name ") for line in lines(server))
    ]
    return found


def default_servers(files: dict[str, str]) -> dict[str, list[str]]:
    """port -> the servers whose listen on it says default_server."""
    found: dict[str, list[str]] = {}
    for server in server_blocks(files[SERVERS]):
        for args in listen_args(server):
            if "default_server" in args:
                found.setdefault(args[0], []).append(server)
    return found


def locations(server: str) -> dict[str, str]:
    """`location` argument (e.g. "= /ws", "/api/auth/", "@error_429") -> body of the block."""
    found = re.findall(r"^    location (.+?) \{\n(.*?)^    \}", server, flags=re.S | re.M)
    return dict(found)


def https_locations(files: dict[str, str]) -> dict[str, str]:
    return locations(named_server(files, 443))


def test_rendered_tree(files):
    assert sorted(files) == [
        HTTP,
        UPSTREAMS,
        SERVERS,
        "nginx.conf",
        "snippets/proxy.conf",
        HEADERS_SNIPPET,
    ]
    assert "include /etc/nginx/conf.d/*.conf;" in lines(files["nginx.conf"])


def test_tls_is_mozilla_intermediate_for_every_server(files):
    # At http level: the default server's protocols are the ones OpenSSL negotiates with, before
    # the server name selects the named server. No server sets its own.
    http = lines(files[HTTP])
    assert [line for line in http if line.startswith("ssl_protocols")] == [
        "ssl_protocols TLSv1.2 TLSv1.3;"
    ]
    assert f"ssl_ciphers {MOZILLA_INTERMEDIATE_CIPHERS};" in http
    for directive in (
        "ssl_prefer_server_ciphers off;",
        "ssl_session_timeout 1d;",
        "ssl_session_cache shared:SSL:10m;",
        "ssl_session_tickets off;",
        "ssl_dhparam /etc/nginx/tls/dhparam.pem;",
    ):
        assert directive in http
    servers = lines(files[SERVERS])
    assert not [line for line in servers if line.startswith(("ssl_protocols", "ssl_ciphers"))]
    https = lines(named_server(files, 443))
    assert "ssl_certificate /etc/nginx/tls/fullchain.pem;" in https
    assert "ssl_certificate_key /etc/nginx/tls/privkey.pem;" in https


def test_https_listens_with_http2_in_nginx_1_22_syntax(files):
    https = lines(named_server(files, 443))
    assert "listen 443 ssl http2;" in https
    assert "server_name chat.example.com;" in https


def test_each_port_has_one_default_server_that_serves_nothing(files):
    defaults = default_servers(files)
    assert sorted(defaults) == ["443", "80"]
    assert [len(servers) for servers in defaults.values()] == [1, 1]
    (http,) = defaults["80"]
    # No name, no content, nothing of the request comes back: the connection closes unanswered.
    assert directives(http) == ["listen 80 default_server;", "access_log off;", "return 444;"]
    (https,) = defaults["443"]
    body = directives(https)
    assert "listen 443 ssl http2 default_server;" in body
    # Refused requests are not the services' traffic (the bake window reads the access log).
    assert "access_log off;" in body
    # The handshake fails before a certificate is shown: the server has none.
    assert "ssl_reject_handshake on;" in body
    assert not [line for line in body if line.startswith(("ssl_certificate", "server_name"))]
    # A request reaches it only over a connection made for a configured name (SNI) that then
    # names another host: 421, no content, no proxying.
    assert set(locations(https)) == {"/"}
    assert "return 421;" in lines(locations(https)["/"])
    assert not [line for line in body if "proxy_pass" in line or "$host" in line]


def test_named_servers_are_not_default_and_answer_only_their_names():
    files = render_nginx(settings(server_names=("chat.example.com", "www.chat.example.com")))
    for port in (80, 443):
        server = lines(named_server(files, port))
        assert "server_name chat.example.com www.chat.example.com;" in server
        assert not [line for line in server if "default_server" in line], port
    # The default servers have no name: they take every name that is not configured.
    assert files[SERVERS].count("server_name ") == 2


def test_the_containers_loopback_reaches_the_named_server(files):
    """The compose healthcheck asks https://127.0.0.1/health from inside the container, with no
    server name: on 127.0.0.1 the named server is the only one, so the catch-all (which refuses
    a handshake without SNI) never sees it."""
    import yaml

    compose = yaml.safe_load((REPO / "docker-compose.prod.yml").read_text())
    assert compose["services"]["nginx"]["healthcheck"]["test"][-1] == "https://127.0.0.1/health"
    holders = [s for s in server_blocks(files[SERVERS]) if "listen 127.0.0.1:443 ssl http2;" in s]
    assert holders == [named_server(files, 443)]
    assert "= /health" in locations(holders[0])


@pytest.mark.parametrize(
    ("location", "upstream", "zone"),
    [
        ("/api/auth/", "auth", "auth"),
        ("/api/chat/", "chat", "api"),
        ("/api/billing/", "billing", "api"),
        ("/api/analytics/", "analytics", "api"),
        ("/api/orchestrator/", "orchestrator", "api"),
        ("= /ws", "chat", "api"),
    ],
)
def test_route_points_at_its_upstream(files, location, upstream, zone):
    body = lines(https_locations(files)[location])
    assert f"proxy_pass http://{upstream}_backend;" in body
    burst = 10 if zone == "auth" else 100
    assert f"limit_req zone={zone} burst={burst} nodelay;" in body
    assert "include /etc/nginx/snippets/proxy.conf;" in body


def test_websocket_upgrades_and_stays_open(files):
    ws = lines(https_locations(files)["= /ws"])
    assert "proxy_set_header Upgrade $http_upgrade;" in ws
    assert "proxy_set_header Connection $connection_upgrade;" in ws
    assert "proxy_read_timeout 1h;" in ws
    assert 'proxy_set_header Connection "";' not in ws
    assert "map $http_upgrade $connection_upgrade {" in files[HTTP]


def test_api_routes_keep_upstream_connections_alive(files):
    for path, body in https_locations(files).items():
        if path.startswith("/api/") or path.startswith("= /health/"):
            assert 'proxy_set_header Connection "";' in lines(body), path


def test_health_is_answered_by_nginx(files):
    health = lines(https_locations(files)["= /health"])
    assert 'return 200 \'{"status":"pass"}\';' in health
    assert "access_log off;" in health
    assert "default_type application/json;" in health
    assert not any(line.startswith("proxy_pass") for line in health)


@pytest.mark.parametrize("service", ["auth", "chat", "billing", "analytics", "orchestrator"])
def test_health_of_each_service_is_its_readiness(files, service):
    body = lines(https_locations(files)[f"= /health/{service}"])
    assert f"proxy_pass http://{service}_backend/health/ready;" in body


def test_everything_else_is_404_and_metrics_are_not_public(files):
    routes = https_locations(files)
    assert 'return 404 \'{"error":"not found"}\';' in lines(routes["/"])
    assert not [path for path in routes if "metrics" in path]
    proxied = [line for line in lines(files[SERVERS]) if line.startswith("proxy_pass")]
    assert not [line for line in proxied if "metrics" in line]


def test_upstreams_balance_and_keep_connections(files):
    auth = re.search(r"upstream auth_backend \{(.*?)\}", files[UPSTREAMS], re.S)
    assert auth is not None
    body = lines(auth.group(1))
    assert body[0] == "least_conn;"
    assert "server auth:8000 max_fails=1 fail_timeout=10s;" in body
    assert body.index("least_conn;") < body.index("keepalive 32;")


def test_several_servers_per_upstream():
    files = render_nginx(
        settings(upstreams={**DEFAULT_UPSTREAMS, "chat": ("chat-blue:8000", "chat-green:8000")})
    )
    chat = re.search(r"upstream chat_backend \{(.*?)\}", files[UPSTREAMS], re.S)
    assert chat is not None
    servers = [line for line in lines(chat.group(1)) if line.startswith("server ")]
    assert servers == [
        "server chat-blue:8000 max_fails=1 fail_timeout=10s;",
        "server chat-green:8000 max_fails=1 fail_timeout=10s;",
    ]


def test_draining_instances_are_skipped(files):
    proxy = lines(files["snippets/proxy.conf"])
    assert "proxy_next_upstream error timeout http_502 http_503;" in proxy
    assert "proxy_next_upstream_tries 3;" in proxy
    assert "proxy_http_version 1.1;" in proxy


def test_proxy_headers(files):
    proxy = lines(files["snippets/proxy.conf"])
    for header in (
        "proxy_set_header X-Request-ID $request_id;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header Host $host;",
    ):
        assert header in proxy


def returns(text: str) -> list[str]:
    return [line for line in lines(text) if line.startswith("return ")]


def test_http_redirects_to_the_first_server_name_without_port_on_443():
    files = render_nginx(settings(server_names=("chat.example.com", "www.chat.example.com")))
    http = locations(named_server(files, 80))
    assert returns(http["/"]) == ["return 301 https://chat.example.com$request_uri;"]


def test_http_redirects_to_the_public_https_port():
    files = render_nginx(settings(public_https_port=8443))
    http_server, https_server = named_server(files, 80), named_server(files, 443)
    assert returns(locations(http_server)["/"]) == [
        "return 301 https://chat.example.com:8443$request_uri;"
    ]
    # Inside the container nginx still listens on 80 and 443.
    assert "listen 80;" in lines(http_server)
    assert "listen 443 ssl http2;" in lines(https_server)


def test_no_answer_echoes_what_the_client_sent_as_its_host(files):
    # $host, $http_host and $server_name follow the request's Host header; only the path
    # ($request_uri) of a redirect comes from the request.
    for line in returns(files[SERVERS]):
        assert not re.search(r"\$(host|http_|server_name)", line), line


def test_acme_challenge_is_served_over_http(files):
    http = locations(named_server(files, 80))
    acme = lines(http["^~ /.well-known/acme-challenge/"])
    assert "root /var/www/certbot;" in acme
    assert not any(line.startswith("return") for line in acme)


def test_rate_limit_zones_and_429(files):
    http = lines(files[HTTP])
    assert "limit_req_zone $binary_remote_addr zone=auth:10m rate=5r/s;" in http
    assert "limit_req_zone $binary_remote_addr zone=api:10m rate=50r/s;" in http
    assert "limit_req_status 429;" in http
    assert "limit_conn_zone $binary_remote_addr zone=conn_per_ip:10m;" in http
    assert "limit_conn conn_per_ip 100;" in lines(files[SERVERS])
    assert "error_page 429 @error_429;" in lines(files[SERVERS])


def test_rate_settings_are_rendered():
    files = render_nginx(settings(rate_auth="2r/m", rate_auth_burst=3, rate_api="9r/s"))
    assert "limit_req_zone $binary_remote_addr zone=auth:10m rate=2r/m;" in files[HTTP]
    assert "limit_req_zone $binary_remote_addr zone=api:10m rate=9r/s;" in files[HTTP]
    assert "limit_req zone=auth burst=3 nodelay;" in files[SERVERS]


def test_security_headers_snippet(files):
    snippet = lines(files[HEADERS_SNIPPET])
    for header in (
        'add_header Strict-Transport-Security "max-age=63072000; includeSubDomains" always;',
        "add_header Content-Security-Policy \"default-src 'self'; frame-ancestors 'none'; "
        "base-uri 'self'; object-src 'none'\" always;",
        'add_header X-Frame-Options "DENY" always;',
        'add_header X-Content-Type-Options "nosniff" always;',
        'add_header Referrer-Policy "strict-origin-when-cross-origin" always;',
        'add_header Permissions-Policy "camera=(), microphone=(), geolocation=()" always;',
    ):
        assert header in snippet


def test_security_headers_in_every_server_and_location(files):
    # A location with an add_header of its own loses the server's: each must include them all.
    counted = []
    for server in server_blocks(files[SERVERS]):
        if returns(server) == ["return 444;"]:
            continue  # closes the connection: sends no response at all
        assert HEADERS_INCLUDE in lines(server)
        found = locations(server)
        # Every location block was looked at, none slipped past the pattern.
        assert len(found) == len(re.findall(r"^\s*location ", server, re.M))
        for path, body in found.items():
            assert HEADERS_INCLUDE in lines(body), path
        counted.append(len(found))
    assert counted == [1, 2, 17]


def test_csp_and_hsts_follow_settings():
    files = render_nginx(settings(csp="default-src 'none'", hsts_max_age=300))
    assert (
        "add_header Content-Security-Policy \"default-src 'none'\" always;"
        in files[HEADERS_SNIPPET]
    )
    assert "max-age=300; includeSubDomains" in files[HEADERS_SNIPPET]


def test_json_access_log_without_query_string(files):
    http = files[HTTP]
    log_format = http[http.index("log_format") : http.index("access_log")]
    assert log_format.startswith("log_format json escape=json")
    for variable in (
        "$time_iso8601",
        "$remote_addr",
        "$request_method",
        '"uri":"$uri"',
        "$status",
        "$body_bytes_sent",
        "$request_time",
        "$upstream_response_time",
        "$upstream_addr",
        "$http_user_agent",
        "$request_id",
    ):
        assert variable in log_format
    assert "$request_uri" not in log_format
    assert not re.search(r"\$request\b", log_format)
    assert "$args" not in log_format and "$query_string" not in log_format
    assert "access_log /dev/stdout json;" in lines(http)


def test_http_settings(files):
    http = lines(files[HTTP])
    assert "server_tokens off;" in http
    assert "client_max_body_size 1m;" in http
    assert "gzip on;" in http
    gzip_types = next(line for line in http if line.startswith("gzip_types"))
    for mime in ("application/json", "application/javascript", "text/css", "text/plain"):
        assert mime in gzip_types
    assert "worker_connections 1024;" in lines(files["nginx.conf"])
    assert "worker_rlimit_nofile 2048;" in lines(files["nginx.conf"])


def test_resolver_only_when_set(files):
    assert "resolver" not in files[HTTP]
    rendered = render_nginx(settings(resolver="127.0.0.11"))
    assert "resolver 127.0.0.11 valid=10s ipv6=off;" in lines(rendered[HTTP])


STAPLING = (
    "ssl_stapling on;",
    "ssl_stapling_verify on;",
    "ssl_trusted_certificate /etc/nginx/tls/fullchain.pem;",
)


def stapling_lines(files: dict[str, str]) -> list[str]:
    return [
        line for line in lines(files[SERVERS]) if line.startswith(("ssl_stapling", "ssl_trusted"))
    ]


def test_stapling_and_its_resolver_follow_the_certificates_ocsp_url(tmp_path):
    from deploysuite.deploy.local import nginx_settings
    from tests.unit.certs import issue_chain
    from tests.unit.envtree import config_in

    config = config_in(
        tmp_path, SERVER_NAMES="chat.example.com", PUBLIC_URL="https://chat.example.com"
    )
    with_ocsp = issue_chain(("chat.example.com",), ocsp="http://ocsp.example.net/")
    without = issue_chain(("chat.example.com",), ca_issuers="http://ca.example.net/ca.der")

    stapled = render_nginx(nginx_settings(config, with_ocsp.fullchain_pem))
    assert stapling_lines(stapled) == list(STAPLING)
    assert set(STAPLING) <= set(lines(named_server(stapled, 443)))
    # The responder is a name: nginx resolves it through Docker's DNS, the stack's resolver.
    assert f"resolver {DOCKER_DNS} valid=10s ipv6=off;" in lines(stapled[HTTP])

    for plain in (
        render_nginx(nginx_settings(config, without.fullchain_pem)),
        render_nginx(nginx_settings(config)),  # no certificate at hand
    ):
        assert stapling_lines(plain) == []
        assert "resolver" not in plain[HTTP]


def test_stapling_uses_the_resolver_that_is_set():
    files = render_nginx(settings(ocsp_stapling=True, resolver="10.0.0.2:5353 [fd00::53]"))
    assert "resolver 10.0.0.2:5353 [fd00::53] valid=10s ipv6=off;" in lines(files[HTTP])
    assert stapling_lines(files) == list(STAPLING)


@pytest.mark.parametrize("resolver", ["127.0.0.11", "10.0.0.2 10.0.0.3", "[::1]:53", "dns:53"])
def test_good_resolvers_are_accepted(resolver):
    assert settings(resolver=resolver).resolver == resolver


def test_output_is_deterministic():
    first = render_nginx(settings(upstreams={"chat": ("c:1",), "auth": ("a:1",)}, routes=()))
    second = render_nginx(settings(upstreams={"auth": ("a:1",), "chat": ("c:1",)}, routes=()))
    assert first == second
    assert render_nginx(settings()) == render_nginx(settings())


def test_settings_do_not_follow_the_callers_dict():
    upstreams = {**DEFAULT_UPSTREAMS}
    frozen = settings(upstreams=upstreams)
    upstreams["chat"] = ("elsewhere:1",)
    assert frozen.upstreams["chat"] == ("chat:8000",)


def test_custom_route():
    files = render_nginx(settings(routes=(Route("/api/v2/chat/", "chat"),)))
    body = lines(https_locations(files)["/api/v2/chat/"])
    assert "proxy_pass http://chat_backend;" in body


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"server_names": ()}, "server_names is empty"),
        ({"server_names": ("bad name;",)}, "is not a host name"),
        ({"server_names": "localhost"}, "not one string"),
        ({"upstreams": {**DEFAULT_UPSTREAMS, "chat": "chat:8000"}}, "not one string"),
        ({"upstreams": {**DEFAULT_UPSTREAMS, "chat": ("[zz]:80",)}}, "bad IPv6 address"),
        ({"upstreams": {**DEFAULT_UPSTREAMS, "chat": ()}}, "upstream 'chat' has no servers"),
        ({"upstreams": {}}, "upstreams is empty"),
        ({"upstreams": {**DEFAULT_UPSTREAMS, "chat": ("chat",)}}, "is not host:port"),
        ({"upstreams": {**DEFAULT_UPSTREAMS, "chat": ("c:1", "c:1")}}, "lists a server twice"),
        ({"upstreams": {"Bad Name": ("x:1",)}, "routes": ()}, "upstream name 'Bad Name'"),
        (
            {"upstreams": {k: v for k, v in DEFAULT_UPSTREAMS.items() if k != "billing"}},
            "route '/api/billing/' points at unknown upstream 'billing'",
        ),
        ({"routes": (Route("/health/x", "chat"),)}, "is reserved"),
        ({"routes": (Route("/a b", "chat"),)}, "must start with /"),
        ({"routes": (Route("/a/", "chat"), Route("/a/", "auth"))}, "share a path"),
        ({"rate_auth": "5 per second"}, "not an nginx rate"),
        ({"rate_api_burst": -1}, "rate_api_burst=-1 is below 0"),
        ({"public_https_port": 70000}, "public_https_port=70000 is not a TCP port"),
        ({"http_port": 443}, "both 443"),
        ({"client_max_body_size": "1 MB"}, "client_max_body_size"),
        ({"csp": "default-src 'self'\"; add_header X 1"}, "csp is empty or holds"),
        ({"csp": "  "}, "csp is empty"),
        ({"resolver": "127.0.0.11; evil"}, "is not a list of addresses"),
        ({"resolver": "127.0.0.11  10.0.0.2"}, "is not a list of addresses"),
        ({"resolver": "valid=1s"}, "is not a list of addresses"),
        ({"resolver": "8.8.8.8"}, "resolver '8.8.8.8' is a public address"),
        ({"resolver": "127.0.0.11 [2001:4860:4860::8888]:53"}, "is a public address"),
        ({"server_names": ("*.example.com", "example.com")}, "put a real host name first"),
        ({"server_names": ("a.example.com", "a.example.com")}, "lists a name twice"),
        ({"keepalive": 0}, "keepalive=0 is below 1"),
    ],
)
def test_bad_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        settings(**overrides)


def test_settings_error_is_a_config_error():
    from deploysuite.core.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        settings(server_names=())
    assert isinstance(caught.value, NginxSettingsError)
    assert caught.value.one_line().startswith("error: nginx settings: server_names is empty")


# Directives crossplane's table does not list yet; `nginx -t` in the integration tests loads them.
NEWER_THAN_CROSSPLANE = {"ssl_reject_handshake"}  # nginx 1.19.4


def test_crossplane_parses_the_rendered_tree(tmp_path, files):
    # The includes are absolute container paths: point them at the temporary copy.
    for rel, content in files.items():
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content.replace("/etc/nginx/", f"{tmp_path}/"))
    (tmp_path / "mime.types").write_text("types {\n    text/plain txt;\n}\n")

    parsed = crossplane.parse(str(tmp_path / "nginx.conf"), check_ctx=True, check_args=True)

    assert parsed["errors"] == []
    assert parsed["status"] == "ok"
    loaded = {Path(config["file"]).relative_to(tmp_path).as_posix() for config in parsed["config"]}
    assert loaded == {*files, "mime.types"}
    # crossplane's strict mode also rejects map and types entries; check names by hand instead.
    unknown: list[str] = []

    def walk(block: list[dict]) -> None:
        for directive in block:
            if directive["directive"] not in {*DIRECTIVES, *NEWER_THAN_CROSSPLANE}:
                unknown.append(directive["directive"])
            if directive["directive"] not in ("map", "types"):
                walk(directive.get("block", []))

    for config in parsed["config"]:
        walk(config["parsed"])
    assert unknown == []


def test_upstream_hosts_are_names_only():
    hosts = upstream_hosts(
        settings(
            upstreams={"chat": ("chat-b:8000", "10.0.0.5:8000", "[::1]:8000", "chat-a:8000")},
            routes=(),
        )
    )
    assert hosts == ("chat-a", "chat-b")


def test_nginx_test_argv():
    argv = nginx_test_argv(
        "mysaaschat/nginx:bookworm", Path("/srv/nginx"), Path("/srv/tls"), ["chat", "auth", "chat"]
    )
    assert argv == (
        "docker", "run", "--rm", "--network", "none",
        "--add-host", "auth:127.0.0.1", "--add-host", "chat:127.0.0.1",
        "--volume", "/srv/nginx/nginx.conf:/etc/nginx/nginx.conf:ro",
        "--volume", "/srv/nginx/conf.d:/etc/nginx/conf.d:ro",
        "--volume", "/srv/nginx/snippets:/etc/nginx/snippets:ro",
        "--volume", "/srv/tls:/etc/nginx/tls:ro",
        "--entrypoint", "nginx",
        "mysaaschat/nginx:bookworm", "-t",
    )  # fmt: skip


def test_nginx_dump_argv_differs_only_by_flag():
    args = ("nginx:1.27", Path("/r"), Path("/t"), ["auth"])
    assert nginx_dump_argv(*args) == (*nginx_test_argv(*args)[:-1], "-T")


def test_nginx_reload_argv():
    assert nginx_reload_argv("mysaaschat-nginx-1") == (
        "docker", "exec", "mysaaschat-nginx-1", "nginx", "-s", "reload",
    )  # fmt: skip


def test_write_rendered_writes_only_changes_and_prunes(tmp_path):
    out = tmp_path / "nginx"
    first = {"nginx.conf": "a\n", "conf.d/x.conf": "x\n", "conf.d/old.conf": "o\n", "s/y": "y"}
    assert write_rendered(first, out) == sorted(out / rel for rel in first)
    assert (out / "conf.d/x.conf").read_text() == "x\n"
    assert (out / "nginx.conf").stat().st_mode & 0o777 == 0o644

    assert write_rendered(first, out) == []

    second = {"nginx.conf": "a\n", "conf.d/x.conf": "x2\n"}
    assert write_rendered(second, out) == sorted(
        [out / "conf.d/x.conf", out / "conf.d/old.conf", out / "s/y"]
    )
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "conf.d",
        "conf.d/x.conf",
        "nginx.conf",
    ]


def test_write_rendered_refuses_paths_outside(tmp_path):
    with pytest.raises(ValueError, match="relative path inside"):
        write_rendered({"../escape.conf": ""}, tmp_path / "out")
    with pytest.raises(ValueError, match="relative path inside"):
        write_rendered({"/etc/passwd": ""}, tmp_path / "out")


def test_apply_action():
    out = Path("/srv/nginx")
    assert apply_action([], out) == "none"
    assert apply_action([out / "conf.d/10-upstreams.conf"], out) == "reload"
    assert apply_action([out / "conf.d/10-upstreams.conf", out / "nginx.conf"], out) == "restart"


def test_a_hung_connect_gives_up_before_the_rollout_can_reuse_its_address(files):
    """A removed container's address drops SYNs and is given to the next container the engine
    starts; the rollout waits RELOAD_SETTLE_SECONDS after the reload that forgets it."""
    from deploysuite.engines.compose import RELOAD_SETTLE_SECONDS

    match = re.search(r"^proxy_connect_timeout (\d+)s;", files["snippets/proxy.conf"], re.M)
    assert match and int(match.group(1)) < RELOAD_SETTLE_SECONDS
