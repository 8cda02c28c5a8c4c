"""Deploy, roll back and scale a swarm environment (DEPLOY_ENGINE=swarm).

    build and push -> render the stack from docker-compose.prod.yml -> lock (on the manager) ->
    pre-hook -> upload the release -> registry login (a per-release DOCKER_CONFIG) -> secrets and
    configs -> data stores -> migrations, once, as a job -> `docker stack deploy --prune` ->
    converge -> smoke -> mark current -> audit, prune, post-hook, notify

A release is what it is for compose (manifest with images by digest and file hashes, lock,
audit, hooks, backup-free migrations run once, smoke, mark current); its realisation is one
stack file. Any failure after the first change deploys the previous release's stack file again:
every service and nginx together, with the old secrets and configs (named by content, so they
are still there). Releases, the lock and the audit log live on the first manager.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deploysuite.config.layers import Config
from deploysuite.config.service_env import (
    environments,
    render_services_env,
)
from deploysuite.config.session import Session
from deploysuite.core import commands
from deploysuite.core.errors import ChecksFailed, ConfigError, SuiteError
from deploysuite.core.runner import Command, Runner
from deploysuite.deploy import release as rel
from deploysuite.deploy.hooks import run_hook
from deploysuite.deploy.local import (
    deploy_paths,
    nginx_settings,
    prepare_tls,
    require_valid_config,
    server_names,
    stack_ca,
)
from deploysuite.deploy.lock import ci_run_url, new_info
from deploysuite.deploy.pins import pin_third_party
from deploysuite.deploy.remote import (
    ReleasePlan,
    RemoteOutcome,
    RolloutOptions,
    finish,
    held_lock,
    rollback_target,
)
from deploysuite.deploy.rollout import DATABASE_SERVICES
from deploysuite.deploy.shipment import (
    DOCKER_DIR,
    build_and_push,
    compose_variables_env,
    registry_login,
)
from deploysuite.deploy.smoke import CheckResult, SmokeTarget, run_smoke
from deploysuite.deploy.target import Target, mark_current, read_releases, upload, write_manifest
from deploysuite.edge import tls
from deploysuite.edge.nginx import render_nginx
from deploysuite.engines import cluster as swarm_cluster
from deploysuite.engines.stack import COMPOSE_FILE, compose_profiles
from deploysuite.engines.swarm import ServiceState, SwarmEngine, digest_of
from deploysuite.engines.swarmstack import (
    DATA_SERVICES,
    RenderedStack,
    SwarmOptions,
    parse_replicas,
    render_stack,
    role_of,
)
from deploysuite.monitoring.stack import PROFILE as MONITORING_PROFILE
from deploysuite.monitoring.stack import monitoring_files, write_monitoring_files

STACK_FILE = "stack.yml"
DATA_FILE = "data-stores.yml"


# --- rendering ----------------------------------------------------------------------------


def secret_values(config: Config) -> dict[str, str]:
    return {s.value: key for key, s in sorted(config.settings.items()) if s.secret and s.value}


def bind_contents(source: str) -> dict[str, bytes]:
    path = Path(source)
    if path.is_file():
        return {"": path.read_bytes()}
    wanted = {tls.CERT, tls.KEY, tls.DHPARAM} if path.name == "tls" else None
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and (wanted is None or p.name in wanted)
    }


def render_release(
    s: Session, images: Mapping[str, str], layout: rel.Layout, replicas: Mapping[str, int]
) -> RenderedStack:
    """The release's stack from compose's own reading of the one compose file."""
    config = s.config
    compose_text = (config.root / COMPOSE_FILE).read_text(encoding="utf-8")
    envs = environments(config)  # values: render_stack turns each secret into a Swarm secret
    local = Runner(s.events, s.runner.masker)  # reading compose's model changes nothing
    tls_dir = deploy_paths(config).tls_dir
    prepare_tls(local, config, tls_dir)
    with tempfile.TemporaryDirectory(prefix="swarm-render-") as scratch:
        root = Path(scratch)
        (root / "services.env.yml").write_text(render_services_env(envs))
        (root / "services.env.yml").chmod(0o600)
        swarm_nginx = nginx_settings(config)
        settings = type(swarm_nginx)(**{**swarm_nginx.__dict__, "resolver": "127.0.0.11",
                                        "dynamic_upstreams": True})  # fmt: skip
        for name, text in render_nginx(settings).items():
            (root / "nginx" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "nginx" / name).write_text(text)
        # every node's tasks are scraped through the one Prometheus: `host` says the cluster
        write_monitoring_files(
            monitoring_files(config, "swarm", server_names(config)[0], stack_ca(config)), root
        )
        env = compose_variables_env(config, compose_text, images, layout)
        env.update(NGINX_RENDERED_DIR=str(root / "nginx"), TLS_DIR=str(tls_dir),
                   PROMETHEUS_CONFIG_DIR=str(root / "prometheus"))  # fmt: skip
        profiles = compose_profiles(config)
        if MONITORING_PROFILE in profiles:
            # node-exporter would have to be a global service with each node's /proc, /sys and
            # root, and stub_status needs nginx's monitoring-network alias: not rendered yet
            raise ConfigError(
                f"the `{MONITORING_PROFILE}` profile does not run on a Swarm yet "
                "(Prometheus and its rules do)",
                f"remove {MONITORING_PROFILE} from COMPOSE_PROFILES of environments/{config.env}",
            )
        argv = commands.compose(
            config.require("COMPOSE_PROJECT_NAME"),
            (config.root / COMPOSE_FILE, root / "services.env.yml"),
            "config", "--format", "json", profiles=profiles,
        )  # fmt: skip
        model = json.loads(local.run(Command(argv, env=env, mutates=False, timeout=60)).stdout)
        binds = {
            v["source"]: bind_contents(v["source"])
            for svc in model["services"].values()
            for v in svc.get("volumes") or ()
            if v.get("type") == "bind"
        }
    return render_stack(model, SwarmOptions(
        project=config.require("COMPOSE_PROJECT_NAME"), secret_values=secret_values(config),
        bind_files=binds, replicas=replicas, secret_file_names=frozenset({tls.KEY}),
    ))  # fmt: skip


def stack_yaml(doc: Mapping[str, Any]) -> bytes:
    return ("# Rendered by inv deploy from docker-compose.prod.yml: holds no secret value.\n"
            + yaml.safe_dump(dict(doc), sort_keys=False, width=1000)).encode()  # fmt: skip


def data_only(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The same stack with only its data stores: deployed first, without --prune."""
    return {**doc, "services": {k: v for k, v in doc["services"].items() if k in DATA_SERVICES}}


def wanted_replicas(config: Config, running: list[ServiceState]) -> dict[str, int]:
    """What runs now (an `inv scale` is kept), then SWARM_REPLICAS, which wins."""
    replicas = {s.name: s.desired for s in running if role_of(s.name) == "app" and s.desired}
    try:
        replicas.update(parse_replicas(config.get("SWARM_REPLICAS") or ""))
    except ValueError as exc:
        raise ConfigError(f"SWARM_REPLICAS: {exc}", "write it as chat=3,auth=2") from None
    return replicas


# --- the manager as the deploy's target -----------------------------------------------------


@dataclass
class SwarmTarget:
    t: Target  # the first manager: releases, lock, audit
    cluster: swarm_cluster.Cluster

    def engine(self, release_id: str) -> SwarmEngine:
        folder = self.t.layout.release(release_id)
        return SwarmEngine(
            self.t.runner, self.t.project, f"{folder}/{DOCKER_DIR}", self.t.config.env
        )


@contextmanager
def connect_swarm(s: Session) -> Iterator[SwarmTarget]:
    with swarm_cluster.open_cluster(s.config, s.events, s.runner) as cluster:
        manager = cluster.manager
        with s.events.step(f"connect to {manager.name} (manager, {manager.target})"):
            runner = cluster.runner(manager.name)
        layout = rel.layout(s.config.require("DEPLOY_ROOT"), s.config.env)
        yield SwarmTarget(Target(s.config, cluster.conns[manager.name], runner, layout), cluster)


# --- deploy ---------------------------------------------------------------------------------


def deploy_swarm(
    s: Session, *, wait_timeout: int = 300, run_smoke_checks: bool = True, lock_wait: float = 0
) -> RemoteOutcome:
    require_valid_config(s.config, s.events)
    # before anything is built (staging refuses a tag it cannot pin); the images are built from
    # the configuration as it is (a base image is a build input, not a pinned deployment)
    as_configured = s
    s, pins = pin_third_party(s)
    config, events = s.config, s.events
    with connect_swarm(s) as st:
        t = st.t
        version, images = build_and_push(as_configured)
        now = dt.datetime.now(dt.UTC)
        release_id = rel.new_release_id(now, version)
        running = SwarmEngine(t.runner, t.project, "").services()
        with events.step("render the stack from docker-compose.prod.yml"):
            rendered = render_release(s, images, t.layout, wanted_replicas(config, running))
        files = {STACK_FILE: stack_yaml(rendered.doc),
                 DATA_FILE: stack_yaml(data_only(rendered.doc))}  # fmt: skip
        hook_env = {"DEPLOY_ENV": config.env, "DEPLOY_RELEASE": release_id,
                    "DEPLOY_HOSTS": ",".join(h.address for h in st.cluster.hosts)}  # fmt: skip
        info = new_info(release_id, now, os.environ)
        plan = ReleasePlan(release_id, version, images, files, info.owner, now, hook_env, pins)
        with held_lock(t, release_id, lock_wait):
            outcome = ship_swarm(
                s, st, plan, rendered, RolloutOptions(wait_timeout, run_smoke_checks)
            )
        finish(s, t, outcome, hook_env)
        outcome.services = service_rows(st, outcome.release) if not s.runner.dry_run else []
        return outcome


def ship_swarm(
    s: Session, st: SwarmTarget, plan: ReleasePlan, rendered: RenderedStack,
    options: RolloutOptions,
) -> RemoteOutcome:  # fmt: skip
    """Under the lock: upload, objects, data stores, migrations, stack deploy, converge, smoke,
    mark current; the previous stack back on any failure after the first change."""
    t, events, dry = st.t, s.events, s.runner.dry_run
    release_id, images, wait_timeout = plan.release_id, plan.images, options.wait_timeout
    releases, current = read_releases(t)
    record = rel.manifest(
        release_id=release_id, env=t.config.env, git_sha=plan.version, images=images,
        files=plan.files, deployed_by=plan.owner, ci_run_url=ci_run_url(os.environ),
        previous=current, started=plan.started, third_party=plan.third_party,
    )  # fmt: skip
    live = next((r for r in releases if r.get("release") == current), None)
    engine = st.engine(release_id)
    if live and live.get("content") == record["content"] and not dry:
        states = engine.services()
        if states and all(x.converged for x in states):
            events.info(f"nothing to do: {current} is live with the same images and files")
            return RemoteOutcome(current or release_id, "unchanged", previous=current)
    run_hook(s, "DEPLOY_PRE_HOOK", s.config.get("DEPLOY_PRE_HOOK"), plan.hook_env)
    folder = t.layout.release(release_id)
    with events.step(f"upload release {release_id}"):
        upload(t.runner, folder, {**plan.files, "manifest.json": rel.encode(record)})
    outcome = RemoteOutcome(release_id, "deployed", previous=current, dry_run=dry)
    with registry_login(st.t, release_id):
        try:
            before = {x.name: x for x in engine.services()}
            with events.step("secrets and configs"):
                created = engine.ensure_objects(rendered)
                total = len(rendered.secrets) + len(rendered.configs)
                events.info(f"  {len(created)} created, {total - len(created)} there already")
            data = [n for n in rendered.services() if n in DATA_SERVICES]
            with events.step(f"data stores: {', '.join(data)}"):
                engine.deploy(f"{folder}/{DATA_FILE}", prune=False)
                engine.wait(data, wait_timeout)
            record["schema_versions"] = migrate(engine, rendered, images, before, release_id)
            with events.step("docker stack deploy"):
                engine.deploy(f"{folder}/{STACK_FILE}", prune=True)
            with events.step(f"converge {len(rendered.services())} services"):
                after = engine.wait(rendered.services(), wait_timeout)
            outcome.changes = changes(before, after, rendered.services())
            if options.run_smoke_checks and not dry:
                with events.step("smoke tests through nginx over HTTPS"):
                    outcome.smoke = smoke(st)
                failed = [r.check for r in outcome.smoke if not r.ok]
                if failed:
                    raise ChecksFailed(f"smoke checks failed: {', '.join(failed)}",
                                       f"inv status --env={t.config.env}")  # fmt: skip
            mark_current(t, release_id)
        except BaseException as exc:  # any failure after the first change: the old stack back
            outcome.failure, outcome.outcome = exc, "failed"
            if isinstance(exc, KeyboardInterrupt):
                events.info("interrupted: rolling back (Ctrl-C again to stop at once)")
            if current and not dry:
                roll_back(st, outcome, current, wait_timeout)
    if dry:
        outcome.outcome = "planned" if outcome.failure is None else "failed"
    else:
        final = rel.finished(record, "deployed" if outcome.failure is None else "failed",
                             dt.datetime.now(dt.UTC))  # fmt: skip
        t.reconnect_if_lost()
        write_manifest(t, final)
    return outcome


def migrate(engine: SwarmEngine, rendered: RenderedStack, images: Mapping[str, str],
            before: Mapping[str, ServiceState], release_id: str) -> dict[str, str]:  # fmt: skip
    """Each database service whose image is new runs its migrations once, as a job, in its new
    image, before any of its tasks takes traffic."""
    done = {}
    for service in DATABASE_SERVICES:
        spec = rendered.doc["services"].get(service)
        running = before.get(service)
        if spec is None or (running and digest_of(running.image) == digest_of(images[service])):
            continue
        with engine.events.step(f"migrate {service}"):
            output = engine.run_job(f"migrate-{service}-{release_id[-6:]}", spec, ("migrate",))
            done[service] = last_json_message(output)
    return done


def last_json_message(output: str) -> str:
    for line in reversed(output.strip().splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        return f"{record.get('message', '')} (schema {record.get('schema_version', '?')})"
    return output.strip().splitlines()[-1][:200] if output.strip() else "no output"


def changes(before: Mapping[str, ServiceState], after: list[ServiceState],
            wanted: Sequence[str]) -> dict[str, str]:  # fmt: skip
    """What the deploy changed: services created, given a new image, removed (--prune)."""
    out = {}
    for state in after:
        old = before.get(state.name)
        if old is None:
            out[state.name] = "created"
        elif digest_of(old.image) != digest_of(state.image):
            out[state.name] = "image changed"
    for name in sorted(set(before) - set(wanted)) if wanted else ():
        out[name] = "removed"
    return out


def roll_back(st: SwarmTarget, outcome: RemoteOutcome, to: str, wait_timeout: int) -> None:
    """The previous release's stack file again: every service and nginx in one deploy."""
    t, events = st.t, st.t.runner.events
    try:
        t.reconnect_after(outcome.failure)
        with events.step(f"roll back to {to} (the whole stack)"):
            engine = st.engine(outcome.release)
            engine.deploy(f"{t.layout.release(to)}/{STACK_FILE}", prune=True)
            engine.wait([x.name for x in engine.services()], wait_timeout)
        outcome.outcome = "rolled back"
    except Exception as again:
        outcome.rollback_error = again.what if isinstance(again, SuiteError) else repr(again)
        events.info(f"  the rollback failed too: {outcome.rollback_error}")


def smoke(st: SwarmTarget) -> list[CheckResult]:
    import asyncio

    config = st.t.config
    edge = next(h for h in st.cluster.hosts if "edge" in h.roles)
    local_ca = deploy_paths(config).tls_dir / tls.CA_CERT
    target = SmokeTarget(
        public_url=config.require("PUBLIC_URL"),
        http_port=int(config.get("HTTP_PORT") or 80),
        ca_file=local_ca if (config.get("TLS_SOURCE") or "") == "local-ca" else None,
        webhook_secret=config.require("BILLING_WEBHOOK_SECRET"),
        connect_host=edge.address,
    )
    return asyncio.run(run_smoke(target))


# --- rollback, scale, status ----------------------------------------------------------------


def rollback_swarm(s: Session, to: str | None, *, wait_timeout: int = 300,
                   run_smoke_checks: bool = True, lock_wait: float = 0,
                   confirm: object = None) -> RemoteOutcome:  # fmt: skip
    """Every service and nginx back to an earlier release's stack (default: the one before the
    live one), in one `docker stack deploy`. No migration runs backwards."""
    config, events = s.config, s.events
    with connect_swarm(s) as st:
        t = st.t
        releases, current = read_releases(t)
        target_id = rollback_target(releases, current, to, config.env)
        if callable(confirm):
            confirm(current, target_id)
        hook_env = {"DEPLOY_ENV": config.env, "DEPLOY_RELEASE": target_id,
                    "DEPLOY_HOSTS": ",".join(h.address for h in st.cluster.hosts)}  # fmt: skip
        outcome = RemoteOutcome(target_id, "rolled back to", previous=current,
                                dry_run=s.runner.dry_run)  # fmt: skip
        with held_lock(t, target_id, lock_wait), registry_login(t, target_id):
            try:
                engine = st.engine(target_id)
                before = {x.name: x for x in engine.services()}
                with events.step(f"roll back {current} -> {target_id} (the whole stack)"):
                    engine.deploy(f"{t.layout.release(target_id)}/{STACK_FILE}", prune=True)
                    after = engine.wait(sorted(before), wait_timeout)
                outcome.changes = changes(before, after, ())
                if run_smoke_checks and not s.runner.dry_run:
                    with events.step("smoke tests through nginx over HTTPS"):
                        outcome.smoke = smoke(st)
                mark_current(t, target_id)
            except BaseException as exc:
                outcome.failure, outcome.outcome = exc, "failed"
                outcome.rollback_error = "stopped part-way"
        finish(s, t, outcome, hook_env, action="rollback")
        outcome.services = service_rows(st, outcome.release) if not s.runner.dry_run else []
        return outcome


def scale_swarm(s: Session, replicas: Mapping[str, int], wait_timeout: int = 300) -> list[dict]:
    """Change the replicas of app services, wait until they run, and audit it; the next deploy
    keeps them (it reads what runs) unless SWARM_REPLICAS says otherwise."""
    from deploysuite.deploy.target import audit

    bad = sorted(n for n in replicas if role_of(n) != "app")
    if bad:
        raise ConfigError(f"only the app services scale, not {', '.join(bad)}",
                          "data stores run once, nginx once per edge node")  # fmt: skip
    with connect_swarm(s) as st:
        engine = st.engine("")
        known = {x.name for x in engine.services()}
        unknown = sorted(set(replicas) - known)
        if unknown:
            raise ConfigError(f"no service {', '.join(unknown)} in the stack",
                              f"one of: {', '.join(sorted(known))}")  # fmt: skip
        with s.events.step("scale " + ", ".join(f"{k}={v}" for k, v in sorted(replicas.items()))):
            engine.scale(replicas)
            engine.wait(sorted(replicas), wait_timeout)
        if not s.runner.dry_run:
            audit(st.t, {
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "action": "scale",
                "env": s.config.env, "replicas": dict(replicas),
                "by": new_info("", dt.datetime.now(dt.UTC), {}).owner,
                "ci_run_url": ci_run_url(os.environ),
            })  # fmt: skip
        return service_rows(st, "") if not s.runner.dry_run else []


def service_rows(st: SwarmTarget, release: str) -> list[dict[str, str]]:
    """service, replicas running/desired, nodes, image, health."""
    runner = st.t.runner
    argv = ("docker", "stack", "ps", st.t.project, "--filter", "desired-state=running",
            "--format", "{{.Name}} {{.Node}} {{.CurrentState}}")  # fmt: skip
    out = runner.run(Command(argv, mutates=False, timeout=60), check=False).stdout
    nodes: dict[str, set[str]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            service = parts[0].split(".")[0][len(st.t.project) + 1 :]
            nodes.setdefault(service, set()).add(parts[1])
    rows = []
    for x in SwarmEngine(runner, st.t.project, "").services():
        rows.append({
            "service": x.name, "replicas": f"{x.running}/{x.desired}",
            "nodes": ",".join(sorted(nodes.get(x.name, ()))),
            "image": x.image.split("@")[0].rsplit("/", 1)[-1][:40],
            "health": "ok" if x.converged else (x.update_state or "starting"),
        })  # fmt: skip
    return rows


def swarm_status(s: Session) -> tuple[list[dict[str, str]], str | None]:
    with connect_swarm(s) as st:
        _, current = read_releases(st.t)
        return service_rows(st, current or ""), current
