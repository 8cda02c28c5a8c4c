"""The nginx edge of the stack: settings, rendered configuration, and the commands that check and
reload it.

`render_nginx` is pure (settings in, file contents out); `write_rendered` is the only function
here that touches the disk; the `*_argv` builders return commands for deploysuite.core.runner.

Layout of the rendered tree, as it is mounted in the nginx container:

    nginx.conf          -> /etc/nginx/nginx.conf   (only worker sizing: rarely changes)
    conf.d/*.conf       -> /etc/nginx/conf.d/      (http settings, upstreams, servers)
    snippets/*.conf     -> /etc/nginx/snippets/    (included by every location)

Everything a deploy changes (upstream servers, limits, headers) lives under conf.d/ and snippets/,
which are mounted as directories: an atomic rename there is seen by the container, whereas a
single-file bind mount (nginx.conf) keeps showing the old inode until the container restarts.
`apply_action` tells a caller which of the two a set of changed files needs.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Literal

import jinja2

from deploysuite.core.errors import ConfigError

Argv = tuple[str, ...]

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "nginx" / "templates"

# Paths inside the nginx container (official image layout, kept by mysaaschat/nginx too).
CONF_DIR = PurePosixPath("/etc/nginx")
TLS_DIR = CONF_DIR / "tls"
ACME_WEBROOT = PurePosixPath("/var/www/certbot")

DEFAULT_CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'self'; object-src 'none'"
SERVICE_PORT = 8000
# Docker's embedded DNS, in every container on a user-defined network (the stack's networks):
# it answers the stack's own names and forwards the rest to the host's resolvers.
DOCKER_DNS = "127.0.0.11"

RouteKind = Literal["auth", "api", "websocket"]
ApplyAction = Literal["none", "reload", "restart"]


class NginxSettingsError(ConfigError, ValueError):
    """Settings that would render an invalid or unsafe nginx configuration."""


@dataclass(frozen=True)
class Route:
    """A public path proxied to an upstream.

    kind picks the rate-limit zone ("auth" is the strict one) or WebSocket handling.
    exact renders `location = path` (one URI) instead of a prefix match.
    """

    path: str
    upstream: str
    kind: RouteKind = "api"
    exact: bool = False


DEFAULT_ROUTES: tuple[Route, ...] = (
    Route("/api/auth/", "auth", "auth"),
    Route("/api/chat/", "chat"),
    Route("/api/billing/", "billing"),
    Route("/api/analytics/", "analytics"),
    Route("/api/orchestrator/", "orchestrator"),
    Route("/ws", "chat", "websocket", exact=True),
)

SERVICES = ("auth", "chat", "billing", "analytics", "orchestrator")
DEFAULT_UPSTREAMS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {name: (f"{name}:{SERVICE_PORT}",) for name in SERVICES}
)


@dataclass(frozen=True)
class NginxSettings:
    """What varies between environments and releases. Validated on construction, so an instance
    always renders a configuration nginx accepts."""

    # The names nginx answers for; any other name (or none) is refused by the default servers.
    # The first is the canonical one: plain HTTP redirects there.
    server_names: tuple[str, ...]
    # Ports nginx listens on inside the container.
    http_port: int = 80
    https_port: int = 443
    # Where clients reach HTTPS from outside (a local stack published on 127.0.0.1:8443):
    # the port-80 redirect must point there, not at the container's port.
    public_https_port: int = 443
    # name -> "host:port" servers; a rolling deploy lists old and new containers together.
    upstreams: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: DEFAULT_UPSTREAMS)
    routes: tuple[Route, ...] = DEFAULT_ROUTES
    hsts_max_age: int = 63072000
    rate_auth: str = "5r/s"
    rate_auth_burst: int = 10
    rate_api: str = "50r/s"
    rate_api_burst: int = 100
    # Concurrent connections per client address (each HTTP/2 stream counts as one).
    conn_per_ip: int = 100
    client_max_body_size: str = "1m"
    keepalive: int = 32
    csp: str = DEFAULT_CSP
    worker_connections: int = 1024
    # nginx's resolver, Docker's embedded DNS (127.0.0.11) in the stack. nginx 1.22 still resolves
    # upstream servers once per (re)load: a reload after containers change is what moves traffic.
    # None: no resolver, unless OCSP stapling needs one (then DOCKER_DNS).
    resolver: str | None = None
    # The certificate names an OCSP responder (tls.ocsp_url): nginx staples its answer. Off for
    # a certificate without one (the local CA's), where nginx would only warn.
    ocsp_stapling: bool = False
    # Swarm: a service's tasks come and go by themselves, with no reload to follow them. Each
    # proxied location then resolves its one server name through `resolver` at request time
    # (valid 1 s) and balances over every address it returns (the tasks, with endpoint_mode
    # dnsrr); a failed connect moves to the next address (proxy_next_upstream).
    dynamic_upstreams: bool = False
    # host:port of stub_status for the nginx exporter (the `monitoring` profile): a name that
    # resolves only on the monitoring network (an alias there), so nginx binds that address
    # alone and nothing on frontend reaches it. None: no status server.
    status_listen: str | None = None

    def __post_init__(self) -> None:
        # tuple("localhost") would quietly become one name per character.
        if isinstance(self.server_names, str):
            _fail("server_names must be a tuple of names, not one string")
        for name, servers in self.upstreams.items():
            if isinstance(servers, str):
                _fail(f"upstream {name!r} must list servers as a tuple, not one string")
        # A frozen copy: the caller's dict must not change what an instance renders.
        frozen = MappingProxyType({k: tuple(v) for k, v in self.upstreams.items()})
        object.__setattr__(self, "upstreams", frozen)
        object.__setattr__(self, "server_names", tuple(self.server_names))
        object.__setattr__(self, "routes", tuple(self.routes))
        _validate(self)


_SERVER_NAME = re.compile(r"^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_UPSTREAM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_STATUS_LISTEN = re.compile(r"^[a-z0-9][a-z0-9.-]*:[0-9]{1,5}$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")
_RATE = re.compile(r"^[1-9][0-9]*r/[sm]$")
_SIZE = re.compile(r"^[0-9]+[kKmMgG]?$")
_ROUTE_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")
_PORT = r"(:[0-9]{1,5})?"
_RESOLVER_HOST = re.compile(r"^(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*)" + _PORT + "$")
_RESOLVER_V6 = re.compile(r"^\[(?P<host>[0-9A-Fa-f:.]+)\]" + _PORT + "$")
# Characters that would end or escape the double-quoted add_header value, or interpolate.
_UNSAFE_HEADER_CHARS = frozenset('"\\$\n\r')


def _fail(message: str) -> None:
    raise NginxSettingsError(f"nginx settings: {message}")


def split_server(server: str) -> tuple[str, int]:
    """("host", port) of an upstream server "host:port" or "[v6]:port"; ValueError otherwise."""
    host, sep, port = server.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise NginxSettingsError(f"nginx settings: upstream server {server!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise NginxSettingsError(
                f"nginx settings: upstream server {server!r} has a bad IPv6 address"
            ) from None
        return host[1:-1], int(port)
    if not _HOST.match(host):
        raise NginxSettingsError(f"nginx settings: upstream server {server!r} has a bad host name")
    return host, int(port)


def _check_resolver(resolver: str) -> None:
    """Addresses (IPv4, [IPv6] or a name, each with an optional :port) separated by one space;
    a public address is refused: its answers could be spoofed on the way."""
    for address in resolver.split(" "):
        match = _RESOLVER_V6.match(address) or _RESOLVER_HOST.match(address)
        if not match:
            _fail(f"resolver {resolver!r} is not a list of addresses (e.g. {DOCKER_DNS})")
        try:
            ip = ipaddress.ip_address(match.group("host"))
        except ValueError:
            continue
        if ip.is_global:
            _fail(
                f"resolver {address!r} is a public address: use a resolver on this host or its "
                f"private network (e.g. Docker's {DOCKER_DNS})"
            )


def _validate(s: NginxSettings) -> None:
    if not s.server_names:
        _fail("server_names is empty: give at least one host name (e.g. localhost)")
    for name in s.server_names:
        if not _SERVER_NAME.match(name):
            _fail(f"server name {name!r} is not a host name")
    if s.server_names[0].startswith("*.") or s.server_names[0] == "_":
        _fail(
            f"the first server name {s.server_names[0]!r} is where plain HTTP redirects to: "
            "put a real host name first"
        )
    if len(set(s.server_names)) != len(s.server_names):
        _fail(f"server_names lists a name twice: {list(s.server_names)}")
    for label, port in (
        ("http_port", s.http_port),
        ("https_port", s.https_port),
        ("public_https_port", s.public_https_port),
    ):
        if not 0 < port < 65536:
            _fail(f"{label}={port} is not a TCP port")
    if s.http_port == s.https_port:
        _fail(f"http_port and https_port are both {s.http_port}")
    if not s.upstreams:
        _fail("upstreams is empty")
    if s.status_listen is not None and not _STATUS_LISTEN.match(s.status_listen):
        _fail(f"status_listen {s.status_listen!r}: use name:port, e.g. nginx-status:8081")
    if s.dynamic_upstreams and s.resolver is None:
        _fail("dynamic_upstreams needs a resolver (127.0.0.11 in a Swarm)")
    if s.dynamic_upstreams and any(len(v) != 1 for v in s.upstreams.values()):
        _fail("dynamic_upstreams resolves one server name per upstream")
    for name, servers in s.upstreams.items():
        if not _UPSTREAM_NAME.match(name):
            _fail(f"upstream name {name!r}: use lower-case letters, digits, '-' and '_'")
        if not servers:
            _fail(f"upstream {name!r} has no servers: list at least one host:port")
        if len(set(servers)) != len(servers):
            _fail(f"upstream {name!r} lists a server twice: {list(servers)}")
        for server in servers:
            split_server(server)
    paths = [route.path for route in s.routes]
    if len(set(paths)) != len(paths):
        _fail(f"two routes share a path: {paths}")
    for route in s.routes:
        if route.upstream not in s.upstreams:
            _fail(
                f"route {route.path!r} points at unknown upstream {route.upstream!r} "
                f"(known: {', '.join(sorted(s.upstreams))})"
            )
        if not _ROUTE_PATH.match(route.path):
            _fail(f"route path {route.path!r} must start with / and hold no spaces or quotes")
        if route.path in ("/", "/health") or route.path.startswith("/health/"):
            _fail(f"route path {route.path!r} is reserved (/ is the 404, /health* is nginx's)")
    for label, rate in (("rate_auth", s.rate_auth), ("rate_api", s.rate_api)):
        if not _RATE.match(rate):
            _fail(f"{label}={rate!r} is not an nginx rate such as 5r/s or 30r/m")
    for label, number, minimum in (
        ("rate_auth_burst", s.rate_auth_burst, 0),
        ("rate_api_burst", s.rate_api_burst, 0),
        ("hsts_max_age", s.hsts_max_age, 0),
        ("keepalive", s.keepalive, 1),
        ("conn_per_ip", s.conn_per_ip, 1),
        ("worker_connections", s.worker_connections, 64),
    ):
        if number < minimum:
            _fail(f"{label}={number} is below {minimum}")
    if not _SIZE.match(s.client_max_body_size):
        _fail(f"client_max_body_size={s.client_max_body_size!r} is not a size such as 1m")
    if not s.csp.strip() or _UNSAFE_HEADER_CHARS & set(s.csp):
        _fail("csp is empty or holds a double quote, backslash, $ or line break")
    if s.resolver is not None:
        _check_resolver(s.resolver)


def upstream_hosts(settings: NginxSettings) -> tuple[str, ...]:
    """The host names (not addresses) of every upstream server, sorted: what must resolve when
    nginx loads the configuration."""
    hosts: set[str] = set()
    for servers in settings.upstreams.values():
        for server in servers:
            host, _ = split_server(server)
            try:
                ipaddress.ip_address(host)
            except ValueError:
                hosts.add(host)
    return tuple(sorted(hosts))


def effective_resolver(settings: NginxSettings) -> str | None:
    """The resolver nginx is given: the one set, else Docker's DNS when OCSP stapling has to
    resolve the responder's name, else none."""
    if settings.resolver is not None:
        return settings.resolver
    return DOCKER_DNS if settings.ocsp_stapling else None


def _environment(templates_dir: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_nginx(settings: NginxSettings, templates_dir: Path = TEMPLATES_DIR) -> dict[str, str]:
    """Relative path -> content of every file of the configuration (same settings, same bytes).

    Each `<path>.j2` under templates_dir renders to `<path>`.
    """
    env = _environment(templates_dir)
    port_suffix = "" if settings.public_https_port == 443 else f":{settings.public_https_port}"
    context = {
        "s": settings,
        "upstreams": sorted(settings.upstreams.items()),
        "routes": settings.routes,
        # The configured name, never $host: nothing the client sends but the path comes back.
        "https_redirect": f"https://{settings.server_names[0]}{port_suffix}$request_uri",
        "resolver": effective_resolver(settings),
        "conf_dir": str(CONF_DIR),
        "tls_dir": str(TLS_DIR),
        "acme_webroot": str(ACME_WEBROOT),
        # Enough descriptors for a client and an upstream socket per connection.
        "worker_rlimit_nofile": settings.worker_connections * 2,
    }
    files: dict[str, str] = {}
    for name in sorted(env.list_templates(extensions=["j2"])):
        files[name.removesuffix(".j2")] = env.get_template(name).render(context)
    return files


def nginx_volume_args(
    rendered_dir: Path, tls_dir: Path, acme_webroot: Path | None = None
) -> tuple[str, ...]:
    """`--volume` arguments that mount the rendered tree, the TLS material and, for a serving
    container, certbot's webroot, all read-only, where the configuration expects them."""
    mounts = [
        (rendered_dir / "nginx.conf", CONF_DIR / "nginx.conf"),
        (rendered_dir / "conf.d", CONF_DIR / "conf.d"),
        (rendered_dir / "snippets", CONF_DIR / "snippets"),
        (tls_dir, TLS_DIR),
    ]
    if acme_webroot is not None:
        mounts.append((acme_webroot, ACME_WEBROOT))
    argv: list[str] = []
    for source, target in mounts:
        argv += ["--volume", f"{source}:{target}:ro"]
    return tuple(argv)


def _nginx_offline_argv(
    flag: str, image: str, rendered_dir: Path, tls_dir: Path, upstream_hosts: Iterable[str]
) -> Argv:
    # No network: the upstream names only have to resolve (nginx resolves them on load), and
    # --add-host answers that from /etc/hosts. The entrypoint's start-up scripts are skipped:
    # they prepare a server that is not started here.
    add_hosts: list[str] = []
    for host in sorted(set(upstream_hosts)):
        add_hosts += ["--add-host", f"{host}:127.0.0.1"]
    return (
        "docker", "run", "--rm", "--network", "none",
        *add_hosts,
        *nginx_volume_args(rendered_dir, tls_dir),
        "--entrypoint", "nginx",
        image, flag,
    )  # fmt: skip


def nginx_test_argv(
    image: str, rendered_dir: Path, tls_dir: Path, upstream_hosts: Iterable[str]
) -> Argv:
    """`nginx -t` in the image on the rendered files and TLS material (mounted read-only)."""
    return _nginx_offline_argv("-t", image, rendered_dir, tls_dir, upstream_hosts)


def nginx_dump_argv(
    image: str, rendered_dir: Path, tls_dir: Path, upstream_hosts: Iterable[str]
) -> Argv:
    """`nginx -T`: tests, then prints every loaded file (what gixy analyses, includes resolved)."""
    return _nginx_offline_argv("-T", image, rendered_dir, tls_dir, upstream_hosts)


def nginx_reload_argv(container: str) -> Argv:
    """Graceful reload: new workers take the new configuration, old ones finish their requests.
    A configuration that fails to load is refused and the old one keeps serving."""
    return ("docker", "exec", container, "nginx", "-s", "reload")


def apply_action(changed: Iterable[Path], out_dir: Path) -> ApplyAction:
    """What the running container needs after `write_rendered` changed these files: nothing, a
    reload, or a restart when nginx.conf changed (its single-file bind mount still shows the
    replaced file)."""
    changed = list(changed)
    if not changed:
        return "none"
    if out_dir / "nginx.conf" in changed:
        return "restart"
    return "reload"


def _check_relative(rel: str) -> PurePosixPath:
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"rendered file {rel!r} must be a relative path inside the output")
    return path


def write_rendered(files: Mapping[str, str], out_dir: Path) -> list[Path]:
    """Writes the rendered files under out_dir and removes those that are no longer rendered.

    out_dir belongs to the renderer: any other file in it is removed. Each file is written to a
    temporary file in its own folder and renamed over the old one, so nginx never reads half a
    file. Returns the paths that changed (written or removed), sorted: empty means no reload.
    """
    wanted = {out_dir / _check_relative(rel): content for rel, content in files.items()}
    changed: list[Path] = []
    for path, content in sorted(wanted.items()):
        data = content.encode()
        if path.is_file() and path.read_bytes() == data:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            # nginx's workers run as another user and must read the file.
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        changed.append(path)
    if out_dir.is_dir():
        for path in sorted(out_dir.rglob("*"), reverse=True):
            if path.is_dir():
                if not any(path.iterdir()):
                    path.rmdir()
            elif path not in wanted:
                path.unlink()
                changed.append(path)
    return sorted(changed)
