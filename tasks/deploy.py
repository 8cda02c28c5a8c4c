"""Deploy tasks: converge an environment to what the repository describes."""

from __future__ import annotations

from invoke import Collection

from deploysuite import localstack
from deploysuite.cli import session, task
from deploysuite.compose import stack_for
from deploysuite.errors import CommandFailed, SuiteError

COLUMNS = ["service", "image", "state", "health", "url"]


@task(
    iterable=["set_"],
    help={"wait_timeout": "Seconds to wait for every service to become healthy."},
)
def deploy(c, env="local", dry_run=False, json=False, verbose=False, set_=None, wait_timeout=300):
    """Deploy an environment: bring every service to the described state, then show its health."""
    s = session(env, dry_run=dry_run, json=json, verbose=verbose, overrides=set_ or [])
    if env != "local":
        raise SuiteError(
            f"deploying '{env}' needs the remote deploy over SSH, which this version does not have",
            "deploy the local environment: inv deploy --env=local",
        )
    version = localstack.engine_version(s.runner)
    stack = stack_for(s.config)
    compose_env = s.config.as_env()
    s.events.info(f"engine {version}, project {stack.project}")
    state = localstack.read(s.runner, stack, compose_env)
    localstack.require_images(state, env)
    plan = state.plan()
    failed = None
    if plan.nothing_to_do:
        s.events.info("nothing to do: every service runs its current configuration and image")
    else:
        for service, why in plan.changes.items():
            s.events.info(f"  {service}: {why}")
        try:
            with s.events.step(f"converge {len(plan.changes)} service(s)"):
                localstack.converge(s.runner, stack, compose_env, wait_timeout)
        except CommandFailed as exc:
            failed = exc
        if not dry_run:
            state = localstack.read(s.runner, stack, compose_env)
    s.events.result(
        localstack.status_rows(state),
        COLUMNS,
        title=f"environment '{env}' ({stack.project}):",
        extra={"env": env, "changed": dict(plan.changes), "dry_run": dry_run},
    )
    if not dry_run:
        report_unhealthy(s, stack, compose_env, state, env)
    if failed is not None:
        raise failed


def report_unhealthy(s, stack, compose_env, state, env) -> None:
    """Name each unhealthy service with its failing check and last log lines, then fail."""
    bad = localstack.unhealthy(state)
    if not bad:
        return
    for line in localstack.diagnose(s.runner, stack, compose_env, state):
        s.events.info(line)
    raise SuiteError(f"not healthy: {', '.join(bad)}", f"inv logs --env={env} --service {bad[0]}")


@task(iterable=["set_"])
def status(c, env="local", json=False, verbose=False, set_=None):
    """Show every service's state and health; exits non-zero naming those not healthy."""
    s = session(env, json=json, verbose=verbose, overrides=set_ or [])
    localstack.engine_version(s.runner)
    stack = stack_for(s.config)
    compose_env = s.config.as_env()
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
    from deploysuite import commands
    from deploysuite.runner import Command

    s = session(env, overrides=set_ or [])
    stack = stack_for(s.config)
    argv = commands.compose_logs(
        stack.project, stack.files, [service] if service else [], follow=follow, tail=tail
    )
    s.runner.run(Command(argv, env=s.config.as_env(), mutates=False), on_line=print)


ns = Collection("deploy", deploy, status, logs)
