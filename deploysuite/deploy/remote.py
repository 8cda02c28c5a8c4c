"""Deploy, roll back and inspect a remote environment over SSH.

    preflight -> build and push -> lock -> pre-hook -> upload the release -> registry login and
    pull by digest -> plan -> migrations -> nginx configuration -> rolling replacement -> smoke
    -> mark current -> audit, prune, post-hook, notify

Any failure before "mark current" (a release that never becomes healthy, a failed migration,
failed smoke checks, Ctrl-C, a dropped SSH connection, any other exception) converges every
service and nginx back to the previous release, with the same rolling replacement (over a new
connection when the old one died), and the deploy exits non-zero naming what failed. When the
rollback fails too, the deploy says so and lists what runs.
Every remote command goes through the runner bound to the host, so --dry-run prints them all.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from deploysuite.backup import s3 as s3store
from deploysuite.backup.dump import backup_before_migrations
from deploysuite.config.session import Session
from deploysuite.core import notify
from deploysuite.core.errors import ChecksFailed, SuiteError
from deploysuite.core.runner import Command
from deploysuite.deploy import bake, secretfiles
from deploysuite.deploy import release as rel
from deploysuite.deploy.drift import find_drift, refuse_drift
from deploysuite.deploy.hooks import run_hook, run_post_hook
from deploysuite.deploy.local import (
    deploy_paths,
    ensure_monitoring_role,
    require_valid_config,
    smoke_target,
)
from deploysuite.deploy.lock import (
    Takeover,
    ci_run_url,
    deploy_lock,
    lock_path,
    lock_ttl,
    new_info,
)
from deploysuite.deploy.pins import pin_third_party
from deploysuite.deploy.preflight import preflight
from deploysuite.deploy.rollout import run_migrations, running_report, silenced_blips
from deploysuite.deploy.shipment import (
    build_and_push,
    pull,
    release_files,
    upload_tls,
)
from deploysuite.deploy.smoke import CheckResult, run_smoke
from deploysuite.deploy.target import (
    Target,
    activate_config,
    audit,
    check_nginx,
    connect,
    mark_current,
    nginx_running,
    planning_copy,
    prune,
    read_releases,
    upload,
    write_manifest,
)
from deploysuite.engines import state as stack_state
from deploysuite.engines.compose import batch_size
from deploysuite.monitoring.deploymetrics import (
    METRICS_FILE,
    deploy_metrics,
    read_deploy_metrics_argv,
    write_deploy_metrics_script,
)
from deploysuite.monitoring.stack import READERS

MONITORING_READERS = sorted(set(READERS.values()))

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
    reload_monitoring(t, [name for name in MONITORING_READERS if name not in changes])

    def check() -> None:
        if keeps_nginx:
            check_nginx(t)

    if not changes:
        check()
        if keeps_nginx:
            engine.switch(settle=False)
        return changes
    for service, why in changes.items():
        t.runner.events.info(f"  {service}: {why}")
    rolled = engine.apply(state, changes, wait_timeout, rolling, before_roll=check)
    if not rolled:  # a batch reloads nginx onto its services and the new configuration itself
        engine.switch(settle=False)  # the last change: nothing relies on old workers being gone
    return changes


def reload_monitoring(t: Target, services: Sequence[str]) -> None:
    """SIGHUP: Prometheus, Alertmanager and the blackbox exporter read their configuration
    again (activate_config rewrote it in place). A container that does not run is skipped."""
    for service in services:
        argv = ("docker", "kill", "--signal", "HUP", f"{t.project}-{service}-1")
        t.runner.run(Command(argv), check=False)


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
        t.reconnect_after(outcome.failure)
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
    services: list[dict[str, str]] = field(default_factory=list)  # swarm: what runs where
    bake: list[dict[str, str]] = field(default_factory=list)  # 5xx and p99 before/after


def deploy_remote(
    s: Session, *, wait_timeout: int = 300, run_smoke_checks: bool = True, rolling: bool = True,
    lock_wait: float = 0,
) -> RemoteOutcome:  # fmt: skip
    require_valid_config(s.config, s.events)
    # before anything is built (staging refuses a tag it cannot pin); the images are built from
    # the configuration as it is (a base image is a build input, not a pinned deployment)
    as_configured = s
    s, pins = pin_third_party(s)
    config, events = s.config, s.events
    policy = bake.bake_policy(config)  # a bad DEPLOY_BAKE_* is refused before anything happens
    batch_size(config)
    with connect(s) as t:
        with events.step("preflight"):
            checks = preflight(t)
        with events.step("credentials of the running data stores"):
            refuse_drift(t.runner, find_drift(t.runner, config), config.env)
        version, images = build_and_push(as_configured)
        now = dt.datetime.now(dt.UTC)
        release_id = rel.new_release_id(now, version)
        files = release_files(config, images, t.layout, t.conn.host.name)
        info = new_info(release_id, now, os.environ)
        hook_env = {"DEPLOY_ENV": config.env, "DEPLOY_RELEASE": release_id,
                    "DEPLOY_HOSTS": t.conn.host.address}  # fmt: skip
        plan = ReleasePlan(release_id, version, images, files, info.owner, now, hook_env, pins)
        options = RolloutOptions(wait_timeout, run_smoke_checks, rolling, policy)
        with held_lock(t, release_id, lock_wait):
            outcome = ship(s, t, plan, options)
        outcome.preflight = checks
        finish(s, t, outcome, hook_env)
        return outcome


@contextmanager
def held_lock(t: Target, release_id: str, wait: float) -> Iterator[None]:
    """The environment's deploy lock on its (first) host for the block; under --dry-run only
    the line that says so. A stale lock taken over is a warning and a line of the audit log."""
    path = lock_path(t.config.require("DEPLOY_ROOT"), t.config.env)
    if t.runner.dry_run:
        t.runner.events.command(f"[{t.conn.host.name}] mkdir {path} (the deploy lock)", run=False)
        yield
        return

    def taken_over(takeover: Takeover) -> None:
        now = dt.datetime.now(dt.UTC)
        text = takeover.describe(now)
        t.runner.events.warn(text)
        previous = takeover.previous.release if takeover.previous else None
        audit(t, {
            "time": now.isoformat(timespec="seconds"), "action": "lock takeover",
            "env": t.config.env, "release": release_id, "outcome": "taken over",
            "previous": previous, "by": new_info("", now, {}).owner,
            "ci_run_url": ci_run_url(os.environ), "detail": text,
        })  # fmt: skip

    with deploy_lock(t.conn, path, t.config.env, release_id, wait_seconds=wait,
                     ttl_seconds=lock_ttl(t.config), on_takeover=taken_over):  # fmt: skip
        yield


@dataclass(frozen=True)
class ReleasePlan:
    """One release, worked out before the lock: what it ships and who ships it."""

    release_id: str
    version: str  # git SHA (-dirty marked)
    images: Mapping[str, str]  # service -> image pinned by digest
    files: Mapping[str, bytes]  # relative path -> bytes
    owner: str
    started: dt.datetime
    hook_env: dict[str, str]
    third_party: Mapping[str, str] = field(default_factory=dict)  # image variable -> digest


@dataclass(frozen=True)
class RolloutOptions:
    wait_timeout: int = 300
    run_smoke_checks: bool = True
    rolling: bool = True
    bake: bake.BakePolicy = field(default_factory=bake.BakePolicy)


def ship(s: Session, t: Target, plan: ReleasePlan, options: RolloutOptions) -> RemoteOutcome:
    """Under the lock: upload, pull, migrate, roll, smoke, mark current; roll back on any
    failure after the first change; the release's manifest records how it ended."""
    events, dry = s.events, s.runner.dry_run
    release_id, images, files = plan.release_id, plan.images, plan.files
    wait_timeout, rolling = options.wait_timeout, options.rolling
    releases, current = read_releases(t)
    record = rel.manifest(
        release_id=release_id, env=t.config.env, git_sha=plan.version, images=images,
        files=files, deployed_by=plan.owner, ci_run_url=ci_run_url(os.environ), previous=current,
        started=plan.started, third_party=plan.third_party,
    )  # fmt: skip
    live = next((r for r in releases if r.get("release") == current), None)
    if live and live.get("content") == record["content"] and not dry:
        state = stack_state.read(t.runner, t.stack(current or ""), {})
        if not state.plan().changes:
            events.info(f"nothing to do: {current} is live with the same images and files")
            return RemoteOutcome(current or release_id, "unchanged", previous=current)
    run_hook(s, "DEPLOY_PRE_HOOK", s.config.get("DEPLOY_PRE_HOOK"), plan.hook_env)
    secret_files = {n: d for n, d in files.items() if n.startswith(rel.SECRETS_FOLDER)}
    payload = {n: d for n, d in files.items() if n not in secret_files}
    payload["manifest.json"] = rel.encode(record)
    with planning_copy(t, release_id, payload):
        folder = t.layout.release(release_id)
        with events.step(f"upload release {release_id}"):
            upload(t.runner, folder, payload)
            # before compose: a bind mount's missing source would be made root's by the engine
            t.runner.run(Command(("mkdir", "-p", "-m", "0755", t.layout.metrics)))
        with events.step("TLS"):
            events.info(f"  certificate: {upload_tls(t)}")
        with events.step("registry login and pull by digest"):
            pull(t, release_id, {**images, **plan.third_party})
        with events.step("secret files"):
            secrets_change = secretfiles.install_on_host(
                t.runner, t.layout.root, secret_files, sorted(images.values())[0]
            )
            events.info(f"  {len(secrets_change.changed)} of {len(secret_files)} changed")
            secretfiles.hand_key_to_nginx(t.runner, t.layout.tls, sorted(images.values())[0],
                                          local=False)  # fmt: skip
        outcome = RemoteOutcome(release_id, "deployed", previous=current)
        try:
            policy = options.bake
            baseline = baseline_traffic(t, current, policy)
            record["schema_versions"] = migrate_release(t, release_id, wait_timeout)
            with events.step("roll out"), silenced_blips(
                t.runner, t.stack(current or release_id), {}, t.config, release_id, wait_timeout
            ):  # fmt: skip
                outcome.changes = converge(t, release_id, wait_timeout, rolling)
            if not dry:  # the exporter's read-only role, with this environment's password
                ensure_monitoring_role(t.engine(release_id), t.config)
            if options.run_smoke_checks and not dry:
                with events.step("smoke tests through nginx over HTTPS"):
                    outcome.smoke = smoke(t, release_id)
                failed = [r.check for r in outcome.smoke if not r.ok]
                if failed:
                    raise ChecksFailed(f"smoke checks failed: {', '.join(failed)}",
                                       f"inv logs --env={t.config.env} --service NAME")  # fmt: skip
            outcome.bake = bake_release(t, release_id, policy, baseline)
            mark_current(t, release_id)
        except BaseException as exc:  # any failure after the first change: roll back
            outcome.failure = exc
            outcome.outcome = "failed"
            if isinstance(exc, KeyboardInterrupt):
                events.info("interrupted: rolling back (Ctrl-C again to stop at once)")
            if not dry:  # the credentials the previous release ran with, before it returns
                t.reconnect_if_lost()
                secretfiles.put_back_on_host(t.runner, t.layout.root, secrets_change)
            if current and not dry:
                roll_back(t, outcome, current, wait_timeout, rolling)
        else:
            if not dry:
                secretfiles.forget_previous_on_host(t.runner, t.layout.root)
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


def baseline_traffic(
    t: Target, current: str | None, policy: bake.BakePolicy
) -> dict[str, bake.Traffic]:
    """The live release's traffic of the last minutes, read before anything changes: what the
    bake window judges the new release against."""
    if not policy.seconds or not current or t.runner.dry_run:
        return {}
    until = bake.host_now(t.runner)
    return bake.read_traffic(t.runner, t.stack(current), {}, until - policy.baseline_seconds,
                             until)  # fmt: skip


def bake_release(
    t: Target, release_id: str, policy: bake.BakePolicy, baseline: Mapping[str, bake.Traffic]
) -> list[dict[str, str]]:
    """The bake window (deploy/bake.py): raises, and the deploy rolls back, on a regression."""
    if not policy.seconds:
        return []
    title = (f"bake: {policy.seconds} s of 5xx and p99 through nginx, against "
             f"{sum(x.requests for x in baseline.values())} requests before")  # fmt: skip
    if t.runner.dry_run:
        t.runner.events.command(f"[{t.conn.host.name}] {title}; roll back on a regression",
                                run=False)  # fmt: skip
        return []
    with t.runner.events.step(title):
        return bake.watch(t.runner, t.stack(release_id), {}, policy, baseline, t.config.env)


def smoke(t: Target, release_id: str) -> list[CheckResult]:
    target = smoke_target(t.runner, t.config, t.stack(release_id), {}, deploy_paths(t.config))
    return asyncio.run(run_smoke(target))


def record_deploy_metric(t: Target, outcome: str) -> None:
    """The suite's textfile for node-exporter (deploysuite.monitoring.deploymetrics): when this
    environment was last deployed and last rolled back. A failure is a warning."""
    folder = t.layout.metrics
    read = t.runner.run(Command(read_deploy_metrics_argv(folder), mutates=False), check=False)
    text = deploy_metrics(read.stdout, t.config.env, outcome, time.time())
    wrote = t.runner.run(Command(write_deploy_metrics_script(folder), input=text.encode()),
                         check=False)  # fmt: skip
    if not wrote.ok:
        t.runner.events.info(f"warning: {folder}/{METRICS_FILE} not written: "
                             f"{wrote.stderr.strip()[-200:]}")  # fmt: skip


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
    if outcome.outcome in ("deployed", "failed", "rolled back", "rolled back to"):
        record_deploy_metric(t, outcome.outcome)
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


# --- rollback -----------------------------------------------------------------------------


def rollback_target(
    releases: list[dict[str, object]], current: str | None, to: str | None, env: str
) -> str:
    """The release a rollback returns to: `to` (id prefix or git SHA) or the one before the
    live one; a clear error when there is none."""
    try:
        target = rel.resolve(releases, to) if to else rel.previous_release(releases, current)
    except LookupError as exc:
        raise SuiteError(str(exc), f"inv releases --env={env}") from None
    if target is None:
        raise SuiteError(
            f"no earlier release of '{env}' to roll back to (live: {current})",
            f"inv releases --env={env}",
        )
    return str(target["release"])


def rollback_remote(
    s: Session, to: str | None, *, wait_timeout: int = 300, run_smoke_checks: bool = True,
    lock_wait: float = 0, confirm: object = None,
) -> RemoteOutcome:  # fmt: skip
    """Return every service and nginx to an earlier release (default: the one before the live
    one), with the same rolling replacement. No migration runs backwards."""
    config, events = s.config, s.events
    with connect(s) as t:
        releases, current = read_releases(t)
        target_id = rollback_target(releases, current, to, config.env)
        if callable(confirm):
            confirm(current, target_id)
        hook_env = {"DEPLOY_ENV": config.env, "DEPLOY_RELEASE": target_id,
                    "DEPLOY_HOSTS": t.conn.host.address}  # fmt: skip
        outcome = RemoteOutcome(target_id, "rolled back to", previous=current,
                                dry_run=s.runner.dry_run)  # fmt: skip
        with held_lock(t, target_id, lock_wait):
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
                t.reconnect_after(exc)
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


def summary_line(env: str, action: str, o: RemoteOutcome) -> str:
    """The summary table's title: what happened to the environment, in one line."""
    text = {
        "deployed": f"release {o.release} deployed"
        + (f" (previous: {o.previous})" if o.previous else ""),
        "unchanged": f"release {o.release} is live already: nothing changed",
        "rolled back": f"release {o.release} failed; every service is back on {o.previous}",
        "rolled back to": f"back on release {o.release} (was {o.previous})",
        "planned": f"release {o.release} planned",
    }.get(o.outcome, f"release {o.release} {o.outcome}")
    if o.rollback_error:
        text += f"; left as is, not rolled back ({o.rollback_error})"
    return f"{action} of '{env}': {text}" + (" (dry run: nothing changed)" if o.dry_run else "")
