"""The local environment's deploy: render, build, migrate, up, wait, smoke, on this machine's
engine. Each step is a function over the runner, so --dry-run shows every command it would run."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from deploysuite.config.envcheck import check_config
from deploysuite.config.layers import Config
from deploysuite.config.service_env import (
    environments,
    render_compose_doc,
    secret_variables,
    with_secret_files,
)
from deploysuite.config.session import Session
from deploysuite.core import commands
from deploysuite.core.errors import ChecksFailed, ConfigError, SuiteError
from deploysuite.core.events import Events
from deploysuite.core.files import write_private
from deploysuite.core.runner import Command, Runner
from deploysuite.deploy import secretfiles
from deploysuite.deploy.drift import find_drift, refuse_drift
from deploysuite.deploy.rollout import run_migrations, silenced_blips
from deploysuite.deploy.smoke import HTTP_SERVICES, CheckResult, SmokeTarget, run_smoke
from deploysuite.edge import tls
from deploysuite.edge.nginx import (
    NginxSettings,
    apply_action,
    render_nginx,
    write_rendered,
)
from deploysuite.engines import state as stack_state
from deploysuite.engines.compose import ComposeEngine, batch_size
from deploysuite.engines.stack import (
    COMPOSE_FILE,
    SERVICE_IMAGE_VARS,
    Stack,
    build_dir,
    services_env_file,
    stack_for,
)
from deploysuite.images.build import build_services, git_version, service_bases
from deploysuite.images.services import SERVICES
from deploysuite.monitoring.deploymetrics import METRICS_FILE, deploy_metrics
from deploysuite.monitoring.stack import (
    NGINX_STATUS_LISTEN,
    monitoring_enabled,
    monitoring_files,
    monitoring_role_argv,
    monitoring_role_sql,
    readers_of,
    write_monitoring_files,
)

DATABASE_SERVICES = ("auth", "chat", "billing", "analytics")


@dataclass(frozen=True)
class DeployPaths:
    """Generated files of one stack (see compose.build_dir)."""

    build_dir: Path

    @property
    def nginx_dir(self) -> Path:
        return self.build_dir / "nginx"

    @property
    def tls_dir(self) -> Path:
        return self.build_dir / "tls"

    @property
    def prometheus_dir(self) -> Path:
        return self.build_dir / "prometheus"

    @property
    def metrics_dir(self) -> Path:
        """The suite's own metrics (deploys, rollbacks), read by node-exporter's textfile
        collector."""
        return self.build_dir / "metrics"


def server_names(config: Config) -> tuple[str, ...]:
    """SERVER_NAMES: the names nginx answers for (any other is refused), the first being where
    plain HTTP redirects to."""
    return tuple((config.get("SERVER_NAMES") or "localhost").split())


def nginx_settings(config: Config, certificate: bytes | None = None) -> NginxSettings:
    """certificate: the PEM chain nginx serves, when it is at hand; OCSP stapling is on when its
    leaf names an OCSP responder."""
    public = config.require("PUBLIC_URL")
    return NginxSettings(
        server_names=server_names(config),
        public_https_port=urlsplit(public).port or 443,
        ocsp_stapling=certificate is not None and tls.ocsp_url(certificate) is not None,
        upstreams={name: (f"{name}:8000",) for name in HTTP_SERVICES},
        rate_api=config.get("NGINX_API_RATE") or "50r/s",
        rate_api_burst=whole_number("NGINX_API_BURST", config.get("NGINX_API_BURST"), "100"),
        status_listen=NGINX_STATUS_LISTEN if monitoring_enabled(config) else None,
    )


def whole_number(key: str, value: str | None, default: str) -> int:
    value = value or default
    if not value.isdigit():
        raise ConfigError(f"{key}={value!r} is not a whole number", f"set {key}, e.g. {default}")
    return int(value)


def compose_env(config: Config, images: Mapping[str, str], paths: DeployPaths) -> dict[str, str]:
    """The variables compose interpolates: the config, the images to run, rendered paths."""
    env = config.as_env()
    for service, ref in images.items():
        var = SERVICE_IMAGE_VARS.get(service)
        if var and not config.get(var):
            env[var] = ref
    env.setdefault("NGINX_RENDERED_DIR", str(paths.nginx_dir))
    env.setdefault("TLS_DIR", str(paths.tls_dir))
    env["PROMETHEUS_CONFIG_DIR"] = str(paths.prometheus_dir)
    env["DEPLOY_METRICS_DIR"] = str(paths.metrics_dir)
    return env


def require_valid_config(config: Config, events: Events) -> None:
    """env.check's errors, all of them, before anything changes."""
    problems = [p for p in check_config(config) if p.severity == "error"]
    if problems:
        for problem in problems:
            events.info(f"  {problem.key}: {problem.message} ({problem.location})")
        raise ChecksFailed(
            f"environment '{config.env}' has {len(problems)} configuration problem(s)",
            f"inv env.check --env={config.env}",
        )


def write_service_envs(
    runner: Runner, config: Config, scratch: Path
) -> tuple[Path, secretfiles.Previous]:
    """Each service's environment from its own six-layer config, into the generated compose
    file, and its secrets into files of their own; returns the file to plan with and what the
    secret files held before (to put back if the deploy stops). Under --dry-run the compose file
    goes to `scratch` instead and no secret file is written, so the plan shows what would change
    while the stack's own files stay untouched."""
    base = build_dir(config)
    doc, files = with_secret_files(environments(config), secret_variables(config), str(base))
    path = services_env_file(config)
    if runner.dry_run:
        what = f"{path} (mode 0600), {len(files)} secret file(s) under {base / 'secrets'} (0400)"
        runner.events.command(f"[local] write {what}", run=False)
        path = scratch / path.name
        write_private(path, render_compose_doc(doc))
        return path, {}
    previous = secretfiles.sync(runner, base, files, chown_image(config))
    text = render_compose_doc(doc)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        write_private(path, text)
    return path, previous


def put_back_env(
    runner: Runner, config: Config, previous_env: str | None, previous: secretfiles.Previous
) -> None:
    """The generated compose file and the secret files as they were before this deploy."""
    if previous_env is not None:
        write_private(services_env_file(config), previous_env)
    secretfiles.put_back(runner, build_dir(config), previous, chown_image(config))


def chown_image(config: Config) -> str:
    """An image every stack has, for handing files to their readers where this user has no
    root: PostgreSQL's."""
    return config.require("POSTGRES_IMAGE")


def prepare_tls(runner: Runner, config: Config, tls_dir: Path) -> str:
    """The local CA (made once), a leaf certificate it signs for the server names (made anew
    when missing, a week before expiry, or when the names change), and the DH group."""
    names = "\n".join(tls.local_names(server_names(config))) + "\n"
    cert, names_file = tls_dir / tls.CERT, tls_dir / tls.NAMES
    state = "kept"
    if not cert.exists():
        state = "created"
    elif not names_file.exists() or names_file.read_text() != names:
        state = "renewed for new names"
    else:
        result = runner.run(Command(tls.cert_enddate_argv(cert), mutates=False), check=False)
        now = dt.datetime.now(dt.UTC)
        if not result.ok or tls.needs_renewal(tls.parse_enddate(result.stdout), now):
            state = "renewed"
    if state == "kept" and (tls_dir / tls.DHPARAM).exists():
        return state
    if not runner.dry_run:
        tls_dir.mkdir(parents=True, exist_ok=True)
    if not (tls_dir / tls.CA_CERT).exists():
        runner.run(Command(tls.local_ca_argv(tls_dir)))
    if state != "kept":
        # a key handed to nginx's user is no longer this user's to overwrite: a new file
        runner.run(Command(("rm", "-f", str(tls_dir / tls.KEY))))
        runner.run(Command(tls.leaf_request_argv(tls_dir, server_names(config))))
        runner.run(Command(tls.leaf_sign_argv(tls_dir, secrets.token_hex(16))))
        runner.run(Command(("rm", "-f", str(tls_dir / tls.CSR))))
        if not runner.dry_run:
            names_file.write_text(names)
    if not (tls_dir / tls.DHPARAM).exists():
        runner.run(Command(tls.dhparam_argv(tls_dir)))
    return state


def render(runner: Runner, config: Config, nginx_dir: Path) -> list[Path]:
    cert = deploy_paths(config).tls_dir / tls.CERT
    files = render_nginx(nginx_settings(config, cert.read_bytes() if cert.is_file() else None))
    if runner.dry_run:
        for name in sorted(files):
            path = nginx_dir / name
            if not path.exists() or path.read_text(encoding="utf-8") != files[name]:
                runner.events.command(f"[local] write {path}", run=False)
        return []
    return write_rendered(files, nginx_dir)


def mail_reader(runner: Runner, stack: Stack, env: Mapping[str, str]):  # type: ignore[no-untyped-def]
    """Reads the mail sink's messages from inside its container (it publishes no port), on the
    runner's host."""
    script = (
        "import sys, urllib.parse, urllib.request;"
        "print(urllib.request.urlopen('http://127.0.0.1:8025/messages?to='"
        " + urllib.parse.quote(sys.argv[1]), timeout=5).read().decode())"
    )

    async def read(to: str) -> list[dict[str, object]]:
        argv = commands.compose(
            stack.project, stack.files, "exec", "-T", "mailsink", "python3", "-c", script, to,
            profiles=stack.profiles,
        )  # fmt: skip
        command = Command(argv, env=env, mutates=False, timeout=30)
        result = await asyncio.to_thread(runner.run, command, check=False)
        if not result.ok:
            return []
        return list(json.loads(result.stdout).get("messages", []))

    return read


def uses_local_ca(config: Config) -> bool:
    return config.env == "local" or config.get("TLS_SOURCE") == "local-ca"


def smoke_target(
    runner: Runner, config: Config, stack: Stack, env: Mapping[str, str], paths: DeployPaths
) -> SmokeTarget:
    """`runner` runs on the stack's host (the mail sink is read from inside its container)."""
    local_ca = uses_local_ca(config)
    return SmokeTarget(
        public_url=config.require("PUBLIC_URL"),
        http_port=int(config.get("HTTP_PORT") or 80),
        ca_file=paths.tls_dir / tls.CA_CERT if local_ca else None,
        webhook_secret=config.require("BILLING_WEBHOOK_SECRET"),
        mail_reader=mail_reader(runner, stack, env) if "local-mail" in stack.profiles else None,
        connect_host=config.get("PUBLIC_BIND") if local_ca else None,
    )


@dataclass
class DeployOutcome:
    changes: dict[str, str]
    state: stack_state.StackState  # after the deploy
    smoke: list[CheckResult]  # empty when skipped
    failure: Exception | None = None


def deploy_local(
    s: Session, *, wait_timeout: int = 300, run_smoke_checks: bool = True, rolling: bool = True
) -> DeployOutcome:
    """render -> build -> migrate -> up -> wait -> smoke, on this machine's engine.

    A no-op (same images, same configuration, same nginx files) changes nothing and says so.
    """
    with tempfile.TemporaryDirectory(prefix="deploy-plan-") as scratch:
        outcome = converge_local(s, Path(scratch), wait_timeout, run_smoke_checks, rolling)
    if outcome.changes and not s.runner.dry_run:
        failed = outcome.failure is not None or any(not r.ok for r in outcome.smoke)
        record_deploy_metric(
            deploy_paths(s.config), s.config.env, "failed" if failed else "deployed"
        )
    return outcome


def record_deploy_metric(paths: DeployPaths, env: str, outcome: str) -> None:
    """The suite's textfile for node-exporter: when this environment was last deployed."""
    path = paths.metrics_dir / METRICS_FILE
    previous = path.read_text(encoding="utf-8") if path.is_file() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(deploy_metrics(previous, env, outcome, time.time()), encoding="utf-8")
    tmp.chmod(0o644)
    tmp.replace(path)


def converge_local(
    s: Session, scratch: Path, wait_timeout: int, run_smoke_checks: bool, rolling: bool
) -> DeployOutcome:
    config, events, runner = s.config, s.events, s.runner
    paths = deploy_paths(config)
    version = stack_state.engine_version(runner)
    require_valid_config(config, events)
    batch = batch_size(config)  # refused before anything is built
    events.info(f"engine {version}, project {config.require('COMPOSE_PROJECT_NAME')}")

    with events.step("service images"):
        built = build_services(
            runner,
            config.root,
            SERVICES,
            config.require("IMAGE_REPOSITORY"),
            git_version(runner, config.root),
            service_bases(config),
        )
    images = {b.service: b.deploy_ref for b in built}
    previous_env = (
        services_env_file(config).read_text(encoding="utf-8")
        if services_env_file(config).exists()
        else None
    )
    with events.step("service environments and secret files"):
        services_env, previous_secrets = write_service_envs(runner, config, scratch)
    # `plan_stack` reads what would be; `stack` is what the commands act on (the same files,
    # except under --dry-run, where the new environment was written to the scratch folder).
    compose_file = config.root / COMPOSE_FILE
    stack = replace(stack_for(config), files=(compose_file, services_env_file(config)))
    plan_stack = replace(stack, files=(compose_file, services_env))
    with events.step("TLS and nginx configuration"):
        nginx_action = prepare_edge(runner, config, paths)
    with events.step("monitoring configuration"):
        reread = prepare_monitoring(runner, config, paths)
    env = compose_env(config, images, paths)
    engine = ComposeEngine(runner, stack, env, config.env, batch_size=batch)
    state = engine.on_stack(plan_stack).plan()
    stack_state.require_images(state, config.env)
    plan = state.plan()
    changes = dict(plan.changes)
    if nginx_action != "none" and "nginx" not in changes:
        changes["nginx"] = f"configuration or certificate changed: {nginx_action}"
    running = {c.service for c in state.containers}
    reread = [name for name in reread if name in running and name not in changes]
    for name in reread:
        changes[name] = "monitoring configuration changed: recreate"
    if not changes:
        events.info("nothing to do: every service runs its current image and configuration")
        return DeployOutcome({}, state, [])
    with events.step("credentials of the running data stores"):
        drifts = find_drift(runner, config)
    if drifts and not runner.dry_run:
        # refused before any container changed: the services' files go back as they were
        put_back_env(runner, config, previous_env, previous_secrets)
    refuse_drift(runner, drifts, config.env)
    for service, why in changes.items():
        events.info(f"  {service}: {why}")

    failure: Exception | None = None
    try:
        with silenced_blips(runner, stack, env, config, "local", wait_timeout):
            roll_out(engine, state, plan.changes, nginx_action, wait_timeout, rolling)
        if reread:
            with events.step(f"recreate {', '.join(reread)} (monitoring configuration)"):
                engine.recreate(reread, wait_timeout)
        ensure_monitoring_role(engine, config)
    except BaseException as exc:
        # Whatever stopped the change (a migration, a rollout, Ctrl-C): the previous environment
        # file again, which the containers that were not replaced still run from. The summary
        # table below then shows exactly what runs.
        if not runner.dry_run:
            put_back_env(runner, config, previous_env, previous_secrets)
        if not isinstance(exc, SuiteError):
            raise
        failure = exc
    if not runner.dry_run:
        state = engine.health(state)
    results: list[CheckResult] = []
    if failure is None and run_smoke_checks and not runner.dry_run:
        with events.step("smoke tests through nginx over HTTPS"):
            results = asyncio.run(run_smoke(smoke_target(runner, config, stack, env, paths)))
    return DeployOutcome(changes, state, results, failure)


def stack_ca(config: Config) -> bytes | None:
    """The suite's own CA certificate when it signs the stack's (local-ca), for the probe to
    trust; None when a public CA does (the system's CAs are trusted then)."""
    ca = deploy_paths(config).tls_dir / tls.CA_CERT
    return ca.read_bytes() if uses_local_ca(config) and ca.exists() else None


def prepare_monitoring(runner: Runner, config: Config, paths: DeployPaths) -> list[str]:
    """Prometheus's configuration and rules, Alertmanager's routing and the probe's module
    under the build folder; the services whose files changed (to recreate)."""
    host, name = socket.gethostname(), server_names(config)[0]
    files = monitoring_files(config, host, name, stack_ca(config))
    if runner.dry_run:
        changed = [rel for rel, data in files.items() if not (paths.build_dir / rel).is_file()
                   or (paths.build_dir / rel).read_bytes() != data]  # fmt: skip
        for rel in changed:
            runner.events.command(f"[local] write {paths.build_dir / rel}", run=False)
        return readers_of(changed)
    paths.metrics_dir.mkdir(parents=True, exist_ok=True)
    return readers_of(write_monitoring_files(files, paths.build_dir))


def ensure_monitoring_role(engine: ComposeEngine, config: Config) -> None:
    """The PostgreSQL exporter's read-only role, with the environment's password (idempotent:
    a rotated password is set again)."""
    password = config.get("MONITORING_DB_PASSWORD")
    if not monitoring_enabled(config) or not password:
        return
    stack, user = engine.stack, config.get("MONITORING_DB_USER") or "monitoring"
    argv = monitoring_role_argv(stack.project, stack.files, stack.profiles,
                                config.require("POSTGRES_USER"))  # fmt: skip
    with engine.runner.events.step(f"PostgreSQL role {user} of the exporter (pg_monitor)"):
        engine.runner.run(Command(argv, env=engine.env, timeout=60,
                                  input=monitoring_role_sql(user, password).encode()))  # fmt: skip


def prepare_edge(runner: Runner, config: Config, paths: DeployPaths) -> str:
    """The certificate and nginx's rendered files; what nginx then needs: none, reload or
    restart (a new certificate is read on reload)."""
    tls_state = prepare_tls(runner, config, paths.tls_dir)
    secretfiles.hand_key_to_nginx(runner, str(paths.tls_dir), chown_image(config), local=True)
    nginx_action = apply_action(render(runner, config, paths.nginx_dir), paths.nginx_dir)
    return "reload" if tls_state != "kept" and nginx_action == "none" else nginx_action


def roll_out(
    engine: ComposeEngine,
    state: stack_state.StackState,
    changes: Mapping[str, str],
    nginx_action: str,
    wait_timeout: int,
    rolling: bool,
) -> None:
    """Migrations, the changed services, then nginx as its files and upstreams need."""
    run_migrations(engine, state, wait_timeout)
    rolled = engine.apply(state, changes, wait_timeout, rolling)
    # A recreated upstream container has a new address: nginx must load the names anew. A batch
    # already reloaded nginx onto its services and the files rendered before it; every fewer
    # reload is one fewer keepalive connection closed under a client.
    upstream_moved = any(name in changes for name in HTTP_SERVICES)
    if "nginx" not in changes:
        if nginx_action == "restart":
            engine.restart_proxy(wait_timeout)
        elif not rolled and (nginx_action == "reload" or upstream_moved):
            engine.switch(settle=False)  # the last change: nothing waits on old workers


def current_env(config: Config) -> dict[str, str]:
    """Compose variables for reading the running stack: the last built images of the repository."""
    from deploysuite.images.build import images_file, read_images_file

    built = read_images_file(images_file(config.root, config.require("IMAGE_REPOSITORY")))
    images = {
        service: str(entry.get("content_ref") or entry["ref"]) for service, entry in built.items()
    }
    return compose_env(config, images, deploy_paths(config))


def deploy_paths(config: Config) -> DeployPaths:
    return DeployPaths(build_dir(config))
