"""Deploy tasks: converge an environment to what the repository describes, check it, read it."""

from __future__ import annotations

import asyncio

from invoke import Collection

from deploysuite import commands, localstack
from deploysuite.cli import Session, confirm, session, task
from deploysuite.compose import Stack, stack_for
from deploysuite.errors import ChecksFailed, SuiteError
from deploysuite.localdeploy import current_env, deploy_local, deploy_paths, smoke_target
from deploysuite.runner import Command
from deploysuite.smoke import CheckResult, run_smoke

COLUMNS = ["service", "image", "state", "health", "url"]
SMOKE_COLUMNS = ["check", "result", "detail", "ms"]


def remote_not_there_yet(env: str) -> SuiteError:
    return SuiteError(
        f"deploying '{env}' needs the remote deploy over SSH, which this version does not have",
        "deploy the local environment: inv deploy --env=local",
    )


@task(
    iterable=["set_"],
    help={
        "wait_timeout": "Seconds to wait for every service to become healthy.",
        "smoke": "Run the smoke tests after a change (default on; --no-smoke skips them).",
        "roll": "Replace running services beside their old container, without dropping a "
        "request (default on; --no-roll recreates them in place, faster, with a gap).",
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
):
    """Deploy an environment: render, build, migrate, roll, wait for health, smoke-test."""
    s = session(env, dry_run=dry_run, json=json, verbose=verbose, overrides=set_ or [])
    if env != "local":
        raise remote_not_there_yet(env)
    outcome = deploy_local(s, wait_timeout=wait_timeout, run_smoke_checks=smoke, rolling=roll)
    stack = stack_for(s.config)
    if outcome.smoke and not json:
        s.events.result([r.as_row() for r in outcome.smoke], SMOKE_COLUMNS, title="smoke tests:")
    s.events.result(
        localstack.status_rows(outcome.state),
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
    report_unhealthy(s, stack, current_env(s.config), outcome.state, env)
    if outcome.failure is not None:
        raise outcome.failure
    fail_on_smoke(outcome.smoke, env)


def public_url(s: Session) -> str:
    return s.config.get("PUBLIC_URL") or "-"


def fail_on_smoke(results: list[CheckResult], env: str) -> None:
    failed = [r.check for r in results if not r.ok]
    if failed:
        raise ChecksFailed(
            f"smoke checks failed: {', '.join(failed)}",
            f"inv status --env={env}; inv logs --env={env} --service NAME",
        )


def report_unhealthy(s: Session, stack: Stack, compose_env, state, env: str) -> None:
    """Name each unhealthy service with its failing check and last log lines, then fail."""
    bad = localstack.unhealthy(state)
    if not bad:
        return
    for line in localstack.diagnose(s.runner, state):
        s.events.info(line)
    raise SuiteError(f"not healthy: {', '.join(bad)}", f"inv logs --env={env} --service {bad[0]}")


@task(iterable=["set_"])
def smoke(c, env="local", json=False, verbose=False, set_=None):
    """Smoke-test an environment through nginx over HTTPS: health, user journey, edge rules."""
    s = session(env, json=json, verbose=verbose, overrides=set_ or [])
    if env != "local":
        raise remote_not_there_yet(env)
    stack = stack_for(s.config)
    target = smoke_target(s.config, stack, current_env(s.config), deploy_paths(s.config))
    results = asyncio.run(run_smoke(target))
    failed = sum(not r.ok for r in results)
    s.events.result(
        [r.as_row() for r in results],
        SMOKE_COLUMNS,
        title=f"smoke tests of '{env}' at {target.public_url}: "
        f"{len(results) - failed} passed, {failed} failed",
        extra={"env": env, "passed": len(results) - failed, "failed": failed},
    )
    fail_on_smoke(results, env)


@task(iterable=["set_"])
def status(c, env="local", json=False, verbose=False, set_=None):
    """Show every service's state and health; exits non-zero naming those not healthy."""
    s = session(env, json=json, verbose=verbose, overrides=set_ or [])
    localstack.engine_version(s.runner)
    stack = stack_for(s.config)
    compose_env = current_env(s.config)
    state = localstack.read(s.runner, stack, compose_env)
    s.events.result(
        localstack.status_rows(state), COLUMNS, title=f"environment '{env}' ({stack.project}):"
    )
    report_unhealthy(s, stack, compose_env, state, env)


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
    stack = stack_for(s.config)
    argv = commands.compose_logs(
        stack.project, stack.files, [service] if service else [], follow=follow, tail=tail
    )
    s.runner.run(Command(argv, env=current_env(s.config), mutates=False), on_line=print)


@task(iterable=["set_"], help={"volumes": "Also delete the stack's volumes: its data."})
def down(c, env="local", volumes=False, yes=False, dry_run=False, set_=None):
    """Stop and remove the stack's containers and networks (its data only with --volumes)."""
    s = session(env, dry_run=dry_run, overrides=set_ or [])
    if env != "local":
        raise remote_not_there_yet(env)
    stack = stack_for(s.config)
    if volumes and not dry_run:
        confirm(f"delete every volume (all data) of {stack.project}", stack.project, yes=yes)
    args = ["down", "--remove-orphans", *(["--volumes"] if volumes else [])]
    argv = commands.compose(stack.project, stack.files, *args, profiles=stack.profiles)
    s.runner.run(Command(argv, env=current_env(s.config), timeout=300))
    s.events.info(f"{stack.project}: removed" + (" with its volumes" if volumes else ""))


ns = Collection("deploy", deploy, smoke, status, logs, down)
