"""Deploy, roll back and inspect a remote environment over SSH.

    preflight -> build and push -> lock -> pre-hook -> upload the release -> registry login and
    pull by digest -> plan -> migrations -> nginx configuration -> rolling replacement -> smoke
    -> mark current -> audit, prune, post-hook, notify

Any failure before "mark current" (a release that never becomes healthy, a failed migration,
failed smoke checks, Ctrl-C) converges every service and nginx back to the previous release,
with the same rolling replacement, and the deploy exits non-zero naming what failed.
Every remote command goes through the runner bound to the host, so --dry-run prints them all.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from deploysuite.backup import s3 as s3store
from deploysuite.backup.dump import backup_before_migrations
from deploysuite.config.layers import Config, for_service
from deploysuite.config.service_env import (
    SERVICE_VARIABLES,
    render_services_env,
    service_environment,
)
from deploysuite.config.session import Session
from deploysuite.core import notify
from deploysuite.core.errors import ChecksFailed, SuiteError
from deploysuite.core.runner import Command, Runner
from deploysuite.core.ssh import SshConnection
from deploysuite.deploy import release as rel
from deploysuite.deploy.local import (
    deploy_paths,
    nginx_settings,
    prepare_tls,
    require_valid_config,
    smoke_target,
    uses_local_ca,
)
from deploysuite.deploy.lock import ci_run_url, deploy_lock, lock_path, new_info, read_info
from deploysuite.deploy.rollout import run_migrations, running_report
from deploysuite.deploy.smoke import CheckResult, run_smoke
from deploysuite.edge.nginx import render_nginx
from deploysuite.edge.tls import CERT, DHPARAM, KEY
from deploysuite.engines import hosts
from deploysuite.engines import state as localstack
from deploysuite.engines.compose import ComposeEngine
from deploysuite.engines.stack import COMPOSE_FILE, SERVICE_IMAGE_VARS, Stack
from deploysuite.images.build import build_services, git_version, service_bases
from deploysuite.images.registry import push_all, registry_host
from deploysuite.images.services import SERVICES

MIN_DOCKER = (20, 10)
PROMETHEUS_CONFIG = "prometheus/prometheus.yml"


@dataclass
class Target:
    """One environment's host: its connection, the runner bound to it, its folders."""

    config: Config
    conn: SshConnection
    runner: Runner
    layout: rel.Layout
    # --dry-run plans against a scratch copy of the new release (removed afterwards)
    scratch: dict[str, str] = field(default_factory=dict)

    @property
    def project(self) -> str:
        return self.config.require("COMPOSE_PROJECT_NAME")

    def stack(self, release_id: str) -> Stack:
        folder = Path(self.scratch.get(release_id) or self.layout.release(release_id))
        profiles = tuple(p for p in (self.config.get("COMPOSE_PROFILES") or "").split(",") if p)
        # compose reads `.env` from the first file's folder: the release's own variables
        return Stack(self.project, (folder / COMPOSE_FILE, folder / "services.env.yml"), profiles)

    def engine(self, release_id: str) -> ComposeEngine:
        """Compose on the host's engine, acting on the release's files (its own `.env`)."""
        return ComposeEngine(self.runner, self.stack(release_id), {}, self.config.env)

    def reconnect_if_lost(self) -> None:
        """After a dropped connection: a new one, verified the same way, for what must still
        happen on the host (the rollback, the manifest, the lock, the audit)."""
        if not self.conn.alive():
            with self.runner.events.step(f"reconnect to {self.conn.host.name}"):
                self.conn.reconnect()


@contextmanager
def connect(s: Session) -> Iterator[Target]:
    with hosts.connect(s.config, s.events, s.runner) as host:
        yield Target(
            s.config,
            host.conn,
            host.runner,
            rel.layout(s.config.require("DEPLOY_ROOT"), s.config.env),
        )


# --- preflight ----------------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, int]:
    match = re.match(r"\s*v?(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def parse_df_free_mb(text: str) -> int:
    """`df -Pk PATH`: the Available column of the last line, in MiB."""
    lines = [line for line in text.splitlines() if line.strip()]
    return int(lines[-1].split()[3]) // 1024 if len(lines) >= 2 else 0


def free_disk_argv(path: str) -> tuple[str, ...]:
    """df of the nearest folder that exists on the way to `path` (a first deploy has none)."""
    script = 'd=$1; while [ ! -d "$d" ]; do d=$(dirname "$d"); done; df -Pk "$d"'
    return ("sh", "-c", script, "sh", path)


def preflight(t: Target) -> list[dict[str, str]]:
    """Read-only checks of the host; raises ChecksFailed naming every failed one."""
    rows: list[dict[str, str]] = [{"check": "ssh", "result": "ok", "detail": t.conn.host.target}]

    def query(argv: tuple[str, ...]) -> tuple[bool, str]:
        result = t.runner.run(Command(argv, mutates=False, timeout=60), check=False)
        return result.ok, (result.stdout.strip() or result.stderr.strip())

    ok, text = query(("docker", "version", "--format", "{{.Server.Version}}"))
    good = ok and parse_version(text) >= MIN_DOCKER
    rows.append(
        {
            "check": "docker",
            "result": "ok" if good else "FAIL",
            "detail": text if good else f"need engine >= 20.10 reachable by the user: {text}",
        }
    )
    ok, text = query(("docker", "compose", "version", "--short"))
    good = ok and parse_version(text) >= (2, 20)
    rows.append(
        {
            "check": "compose",
            "result": "ok" if good else "FAIL",
            "detail": text if good else f"need Docker Compose v2.20+: {text[:120]}",
        }
    )
    ok, text = query(free_disk_argv(t.layout.root))
    need = int(t.config.get("DEPLOY_MIN_FREE_MB") or 2048)
    free = parse_df_free_mb(text) if ok else 0
    rows.append(
        {
            "check": "disk",
            "result": "ok" if free >= need else "FAIL",
            "detail": f"{free} MiB free under {t.layout.root} (need {need})",
        }
    )
    held = read_info(t.conn, lock_path(t.config.require("DEPLOY_ROOT"), t.config.env))
    rows.append(
        {
            "check": "lock",
            "result": "ok" if held is None else "held",
            "detail": "free" if held is None else held.describe(dt.datetime.now(dt.UTC)),
        }
    )
    failed = [r["check"] for r in rows if r["result"] == "FAIL"]
    if failed:
        for row in rows:
            t.runner.events.info(f"  {row['check']}: {row['result']} ({row['detail']})")
        raise ChecksFailed(
            f"preflight of {t.conn.host.name} failed: {', '.join(failed)}",
            "fix the host (see each check's detail) and deploy again",
        )
    return rows


# --- the release's files ------------------------------------------------------------------


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
    env["TLS_DIR"] = layout.tls
    return env


def release_files(
    config: Config, images: Mapping[str, str], layout: rel.Layout
) -> dict[str, bytes]:
    """Relative path -> bytes of everything the release puts on the host."""
    compose_text = (config.root / COMPOSE_FILE).read_text(encoding="utf-8")
    environments = {
        service: service_environment(for_service(config, service), service)
        for service in SERVICE_VARIABLES
    }
    files = {
        COMPOSE_FILE: compose_text.encode(),
        ".env": rel.dotenv(compose_variables_env(config, compose_text, images, layout)).encode(),
        "services.env.yml": render_services_env(environments).encode(),
        PROMETHEUS_CONFIG: (config.root / PROMETHEUS_CONFIG).read_bytes(),
    }
    for name, text in render_nginx(nginx_settings(config)).items():
        files[f"nginx/{name}"] = text.encode()
    return files


def upload(runner: Runner, folder: str, files: Mapping[str, bytes]) -> None:
    dirs = sorted({folder} | {f"{folder}/{Path(name).parent}" for name in files if "/" in name})
    runner.run(Command(("mkdir", "-p", "-m", "0700", *dirs)))
    for name, data in sorted(files.items()):
        mode = 0o600 if Path(name).name in rel.SECRET_FILES else 0o644
        runner.put(data, f"{folder}/{name}", mode)


@contextmanager
def planning_copy(t: Target, release_id: str, files: Mapping[str, bytes]) -> Iterator[None]:
    """--dry-run: the release's files in a private temporary folder on the host, so that the
    plan reads what the deploy would (compose resolves files there); removed afterwards."""
    if not t.runner.dry_run:
        yield
        return
    real = Runner(t.runner.events, t.runner.masker, dry_run=False, transport=t.conn)
    folder = real.run(Command(("mktemp", "-d"), mutates=False)).stdout.strip()
    try:
        upload(real, folder, files)
        t.scratch[release_id] = folder
        t.runner.aliases[folder] = t.layout.release(release_id)
        yield
    finally:
        t.scratch.pop(release_id, None)
        t.runner.aliases.pop(folder, None)
        real.run(Command(("rm", "-rf", folder)), check=False)


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
        t.runner.events.command(f"[{t.conn.host.name}] upload TLS files to {t.layout.tls}", False)
        return state
    files = {n: (local / n).read_bytes() for n in names}
    sums = t.runner.run(
        Command(("sh", "-c", 'cd "$1" 2>/dev/null && sha256sum -- *', "sh", t.layout.tls),
                mutates=False), check=False,
    ).stdout  # fmt: skip
    remote = {line.split()[-1]: line.split()[0] for line in sums.splitlines() if line.strip()}
    changed = {n: d for n, d in files.items() if remote.get(n) != rel.sha256(d)}
    if changed:
        t.runner.run(Command(("mkdir", "-p", "-m", "0755", t.layout.tls)))
        for name, data in changed.items():
            t.runner.put(data, f"{t.layout.tls}/{name}", 0o600 if name == KEY else 0o644)
    return f"{state}, {'uploaded ' + ', '.join(changed) if changed else 'same on the host'}"


def pull(t: Target, images: Mapping[str, str]) -> None:
    """Registry login on the host (the password on stdin, never in argv), then pull by digest."""
    config = t.config
    host = registry_host(config.require("IMAGE_REPOSITORY"))
    user, password = config.get("REGISTRY_USERNAME"), config.get("REGISTRY_PASSWORD")
    if host and user and password:
        t.runner.run(
            Command(
                ("docker", "login", "--username", user, "--password-stdin", host),
                input=password.encode(),
                timeout=60,
            ),
            fix=f"check REGISTRY_USERNAME / REGISTRY_PASSWORD and that the host reaches {host}",
        )
    for service, ref in sorted(images.items()):
        with t.runner.events.step(f"pull {service}"):
            t.runner.run(
                Command(("docker", "pull", "--quiet", ref), timeout=600),
                fix=f"the host could not pull {ref}: check the registry and its credentials",
            )


def activate_config(t: Target, release_id: str) -> None:
    """Copy the release's nginx and Prometheus configuration into the folders the running
    containers mount. Files are rewritten in place: nginx.conf is a single-file bind mount."""
    script = (
        'set -e; for part in nginx prometheus; do src="$1/$part"; dst="$2/$part"; '
        'mkdir -p "$dst"; for d in "$dst"/*/; do [ -d "$d" ] && find "$d" -mindepth 1 -delete; '
        'done; cp -R "$src"/. "$dst"/; chmod -R u=rwX,go=rX "$dst"; done'
    )
    t.runner.run(Command(("sh", "-c", script, "sh", t.layout.release(release_id), t.layout.live)))


def nginx_running(t: Target) -> bool:
    argv = ("docker", "inspect", "--format", "{{.State.Running}}", f"{t.project}-nginx-1")
    result = t.runner.run(Command(argv, mutates=False), check=False)
    return result.ok and result.stdout.strip() == "true"


def check_nginx(t: Target) -> None:
    argv = ("docker", "exec", f"{t.project}-nginx-1", "nginx", "-t", "-q")
    t.runner.run(Command(argv), fix="the rendered nginx configuration does not load")


# --- releases on the host -----------------------------------------------------------------


def read_releases(t: Target) -> tuple[list[dict[str, object]], str | None]:
    """Every release's manifest and the id `current` points to."""
    script = (
        'for m in "$1"/releases/*/manifest.json; do [ -f "$m" ] && cat "$m"; done; '
        'echo "{\\"current\\": \\"$(readlink "$1/current" | sed "s|.*/||")\\"}"'
    )
    out = t.runner.run(Command(("sh", "-c", script, "sh", t.layout.root), mutates=False)).stdout
    records = rel.parse_lines(out)
    current = next((str(r["current"]) for r in records if set(r) == {"current"}), "") or None
    return [r for r in records if "release" in r], current


def write_manifest(t: Target, record: Mapping[str, object]) -> None:
    t.runner.put(rel.encode(record), f"{t.layout.release(str(record['release']))}/manifest.json",
                 0o644)  # fmt: skip


def mark_current(t: Target, release_id: str) -> None:
    """Atomic: a new symlink renamed over the old one."""
    tmp = f"{t.layout.current}.tmp"
    t.runner.run(Command(("ln", "-sfn", f"releases/{release_id}", tmp)))
    t.runner.run(Command(("mv", "-T", tmp, t.layout.current)))


def audit(t: Target, record: Mapping[str, object]) -> None:
    argv = ("sh", "-c", 'umask 077; cat >> "$1"', "sh", t.layout.audit_log)
    t.runner.run(Command(argv, input=rel.encode(record)), check=False)


def read_audit(t: Target) -> list[dict[str, object]]:
    argv = ("sh", "-c", 'cat "$1" 2>/dev/null || true', "sh", t.layout.audit_log)
    return rel.parse_lines(t.runner.run(Command(argv, mutates=False)).stdout)


def prune(t: Target, releases: list[dict[str, object]], keep_also: list[str | None]) -> list[str]:
    keep = int(t.config.get("DEPLOY_KEEP_RELEASES") or 5)
    gone = rel.to_prune([str(r["release"]) for r in releases], keep, keep_also)
    if gone:
        t.runner.run(Command(("rm", "-rf", *(t.layout.release(r) for r in gone))))
    return gone


# --- converging to a release --------------------------------------------------------------


def converge(t: Target, release_id: str, wait_timeout: int, rolling: bool) -> dict[str, str]:
    """Make the host run `release_id`: its nginx configuration, then every service that
    differs, replaced beside its old container. Returns what changed."""
    engine = t.engine(release_id)
    state = engine.plan()
    changes = dict(state.plan().changes)
    # The running nginx (when it stays) checks the new configuration before anything reloads.
    keeps_nginx = "nginx" not in changes and nginx_running(t)
    activate_config(t, release_id)

    def check() -> None:
        if keeps_nginx:
            check_nginx(t)

    if not changes:
        check()
        if keeps_nginx:
            engine.switch()
        return changes
    for service, why in changes.items():
        t.runner.events.info(f"  {service}: {why}")
    engine.apply(state, changes, wait_timeout, rolling, before_roll=check)
    engine.switch()
    return changes


def migrate_release(t: Target, release_id: str, wait_timeout: int) -> dict[str, str]:
    """Migrations of every database service whose image is new, once, in the new image, with
    the new environment already on the host, before any traffic moves; each database backed up
    first."""
    engine = t.engine(release_id)
    session = Session(t.config, t.runner.events, t.runner)

    def backup_first(due: Sequence[str]) -> None:
        backup_before_migrations(session, t.project, due)

    return run_migrations(engine, engine.plan(), wait_timeout, before=backup_first)


def roll_back(t: Target, outcome: RemoteOutcome, to: str, wait_timeout: int, rolling: bool) -> None:
    """After a failed change: converge back to `to` (over a new connection when the old one
    died). When that fails too, nothing more is tried: the operator is told exactly what runs."""
    events = t.runner.events
    try:
        t.reconnect_if_lost()
        with events.step(f"roll back to {to}"):
            converge(t, to, wait_timeout, rolling)
        outcome.outcome = "rolled back"
    except Exception as again:
        outcome.rollback_error = again.what if isinstance(again, SuiteError) else repr(again)
        events.info(f"  the rollback failed too: {outcome.rollback_error}")
        events.info(f"  left as is; what runs on {t.conn.host.name} now:")
        for line in running_report(t.engine(to)):
            events.info(line)


def copy_manifest_to_s3(t: Target, record: Mapping[str, object]) -> None:
    """The release's manifest beside the backups, when S3 is configured: the record of what
    ran survives the host. A failure is a warning: the release is live either way."""
    if not t.config.get("S3_BUCKET"):
        return
    try:
        store = s3store.settings(t.config)
        key = store.key(t.config.env, "releases", f"{record['release']}.manifest.json")
        s3store.put_json(s3store.client(store), store.bucket, key, record, sse=store.sse)
    except SuiteError as exc:
        t.runner.events.info(f"warning: the manifest was not copied to S3: {exc.what}")


# --- deploy -------------------------------------------------------------------------------


@dataclass
class RemoteOutcome:
    release: str
    outcome: str  # deployed, unchanged, rolled back, failed
    changes: dict[str, str] = field(default_factory=dict)
    smoke: list[CheckResult] = field(default_factory=list)
    preflight: list[dict[str, str]] = field(default_factory=list)
    failure: BaseException | None = None
    previous: str | None = None
    dry_run: bool = False
    rollback_error: str | None = None  # the rollback after a failure failed too: left as is


def build_and_push(s: Session) -> tuple[str, dict[str, str]]:
    """Build the service images here, push them, and return the git version and the images
    pinned by digest (by tag under --dry-run, which pushes nothing)."""
    config = s.config
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
        return version, {b.service: known_digest(s.runner, b.ref) for b in wanted}
    by_ref = {p.ref: p.pinned for p in pushed}
    return version, {b.service: by_ref[b.ref] for b in wanted}


def known_digest(runner: Runner, ref: str) -> str:
    """`repo@sha256:...` when this image was pushed before (what a push would pin again), else
    the tag: --dry-run pushes nothing, and should still plan like the real deploy."""
    argv = ("docker", "image", "inspect", "--format", '{{join .RepoDigests "\\n"}}', ref)
    out = runner.run(Command(argv, mutates=False), check=False).stdout
    repository = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
    return next((d for d in out.split() if d.split("@", 1)[0] == repository), ref)


def run_hook(s: Session, name: str, hook: str | None, env: Mapping[str, str]) -> None:
    """A hook runs on this machine (not on the host), like the deploy's own build."""
    if not hook:
        return
    with s.events.step(f"{name.lower().replace('_', ' ')}: {hook}"):
        s.runner.run(Command(("sh", "-c", hook), env=env, timeout=600),
                     fix=f"the {name} command failed: fix it or unset {name}")  # fmt: skip


def deploy_remote(
    s: Session, *, wait_timeout: int = 300, run_smoke_checks: bool = True, rolling: bool = True,
    lock_wait: float = 0,
) -> RemoteOutcome:  # fmt: skip
    config, events = s.config, s.events
    require_valid_config(config, events)
    with connect(s) as t:
        with events.step("preflight"):
            checks = preflight(t)
        version, images = build_and_push(s)
        now = dt.datetime.now(dt.UTC)
        release_id = rel.new_release_id(now, version)
        files = release_files(config, images, t.layout)
        info = new_info(release_id, now, os.environ)
        hook_env = {"DEPLOY_ENV": config.env, "DEPLOY_RELEASE": release_id,
                    "DEPLOY_HOSTS": t.conn.host.address}  # fmt: skip
        lock = lock_path(config.require("DEPLOY_ROOT"), config.env)
        if s.runner.dry_run:
            events.command(f"[{t.conn.host.name}] mkdir {lock} (the deploy lock)", run=False)
        with _maybe_lock(t, lock, release_id, lock_wait, dry_run=s.runner.dry_run):
            outcome = ship(s, t, release_id, version, images, files, info.owner, now,
                           wait_timeout, run_smoke_checks, rolling, hook_env)  # fmt: skip
        outcome.preflight = checks
        finish(s, t, outcome, hook_env)
        return outcome


@contextmanager
def _maybe_lock(
    t: Target, path: str, release_id: str, wait: float, dry_run: bool
) -> Iterator[None]:
    if dry_run:
        yield
        return
    with deploy_lock(t.conn, path, t.config.env, release_id, wait_seconds=wait):
        yield


def ship(
    s: Session, t: Target, release_id: str, version: str, images: Mapping[str, str],
    files: Mapping[str, bytes], owner: str, started: dt.datetime, wait_timeout: int,
    run_smoke_checks: bool, rolling: bool, hook_env: dict[str, str],
) -> RemoteOutcome:  # fmt: skip
    events, dry = s.events, s.runner.dry_run
    releases, current = read_releases(t)
    record = rel.manifest(
        release_id=release_id, env=t.config.env, git_sha=version, images=images, files=files,
        deployed_by=owner, ci_run_url=ci_run_url(os.environ), previous=current, started=started,
    )  # fmt: skip
    live = next((r for r in releases if r.get("release") == current), None)
    if live and live.get("content") == record["content"] and not dry:
        state = localstack.read(t.runner, t.stack(current or ""), {})
        if not state.plan().changes:
            events.info(f"nothing to do: {current} is live with the same images and files")
            return RemoteOutcome(current or release_id, "unchanged", previous=current)
    run_hook(s, "DEPLOY_PRE_HOOK", s.config.get("DEPLOY_PRE_HOOK"), hook_env)
    payload = {**files, "manifest.json": rel.encode(record)}
    with planning_copy(t, release_id, payload):
        folder = t.layout.release(release_id)
        with events.step(f"upload release {release_id}"):
            upload(t.runner, folder, payload)
        with events.step("TLS"):
            events.info(f"  certificate: {upload_tls(t)}")
        with events.step("registry login and pull by digest"):
            pull(t, images)
        outcome = RemoteOutcome(release_id, "deployed", previous=current)
        try:
            record["schema_versions"] = migrate_release(t, release_id, wait_timeout)
            with events.step("roll out"):
                outcome.changes = converge(t, release_id, wait_timeout, rolling)
            if run_smoke_checks and not dry:
                with events.step("smoke tests through nginx over HTTPS"):
                    outcome.smoke = smoke(t, release_id)
                failed = [r.check for r in outcome.smoke if not r.ok]
                if failed:
                    raise ChecksFailed(f"smoke checks failed: {', '.join(failed)}",
                                       f"inv logs --env={t.config.env} --service NAME")  # fmt: skip
            mark_current(t, release_id)
        except BaseException as exc:  # any failure after the first change: roll back
            outcome.failure = exc
            outcome.outcome = "failed"
            if isinstance(exc, KeyboardInterrupt):
                events.info("interrupted: rolling back (Ctrl-C again to stop at once)")
            if current and not dry:
                roll_back(t, outcome, current, wait_timeout, rolling)
        result = "deployed" if outcome.failure is None else "failed"
        if dry:
            outcome.dry_run = True
            outcome.outcome = "planned" if outcome.failure is None else result
        else:
            final = rel.finished(record, result, dt.datetime.now(dt.UTC))
            t.reconnect_if_lost()
            write_manifest(t, final)
            copy_manifest_to_s3(t, final)
        return outcome


def smoke(t: Target, release_id: str) -> list[CheckResult]:
    target = smoke_target(t.runner, t.config, t.stack(release_id), {}, deploy_paths(t.config))
    return asyncio.run(run_smoke(target))


def finish(
    s: Session, t: Target, outcome: RemoteOutcome, hook_env: dict[str, str], action: str = "deploy"
) -> None:
    """Audit, prune (after a deploy), post-hook and notification: after the lock, whatever the
    outcome of the deploy or rollback."""
    if s.runner.dry_run:
        return
    env = t.config.env
    failure = outcome.failure
    detail = describe(failure) if failure else ""
    t.reconnect_if_lost()
    audit(t, {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "action": action,
        "env": env, "release": outcome.release, "outcome": outcome.outcome,
        "previous": outcome.previous, "by": new_info("", dt.datetime.now(dt.UTC), {}).owner,
        "ci_run_url": ci_run_url(os.environ), "changed": sorted(outcome.changes),
        "detail": s.runner.masker(detail),
    })  # fmt: skip
    if action == "deploy" and outcome.outcome == "deployed":
        releases, current = read_releases(t)
        previous = rel.previous_release(releases, current)
        gone = prune(t, releases, [current, str(previous["release"]) if previous else None])
        if gone:
            s.events.info(f"pruned {len(gone)} old release(s): {', '.join(gone)}")
    run_post_hook(s, {**hook_env, "DEPLOY_OUTCOME": outcome.outcome})
    notify.send(s.config, s.events, s.runner.masker, notify.deploy_text(
        env, outcome.release, outcome.outcome, outcome.previous, detail, sorted(outcome.changes),
    ))  # fmt: skip


def run_post_hook(s: Session, env: Mapping[str, str]) -> None:
    try:
        run_hook(s, "DEPLOY_POST_HOOK", s.config.get("DEPLOY_POST_HOOK"), env)
    except SuiteError as exc:
        s.events.info(f"warning: {exc.what}")


# --- rollback -----------------------------------------------------------------------------


def rollback_remote(
    s: Session, to: str | None, *, wait_timeout: int = 300, run_smoke_checks: bool = True,
    lock_wait: float = 0, confirm: object = None,
) -> RemoteOutcome:  # fmt: skip
    """Return every service and nginx to an earlier release (default: the one before the live
    one), with the same rolling replacement. No migration runs backwards."""
    config, events = s.config, s.events
    with connect(s) as t:
        releases, current = read_releases(t)
        try:
            target = rel.resolve(releases, to) if to else rel.previous_release(releases, current)
        except LookupError as exc:
            raise SuiteError(str(exc), f"inv releases --env={config.env}") from None
        if target is None:
            raise SuiteError(
                f"no earlier release of '{config.env}' to roll back to (live: {current})",
                f"inv releases --env={config.env}",
            )
        target_id = str(target["release"])
        if callable(confirm):
            confirm(current, target_id)
        hook_env = {"DEPLOY_ENV": config.env, "DEPLOY_RELEASE": target_id,
                    "DEPLOY_HOSTS": t.conn.host.address}  # fmt: skip
        outcome = RemoteOutcome(target_id, "rolled back to", previous=current,
                                dry_run=s.runner.dry_run)  # fmt: skip
        lock = lock_path(config.require("DEPLOY_ROOT"), config.env)
        with _maybe_lock(t, lock, target_id, lock_wait, dry_run=s.runner.dry_run):
            try:
                with events.step(f"roll back {current} -> {target_id}"):
                    outcome.changes = converge(t, target_id, wait_timeout, rolling=True)
                if run_smoke_checks and not s.runner.dry_run:
                    with events.step("smoke tests through nginx over HTTPS"):
                        outcome.smoke = smoke(t, target_id)
                mark_current(t, target_id)
            except BaseException as exc:  # any failure: say what runs now
                outcome.failure, outcome.outcome = exc, "failed"
                outcome.rollback_error = "stopped part-way"
                events.info(f"  left as is; what runs on {t.conn.host.name} now:")
                for line in running_report(t.engine(target_id)):
                    events.info(line)
        finish(s, t, outcome, hook_env, action="rollback")
        return outcome


def releases_rows(releases: list[dict[str, object]], current: str | None) -> list[dict[str, str]]:
    rows = []
    for r in sorted(releases, key=lambda r: str(r.get("release")), reverse=True):
        schema = r.get("schema_versions")
        schema = schema if isinstance(schema, dict) else {}
        rows.append({
            "release": ("* " if r.get("release") == current else "  ") + str(r.get("release")),
            "git": str(r.get("git_sha", ""))[:12], "outcome": str(r.get("outcome", "")),
            "by": str(r.get("deployed_by", "")), "started": str(r.get("started", "")),
            "schema": ", ".join(f"{k} {v}" for k, v in schema.items()),
        })  # fmt: skip
    return rows


def describe(failure: BaseException) -> str:
    if isinstance(failure, SuiteError):
        return failure.what
    if isinstance(failure, KeyboardInterrupt):
        return "interrupted"
    return f"{type(failure).__name__}: {failure}"


def failure_exit(outcome: RemoteOutcome) -> BaseException | None:
    """The error the task raises after its summary: the failure itself (rollout failures keep
    their exit code 9), a rollback that happened is said in the message."""
    failure = outcome.failure
    if failure is None or isinstance(failure, KeyboardInterrupt):
        return failure
    if isinstance(failure, SuiteError) and outcome.outcome == "rolled back":
        failure.what = f"{failure.what}; rolled back to {outcome.previous}"
    elif isinstance(failure, SuiteError) and outcome.rollback_error:
        failure.what = (f"{failure.what}; the rollback failed too ({outcome.rollback_error}): "
                        "left as is, what runs is listed above")  # fmt: skip
    return failure
