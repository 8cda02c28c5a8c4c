"""What a release carries to its host: the service images (built here, pushed, pinned by digest),
the files (compose file, its .env, the services' environments, nginx and Prometheus
configuration) and the TLS certificate; the host's registry login and pulls."""

from __future__ import annotations

import shlex
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from deploysuite.config.layers import Config
from deploysuite.config.service_env import (
    environments,
    render_compose_doc,
    secret_variables,
    with_secret_files,
)
from deploysuite.config.session import Session
from deploysuite.core.errors import ConfigError, SuiteError
from deploysuite.core.runner import Command, Runner
from deploysuite.deploy import release as rel
from deploysuite.deploy.local import (
    deploy_paths,
    nginx_settings,
    prepare_tls,
    server_names,
    stack_ca,
    uses_local_ca,
)
from deploysuite.deploy.target import Target
from deploysuite.edge.nginx import render_nginx
from deploysuite.edge.tls import CERT, DHPARAM, KEY
from deploysuite.engines.stack import COMPOSE_FILE, SERVICE_IMAGE_VARS
from deploysuite.images.build import build_services, git_version, service_bases
from deploysuite.images.registry import login_argv, push_all, registry_host
from deploysuite.images.services import SERVICES
from deploysuite.monitoring.stack import monitoring_files


def compose_variables_env(
    config: Config, compose_text: str, images: Mapping[str, str], layout: rel.Layout
) -> dict[str, str]:
    """The release's .env: only what the compose file interpolates (no other secret goes to the
    host), with the images pinned by digest and the host's folders."""
    wanted = rel.compose_variables(compose_text)
    env = {k: v for k, v in config.as_env().items() if k in wanted}
    for service, ref in images.items():
        env[SERVICE_IMAGE_VARS[service]] = ref
    env["NGINX_RENDERED_DIR"] = f"{layout.live}/nginx"
    env["PROMETHEUS_CONFIG_DIR"] = f"{layout.live}/prometheus"
    env["DEPLOY_METRICS_DIR"] = layout.metrics
    env["TLS_DIR"] = layout.tls
    return env


def release_files(
    config: Config, images: Mapping[str, str], layout: rel.Layout, host: str
) -> dict[str, bytes]:
    """Relative path -> bytes of everything the release puts on the host."""
    compose_text = (config.root / COMPOSE_FILE).read_text(encoding="utf-8")
    # secrets as files in the environment's own folder on the host, the same for every release
    # (deploy/secretfiles.py); the manifest keeps one digest of them all
    doc, secret_files = with_secret_files(
        environments(config), secret_variables(config), layout.root
    )
    files = {
        COMPOSE_FILE: compose_text.encode(),
        ".env": rel.dotenv(compose_variables_env(config, compose_text, images, layout)).encode(),
        "services.env.yml": render_compose_doc(doc).encode(),
    }
    files.update({f.path: f.content for f in secret_files})
    files.update(monitoring_files(config, host, server_names(config)[0], stack_ca(config)))
    for name, text in render_nginx(nginx_settings(config)).items():
        files[f"nginx/{name}"] = text.encode()
    return files


def upload_tls(t: Target) -> str:
    """local-ca: the suite's certificate for the server names, uploaded when it differs.
    acme: certbot's files must already be there (inv certs.issue)."""
    names = (CERT, KEY, DHPARAM)
    if not uses_local_ca(t.config):
        script = " && ".join(f"test -s {shlex.quote(t.layout.tls + '/' + n)}" for n in names)
        argv = ("sh", "-c", script)
        if not t.runner.run(Command(argv, mutates=False), check=False).ok:
            raise SuiteError(
                f"{t.conn.host.name}: no certificate in {t.layout.tls} ({', '.join(names)})",
                f"inv certs.issue --env={t.config.env}, or TLS_SOURCE=local-ca for a test host",
            )
        return "certbot's"
    local = deploy_paths(t.config).tls_dir
    state = prepare_tls(Runner(t.runner.events, t.runner.masker, t.runner.dry_run), t.config, local)
    if t.runner.dry_run and not (local / CERT).exists():
        t.runner.events.command(
            f"[{t.conn.host.name}] upload TLS files to {t.layout.tls}", run=False
        )
        return state
    files = {n: (local / n).read_bytes() for n in names}
    # what was uploaded last (the key, handed to nginx's user, is not the deploy user's to read)
    script = 'cd "$1" 2>/dev/null && { cat .uploaded.sha256 2>/dev/null || sha256sum -- *; }'
    sums = t.runner.run(Command(("sh", "-c", script, "sh", t.layout.tls), mutates=False),
                        check=False).stdout  # fmt: skip
    remote = {line.split()[-1]: line.split()[0] for line in sums.splitlines() if line.strip()}
    changed = {n: d for n, d in files.items() if remote.get(n) != rel.sha256(d)}
    if changed:
        # the deploy user's; others may only traverse it (nginx, uid 101, opens its files by
        # name; the key is handed to that user after the pulls: deploy/secretfiles.py)
        t.runner.run(Command(("mkdir", "-p", "-m", "0711", t.layout.tls)))
        t.runner.run(Command(("chmod", "0711", t.layout.tls)))
        for name, data in changed.items():
            t.runner.put(data, f"{t.layout.tls}/{name}", 0o600 if name == KEY else 0o644)
        listing = "".join(f"{rel.sha256(files[n])}  {n}\n" for n in sorted(files))
        t.runner.put(listing.encode(), f"{t.layout.tls}/.uploaded.sha256", 0o600)
    return f"{state}, {'uploaded ' + ', '.join(changed) if changed else 'same on the host'}"


DOCKER_DIR = "docker-config"


@contextmanager
def registry_login(t: Target, release_id: str) -> Iterator[str]:
    """A DOCKER_CONFIG folder of the release's own (0700), logged in for the block and removed
    afterwards, whatever happens: no registry credential stays in the deploy user's ~/.docker.
    Yields the folder, for `docker --config`."""
    config = t.config
    folder = f"{t.layout.release(release_id)}/{DOCKER_DIR}"
    t.runner.run(Command(("mkdir", "-p", "-m", "0700", folder)))
    host = registry_host(config.require("IMAGE_REPOSITORY"))
    user, password = config.get("REGISTRY_USERNAME"), config.get("REGISTRY_PASSWORD")
    try:
        if host and user and password:
            t.runner.run(Command(login_argv(folder, user, host), input=password.encode(),
                                 timeout=60),
                         fix=f"check REGISTRY_USERNAME / REGISTRY_PASSWORD and that the host "
                             f"reaches {host}")  # fmt: skip
        yield folder
    finally:
        t.reconnect_if_lost()
        t.runner.run(Command(("rm", "-rf", folder)), check=False)


def pull(t: Target, release_id: str, images: Mapping[str, str]) -> None:
    """Pull by digest with the release's own registry login (registry_login)."""
    with registry_login(t, release_id) as docker_config:
        for service, ref in sorted(images.items()):
            with t.runner.events.step(f"pull {service}"):
                t.runner.run(
                    Command(("docker", "--config", docker_config, "pull", "--quiet", ref),
                            timeout=600),
                    fix=f"the host could not pull {ref}: check the registry and its credentials",
                )  # fmt: skip


def build_and_push(s: Session) -> tuple[str, dict[str, str]]:
    """Build the service images here, push them, and return the git version and the images
    pinned by digest (by tag under --dry-run, which pushes nothing)."""
    config = s.config
    pinned = pinned_images(config)  # refused before anything is built
    version = git_version(s.runner, config.root)
    with s.events.step("service images"):
        built = build_services(
            s.runner, config.root, SERVICES, config.require("IMAGE_REPOSITORY"), version,
            service_bases(config),
        )  # fmt: skip
    wanted = [b for b in built if b.service in SERVICE_IMAGE_VARS]
    user, password = config.get("REGISTRY_USERNAME"), config.get("REGISTRY_PASSWORD")
    auth = {"username": user, "password": password} if user and password else None
    pushed = push_all(s.runner, [b.ref for b in wanted], auth)
    if s.runner.dry_run:
        return version, {b.service: known_digest(s.runner, b.ref) for b in wanted} | pinned
    by_ref = {p.ref: p.pinned for p in pushed}
    return version, {b.service: by_ref[b.ref] for b in wanted} | pinned


def pinned_images(config: Config) -> dict[str, str]:
    """Services whose image the environment names (AUTH_IMAGE=repo@sha256:..., e.g. the image a
    pipeline built and tested): that image instead of the one built here. Only by digest: a
    tag can move between the deploy and a rollback."""
    pinned = {}
    for service, var in SERVICE_IMAGE_VARS.items():
        ref = config.get(var)
        if not ref:
            continue
        if "@sha256:" not in ref:
            raise ConfigError(
                f"{var}={ref!r} is not pinned by digest",
                f"set {var}=REPOSITORY@sha256:DIGEST (docker buildx imagetools inspect REF), "
                f"or unset it to deploy the image built from this checkout",
            )
        pinned[service] = ref
    return pinned


def known_digest(runner: Runner, ref: str) -> str:
    """`repo@sha256:...` when this image was pushed before (what a push would pin again), else
    the tag: --dry-run pushes nothing, and should still plan like the real deploy."""
    argv = ("docker", "image", "inspect", "--format", '{{join .RepoDigests "\\n"}}', ref)
    out = runner.run(Command(argv, mutates=False), check=False).stdout
    repository = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
    return next((d for d in out.split() if d.split("@", 1)[0] == repository), ref)
