"""nginx tasks: render the configuration for an environment, check it, reload it gracefully."""

from __future__ import annotations

import tempfile
from pathlib import Path

from invoke import Collection

from deploysuite.cli import task
from deploysuite.config.session import session
from deploysuite.core.runner import Command
from deploysuite.deploy.local import (
    current_env,
    deploy_paths,
    nginx_settings,
    prepare_tls,
    render,
)
from deploysuite.edge.nginx import nginx_test_argv, upstream_hosts
from deploysuite.engines.compose import ComposeEngine
from deploysuite.engines.stack import stack_for


@task(help={"check": "Also run `nginx -t` on the result in the environment's nginx image."})
def render_(c, env="local", check=False, dry_run=False, json=False, verbose=False):
    """Render nginx's configuration for an environment into build/<env>/nginx."""
    s = session(env, dry_run=dry_run, json=json, verbose=verbose)
    paths = deploy_paths(s.config)
    changed = render(s.runner, s.config, paths.nginx_dir)
    rows = [{"file": str(p.relative_to(s.config.root))} for p in changed]
    title = f"{len(changed)} file(s) changed in {paths.nginx_dir}" if changed else "nothing changed"
    s.events.result(rows, ["file"], title=title)
    if check:
        with tempfile.TemporaryDirectory() as scratch:
            # A throw-away certificate: the check is about the configuration, not the key.
            tls_dir = paths.tls_dir if env == "local" else Path(scratch)
            prepare_tls(s.runner, s.config, tls_dir)
            argv = nginx_test_argv(
                s.config.require("NGINX_IMAGE"),
                paths.nginx_dir,
                tls_dir,
                upstream_hosts(nginx_settings(s.config)),
            )
            result = s.runner.run(Command(argv, mutates=False))
            s.events.info((result.stderr or result.stdout).strip())


@task
def reload(c, env="local", dry_run=False, verbose=False):
    """Reload nginx gracefully: new workers take the new configuration, old ones finish."""
    s = session(env, dry_run=dry_run, verbose=verbose)
    ComposeEngine(s.runner, stack_for(s.config), current_env(s.config), env).switch()


render_.__name__ = "render"
ns = Collection("nginx")
ns.add_task(render_, name="render")
ns.add_task(reload)
