"""TLS certificate tasks: a self-signed one for local stacks, Let's Encrypt for real hosts."""

from __future__ import annotations

from invoke import Collection

from deploysuite.cli import task
from deploysuite.config.session import session
from deploysuite.core.errors import ConfigError
from deploysuite.core.runner import Command
from deploysuite.deploy.local import current_env, deploy_paths, prepare_tls, server_names
from deploysuite.edge import tls
from deploysuite.engines.stack import stack_for


@task
def local(c, env="local", dry_run=False, verbose=False):
    """Create (or renew within 7 days of expiry) the self-signed certificate of a local stack."""
    s = session(env, dry_run=dry_run, verbose=verbose)
    tls_dir = deploy_paths(s.config).tls_dir
    state = prepare_tls(s.runner, s.config, tls_dir)
    s.events.info(
        f"certificate {state}: {tls_dir / tls.CERT} for {' '.join(server_names(s.config))}"
    )


@task(
    help={
        "staging": "Use Let's Encrypt's staging CA (untrusted certificates, generous rate limits).",
    }
)
def issue(c, env="production", staging=False, dry_run=False, verbose=False, yes=False):
    """Issue a Let's Encrypt certificate with certbot in webroot mode (run on the stack's host)."""
    s = session(env, dry_run=dry_run, verbose=verbose)
    email = s.config.get("ACME_EMAIL")
    if not email:
        raise ConfigError(
            f"ACME_EMAIL is not set for '{env}'", f"set it in environments/{env}/config.env"
        )
    names = server_names(s.config)
    if "localhost" in names:
        raise ConfigError(
            "Let's Encrypt cannot issue a certificate for localhost",
            f"set SERVER_NAMES to the public host names in environments/{env}/config.env",
        )
    stack = stack_for(s.config)
    argv = tls.certbot_issue_argv(stack.project, stack.files, names, email, staging=staging)
    s.runner.run(Command(argv, env=current_env(s.config), timeout=600))
    s.events.info("issued; nginx picks it up on the next inv deploy (or inv nginx.reload)")


ns = Collection("certs", local, issue)
