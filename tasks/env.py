"""Configuration tasks: check an environment, generate its secrets, show where values come from."""

from __future__ import annotations

from invoke import Collection

from deploysuite.cli import task
from deploysuite.config.envcheck import check_config, missing_generated_secrets, write_secrets
from deploysuite.config.layers import load_config, parse_cli_overrides
from deploysuite.core.errors import ChecksFailed
from deploysuite.core.events import Events

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


ns = Collection("env", check, secrets, show)
