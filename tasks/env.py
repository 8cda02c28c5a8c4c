"""Configuration tasks: check an environment, generate its secrets, show where values come from."""

from __future__ import annotations

import datetime as dt
import os
import time

from invoke import Collection

from deploysuite.cli import confirm, task
from deploysuite.config.envcheck import check_config, missing_generated_secrets, write_secrets
from deploysuite.config.layers import load_config, parse_cli_overrides
from deploysuite.config.session import session
from deploysuite.core.errors import ChecksFailed, SuiteError
from deploysuite.core.events import Events
from deploysuite.deploy import rotate as rotate_mod
from deploysuite.deploy.local import deploy_local
from deploysuite.deploy.lock import new_info
from deploysuite.deploy.remote import deploy_remote
from deploysuite.deploy.target import audit, connect
from deploysuite.engines.hosts import deploy_engine

SERVICE_HELP = "Also apply this service's override file (services/<name>/env/<env>.env)."


@task(help={"service": SERVICE_HELP}, iterable=["set_"])
def check(c, env="local", service=None, json=False, set_=None):
    """Check an environment's configuration and list every problem at once (values never shown)."""
    config = load_config(env, service=service, strict=False, cli=parse_cli_overrides(set_ or []))
    events = Events(json_mode=json, masker=config.masker())
    problems = check_config(config)
    rows = [p.as_row() for p in problems]
    if problems:
        events.result(
            rows,
            ["severity", "variable", "where", "problem", "fix"],
            title=f"{len(problems)} problem(s) in environment '{env}':",
            extra={"env": env, "ok": False},
        )
        raise ChecksFailed(
            f"environment '{env}' has {len(problems)} configuration problem(s)",
            f"fix the rows above, then rerun inv env.check --env={env}",
        )
    events.result(
        [], ["variable"], title=f"environment '{env}': no problems", extra={"env": env, "ok": True}
    )


@task
def secrets(c, env="local", json=False):
    """Write strong random values for every missing secret into the environment's secrets file."""
    config = load_config(env)
    events = Events(json_mode=json)
    path = config.paths.env_secrets
    written = write_secrets(path, missing_generated_secrets(config))
    rows = [
        {"variable": name, "file": str(path.relative_to(config.root)), "mode": "0600"}
        for name in written
    ]
    title = (
        f"wrote {len(written)} new secret(s); values are only in the file:"
        if written
        else "nothing to do: every generated secret already has a value"
    )
    events.result(rows, ["variable", "file", "mode"], title=title, extra={"written": written})


@task(
    help={"service": SERVICE_HELP, "show_values": "Print non-secret values too."}, iterable=["set_"]
)
def show(c, env="local", service=None, show_values=False, json=False, set_=None):
    """Show every resolved variable, the layer it came from and where (secrets are masked)."""
    config = load_config(env, service=service, cli=parse_cli_overrides(set_ or []))
    events = Events(json_mode=json, masker=config.masker())
    rows = []
    for key, spec in config.schema.items():
        setting = config.settings.get(key)
        value = "" if setting is None else setting.value
        shown = ("******" if value else "") if spec.is_secret else (value if show_values else "")
        rows.append(
            {
                "variable": key,
                "value": shown,
                "layer": setting.layer if setting else "unset",
                "where": setting.location if setting else "-",
            }
        )
    columns = (
        ["variable", "value", "layer", "where"] if show_values else ["variable", "layer", "where"]
    )
    events.result(
        rows, columns, title=f"environment '{env}'" + (f", service {service}" if service else "")
    )


@task(
    iterable=["secret"],
    help={
        "secret": "A secret to rotate (repeatable); default: every one this command rotates "
        "that the environment uses.",
        "dry_run": "Print the plan and the commands (values masked); change nothing.",
        "yes": "Do not ask for confirmation on production (CI).",
        "force": "Rotate AUTH_TOKEN_SECRET again within a token's lifetime (logs out the users "
        "whose tokens the key before it signed).",
        "wait_timeout": "Seconds the deploy waits for each new container to become healthy.",
    },
)
def rotate(c, env="local", secret=None, dry_run=False, json=False, verbose=False, yes=False,
           force=False, wait_timeout=300):  # fmt: skip
    """Rotate secrets: into the store, the secrets file, then the services; put back on failure.

    Each new value goes into the store that checks it first, then into the secrets file, then
    to the services that read it (a rolling deploy, no request dropped); if a step fails, the
    earlier ones are put back. Remote environments record it in their audit log."""
    s = session(env, dry_run=dry_run, json=json, verbose=verbose)
    if env != "local" and deploy_engine(s.config) == "swarm":
        raise SuiteError(
            f"inv env.rotate does not run on a Swarm environment yet ('{env}')",
            "change the value in the store by hand, then in the secrets file, then inv deploy",
        )
    rotations = rotate_mod.plan(s.config, secret or [])
    if env == "production" and not dry_run:
        confirm(f"rotate {', '.join(r.name for r in rotations)} on production", "production",
                yes=yes)  # fmt: skip

    def redeploy(putting_back: bool) -> BaseException | None:
        # putting back: the services that already took the new value must return to the old
        # one whatever stopped the first deploy, so the default wait, not a shortened one
        wait = max(int(wait_timeout), 300) if putting_back else int(wait_timeout)
        again = session(env, json=json, verbose=verbose)
        try:
            if env == "local":
                outcome = deploy_local(again, wait_timeout=wait)
                failed = [r.check for r in outcome.smoke if not r.ok]
                if outcome.failure is None and failed:
                    return ChecksFailed(f"smoke checks failed: {', '.join(failed)}",
                                        f"inv logs --env={env} --service NAME")  # fmt: skip
                return outcome.failure
            return deploy_remote(again, wait_timeout=wait).failure
        except SuiteError as exc:
            return exc

    started = time.monotonic()
    failure: BaseException | None = None
    rows: list[dict[str, str]] = []
    try:
        rows = rotate_mod.rotate(s, rotations, rotate_mod.host_of(s, connect), redeploy,
                                 force=force)  # fmt: skip
    except BaseException as exc:
        failure = exc
        raise
    finally:
        if not dry_run and env != "local":
            record_rotation(s, rotations, failure, time.monotonic() - started)
    s.events.result(rows, rotate_mod.COLUMNS,
                    title=f"{'planned' if dry_run else 'rotated'} in environment '{env}':",
                    extra={"env": env, "dry_run": dry_run})  # fmt: skip


def record_rotation(s, rotations, failure, seconds: float) -> None:
    """The audit log of the environment's host: which secrets (never a value), who, outcome."""
    try:
        with connect(s) as t:
            audit(t, {
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "action": "rotate", "release": "", "changed": [r.name for r in rotations],
                "outcome": "rotated" if failure is None else "failed",
                "by": new_info("rotate", dt.datetime.now(dt.UTC), os.environ).owner,
                "detail": f"{seconds:.1f} s" if failure is None else str(failure)[:300],
            })  # fmt: skip
    except SuiteError as exc:
        s.events.warn(f"the rotation could not be written to the audit log: {exc}")


ns = Collection("env", check, secrets, show, rotate)
