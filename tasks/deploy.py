"""Deploy tasks: converge an environment to what the repository describes, check it, read it."""

from __future__ import annotations

import asyncio

from invoke import Collection

from deploysuite.cli import confirm, task
from deploysuite.config.session import Session, session
from deploysuite.core import commands
from deploysuite.core.errors import ChecksFailed, SuiteError
from deploysuite.core.runner import Command
from deploysuite.deploy.bake import BAKE_COLUMNS
from deploysuite.deploy.local import current_env, deploy_local, deploy_paths, smoke_target
from deploysuite.deploy.preflight_items.registry import skipped_by_deploy
from deploysuite.deploy.remote import (
    RemoteOutcome,
    deploy_remote,
    failure_exit,
    releases_rows,
    rollback_remote,
    smoke,
    summary_line,
)
from deploysuite.deploy.smoke import CheckResult, run_smoke
from deploysuite.deploy.swarm import (
    connect_swarm,
    deploy_swarm,
    rollback_swarm,
    scale_swarm,
    swarm_status,
)
from deploysuite.deploy.swarm import smoke as swarm_smoke
from deploysuite.deploy.target import connect, read_audit, read_releases
from deploysuite.engines import state as stack_state
from deploysuite.engines.hosts import deploy_engine
from deploysuite.engines.stack import stack_for
from deploysuite.engines.swarmstack import parse_replicas

COLUMNS = ["service", "image", "state", "health", "url"]
SMOKE_COLUMNS = ["check", "result", "detail", "ms"]
SWARM_COLUMNS = ["service", "replicas", "nodes", "image", "health"]


def local_only(env: str, what: str) -> SuiteError:
    return SuiteError(
        f"{what} works on the local environment only, not on '{env}'",
        f"inv status --env={env} and inv logs --env={env} read a remote environment",
    )


def confirm_production(s: Session, action: str, yes: bool) -> None:
    if s.config.env == "production" and not s.runner.dry_run:
        confirm(f"{action} on production", "production", yes=yes)


@task(
    iterable=["set_"],
    help={
        "wait_timeout": "Seconds to wait for every service to become healthy.",
        "smoke": "Run the smoke tests after a change (default on; --no-smoke skips them).",
        "roll": "Replace running services beside their old container, without dropping a "
        "request (default on; --no-roll recreates them in place, faster, with a gap).",
        "lock_wait": "Remote environments: wait up to this many seconds for another deploy's "
        "lock instead of refusing at once.",
    },
)
def deploy(
    c,
    env="local",
    dry_run=False,
    json=False,
    verbose=False,
    set_=None,
    wait_timeout=300,
    smoke=True,
    roll=True,
    lock_wait=0,
    yes=False,
):
    """Deploy an environment: build, ship, migrate, roll, smoke-test; roll back on failure.

    local: this machine's engine. staging, production: the hosts of environments/<env>/hosts.yml
    over SSH, as a release kept under $DEPLOY_ROOT/<env>/releases (see inv releases)."""
    s = session(env, dry_run=dry_run, json=json, verbose=verbose, overrides=set_ or [])
    if env != "local" and deploy_engine(s.config) == "swarm":
        confirm_production(s, "deploy", yes)
        report_remote(s, deploy_swarm(s, wait_timeout=wait_timeout, run_smoke_checks=smoke,
                                      lock_wait=float(lock_wait)), "deploy")  # fmt: skip
        return
    if env != "local":
        confirm_production(s, "deploy", yes)
        remote = deploy_remote(
            s, wait_timeout=wait_timeout, run_smoke_checks=smoke, rolling=roll,
            lock_wait=float(lock_wait),
        )  # fmt: skip
        report_remote(s, remote, "deploy")
        return
    outcome = deploy_local(s, wait_timeout=wait_timeout, run_smoke_checks=smoke, rolling=roll)
    stack = stack_for(s.config)
    if outcome.smoke and not json:
        s.events.result([r.as_row() for r in outcome.smoke], SMOKE_COLUMNS, title="smoke tests:")
    s.events.result(
        stack_state.status_rows(outcome.state),
        COLUMNS,
        title=f"environment '{env}' ({stack.project}), {public_url(s)}:",
        extra={
            "env": env,
            "changed": outcome.changes,
            "dry_run": dry_run,
            "smoke": [r.as_row() for r in outcome.smoke],
        },
    )
    if dry_run:
        return
    report_unhealthy(s, outcome.state, env)
    if outcome.failure is not None:
        raise outcome.failure
    fail_on_smoke(outcome.smoke, env)


def report_remote(s: Session, outcome: RemoteOutcome, action: str) -> None:
    """Smoke table, then the summary; the failure (if any) ends the run non-zero."""
    if outcome.smoke and not s.events.json_mode:
        s.events.result([r.as_row() for r in outcome.smoke], SMOKE_COLUMNS, title="smoke tests:")
    if outcome.bake and not s.events.json_mode:
        s.events.result(outcome.bake, BAKE_COLUMNS, title="bake window (through nginx):")
    skipped = skipped_by_deploy() if action == "deploy" else []
    if skipped:
        s.events.info(f"not checked by the deploy (inv preflight --env={s.config.env} runs "
                      f"them): {', '.join(skipped)}")  # fmt: skip
    rows: list[dict[str, str]] = [{"service": k, "change": v} for k, v in outcome.changes.items()]
    columns = ["service", "change"]
    if outcome.services:  # swarm: every service, where it runs, and the change
        rows = [{**r, "change": outcome.changes.get(r["service"], "")} for r in outcome.services]
        columns = [*SWARM_COLUMNS, "change"]
    s.events.result(
        rows,
        columns,
        title=summary_line(s.config.env, action, outcome),
        extra={
            "env": s.config.env,
            "action": action,
            "release": outcome.release,
            "outcome": outcome.outcome,
            "previous": outcome.previous,
            "changed": outcome.changes,
            "preflight": outcome.preflight,
            "preflight_skipped": skipped,
            "smoke": [r.as_row() for r in outcome.smoke],
            "bake": outcome.bake,
            "dry_run": s.runner.dry_run,
        },
    )
    failure = failure_exit(outcome)
    if failure is not None:
        raise failure


def public_url(s: Session) -> str:
    return s.config.get("PUBLIC_URL") or "-"


def fail_on_smoke(results: list[CheckResult], env: str) -> None:
    failed = [r.check for r in results if not r.ok]
    if failed:
        raise ChecksFailed(
            f"smoke checks failed: {', '.join(failed)}",
            f"inv status --env={env}; inv logs --env={env} --service NAME",
        )


def report_unhealthy(s: Session, state: stack_state.StackState, env: str) -> None:
    """Name each unhealthy service with its failing check and last log lines, then fail."""
    bad = stack_state.unhealthy(state)
    if not bad:
        return
    for line in stack_state.diagnose(s.runner, state):
        s.events.info(line)
    raise SuiteError(f"not healthy: {', '.join(bad)}", f"inv logs --env={env} --service {bad[0]}")


@task(name="smoke", iterable=["set_"])
def smoke_task(c, env="local", json=False, verbose=False, set_=None):
    """Smoke-test an environment through nginx over HTTPS: health, user journey, edge rules."""
    s = session(env, json=json, verbose=verbose, overrides=set_ or [])
    if env == "local":
        stack = stack_for(s.config)
        target = smoke_target(
            s.runner, s.config, stack, current_env(s.config), deploy_paths(s.config)
        )
        results = asyncio.run(run_smoke(target))
    elif deploy_engine(s.config) == "swarm":
        with connect_swarm(s) as st:  # through nginx on an edge node
            results = swarm_smoke(st)
    else:
        with connect(s) as t:
            _, current = read_releases(t)
            if current is None:
                raise SuiteError(f"'{env}' has no live release yet", f"inv deploy --env={env}")
            results = smoke(t, current)
    failed = sum(not r.ok for r in results)
    s.events.result(
        [r.as_row() for r in results],
        SMOKE_COLUMNS,
        title=f"smoke tests of '{env}' at {public_url(s)}: "
        f"{len(results) - failed} passed, {failed} failed",
        extra={"env": env, "passed": len(results) - failed, "failed": failed},
    )
    fail_on_smoke(results, env)


@task(iterable=["set_"])
def status(c, env="local", json=False, verbose=False, set_=None):
    """Show every service's state and health; exits non-zero naming those not healthy."""
    s = session(env, json=json, verbose=verbose, overrides=set_ or [])
    if env != "local" and deploy_engine(s.config) == "swarm":
        rows, current = swarm_status(s)
        title = f"environment '{env}' (swarm), release {current or 'none'}:"
        s.events.result(rows, SWARM_COLUMNS, title=title, extra={"env": env, "release": current})
        bad = [r["service"] for r in rows if r["health"] != "ok"]
        if bad:
            raise SuiteError(
                f"not running as wanted: {', '.join(bad)} (a data store pinned to a node that "
                "is down stays down until the node is back)",
                f"inv cluster.status --env={env}; docker service ps --no-trunc on a manager",
            )
        return
    if env != "local":
        with connect(s) as t:
            _, current = read_releases(t)
            if current is None:
                raise SuiteError(f"'{env}' has no live release yet", f"inv deploy --env={env}")
            state = stack_state.read(t.runner, t.stack(current), {})
            title = f"environment '{env}' on {t.conn.host.name}, release {current}:"
            s.events.result(stack_state.status_rows(state), COLUMNS, title=title,
                            extra={"env": env, "release": current})  # fmt: skip
            report_unhealthy(Session(s.config, s.events, t.runner), state, env)
        return
    stack_state.engine_version(s.runner)
    stack = stack_for(s.config)
    state = stack_state.read(s.runner, stack, current_env(s.config))
    s.events.result(
        stack_state.status_rows(state), COLUMNS, title=f"environment '{env}' ({stack.project}):"
    )
    report_unhealthy(s, state, env)


@task(
    iterable=["set_"],
    help={
        "service": "Only this service's logs.",
        "follow": "Keep printing new lines until Ctrl-C.",
        "tail": "How many past lines per service.",
    },
)
def logs(c, env="local", service="", follow=False, tail=100, set_=None):
    """Print the services' logs (secrets masked)."""
    s = session(env, overrides=set_ or [])
    services = [service] if service else []
    if env != "local":
        if follow:
            raise SuiteError("--follow works on the local environment only", "drop --follow")
        with connect(s) as t:
            _, current = read_releases(t)
            stack = t.stack(current or "")
            argv = commands.compose_logs(stack.project, stack.files, services, tail=tail)
            t.runner.run(Command(argv, mutates=False), on_line=print)
        return
    stack = stack_for(s.config)
    argv = commands.compose_logs(stack.project, stack.files, services, follow=follow, tail=tail)
    s.runner.run(Command(argv, env=current_env(s.config), mutates=False), on_line=print)


@task(iterable=["set_"], help={"volumes": "Also delete the stack's volumes: its data."})
def down(c, env="local", volumes=False, yes=False, dry_run=False, set_=None):
    """Stop and remove the stack's containers and networks (its data only with --volumes)."""
    s = session(env, dry_run=dry_run, overrides=set_ or [])
    if env != "local":
        raise local_only(env, "inv down")
    stack = stack_for(s.config)
    if volumes and not dry_run:
        confirm(f"delete every volume (all data) of {stack.project}", stack.project, yes=yes)
    args = ["down", "--remove-orphans", *(["--volumes"] if volumes else [])]
    argv = commands.compose(stack.project, stack.files, *args, profiles=stack.profiles)
    s.runner.run(Command(argv, env=current_env(s.config), timeout=300))
    s.events.info(f"{stack.project}: removed" + (" with its volumes" if volumes else ""))


@task(
    iterable=["set_"],
    help={
        "to": "Release to return to: its id, a unique prefix of it, or its git SHA (4+ "
        "characters). Default: the release that was live before the current one.",
        "lock_wait": "Wait up to this many seconds for another deploy's lock.",
        "smoke": "Run the smoke tests after the rollback (default on).",
        "wait_timeout": "Seconds to wait for each replaced service to become healthy.",
    },
)
def rollback(
    c, env="staging", to="", yes=False, dry_run=False, json=False, verbose=False, set_=None,
    wait_timeout=300, lock_wait=0, smoke=True,
):  # fmt: skip
    """Return every service and nginx to an earlier release, without dropping a request."""
    s = session(env, dry_run=dry_run, json=json, verbose=verbose, overrides=set_ or [])
    if env == "local":
        raise SuiteError("the local environment keeps no releases", "inv deploy --env=local")

    def ask(current: str | None, target: str) -> None:
        s.events.info(f"rollback of '{env}': {current} -> {target}")
        confirm_production(s, f"roll back to {target}", yes)

    run = rollback_swarm if deploy_engine(s.config) == "swarm" else rollback_remote
    outcome = run(
        s, to or None, wait_timeout=wait_timeout, run_smoke_checks=smoke,
        lock_wait=float(lock_wait), confirm=ask,
    )  # fmt: skip
    report_remote(s, outcome, "rollback")


@task(iterable=["set_"])
def releases(c, env="staging", json=False, verbose=False, set_=None):
    """List the releases kept on the environment's host; * marks the live one."""
    s = session(env, json=json, verbose=verbose, overrides=set_ or [])
    with connect(s) as t:
        found, current = read_releases(t)
    s.events.result(
        releases_rows(found, current),
        ["release", "git", "outcome", "by", "started", "schema"],
        title=f"releases of '{env}' on {t.conn.host.name} (live: {current or 'none'}):",
        extra={"env": env, "current": current, "releases": found},
    )


@task(iterable=["set_"], help={"limit": "How many of the newest records to show."})
def audit(c, env="staging", limit=20, json=False, verbose=False, set_=None):
    """Show the audit log: every deploy and rollback of the environment, who and when."""
    s = session(env, json=json, verbose=verbose, overrides=set_ or [])
    with connect(s) as t:
        records = read_audit(t)[-int(limit) :]
    columns = ["time", "action", "release", "outcome", "by", "changed", "detail"]
    rows = [
        {k: ", ".join(v) if isinstance(v, list) else str(v or "") for k, v in r.items()}
        for r in records
    ]
    s.events.result(rows, columns, title=f"audit log of '{env}' (newest last):",
                    extra={"env": env, "records": records})  # fmt: skip


@task(
    iterable=["set_"],
    positional=["replicas"],
    help={
        "replicas": "SERVICE=COUNT[,SERVICE=COUNT...], e.g. chat=3 (app services only).",
        "wait_timeout": "Seconds to wait until the new replicas run.",
    },
)
def scale(c, replicas, env="staging", dry_run=False, json=False, set_=None, wait_timeout=300):
    """Change how many replicas of app services run on a swarm environment; audited.

    The next deploy keeps the new counts unless SWARM_REPLICAS in the configuration says
    otherwise."""
    s = session(env, dry_run=dry_run, json=json, overrides=set_ or [])
    if deploy_engine(s.config) != "swarm":
        raise SuiteError(f"inv scale works on swarm environments, not on '{env}'",
                         "set DEPLOY_ENGINE=swarm: see docs/deployment/swarm.md")  # fmt: skip
    try:
        wanted = parse_replicas(replicas)
    except ValueError as exc:
        raise SuiteError(str(exc), "write it as chat=3 or chat=3,auth=2") from None
    rows = scale_swarm(s, wanted, wait_timeout=int(wait_timeout))
    title = f"scaled '{env}': " + ", ".join(f"{k}={v}" for k, v in sorted(wanted.items()))
    s.events.result(rows, SWARM_COLUMNS, title=title + (" (dry run)" if dry_run else ""))


ns = Collection("deploy", deploy, smoke_task, status, logs, down, rollback, releases, audit, scale)
