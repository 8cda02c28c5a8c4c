"""Swarm cluster tasks: form the swarm, show its nodes, drain and activate a node."""

from __future__ import annotations

from invoke import Collection

from deploysuite.cli import confirm, task
from deploysuite.config.session import session
from deploysuite.core.errors import ConfigError
from deploysuite.engines import cluster as swarm_cluster
from deploysuite.engines.hosts import deploy_engine

COLUMNS = ["node", "host", "role", "availability", "state", "labels", "engine", "tasks"]


def _swarm_session(env: str, **flags: bool):
    s = session(env, **flags)
    engine = deploy_engine(s.config)
    if engine != "swarm":
        raise ConfigError(
            f"environment '{env}' runs on the {engine} engine, not swarm",
            f"set DEPLOY_ENGINE=swarm in environments/{env}/config.env and list the nodes",
        )
    return s


@task
def init(c, env="staging", dry_run=False, json=False):
    """Form the environment's Swarm over SSH, with the nodes' role labels from hosts.yml.

    `docker swarm init` on the first manager, `join` on every other node, labels edge, app and
    data as listed; labels changed by hand are put back. A second run does nothing."""
    s = _swarm_session(env, dry_run=dry_run, json=json)
    with swarm_cluster.open_cluster(s.config, s.events, s.runner) as cluster:
        done = swarm_cluster.init(cluster)
        rows = [] if dry_run else swarm_cluster.status(cluster)
    title = f"cluster of '{env}': " + (
        f"{len(done)} change(s)" + (" planned (dry run: nothing changed)" if dry_run else "")
        if done
        else "nothing to do"
    )
    s.events.result(rows, COLUMNS, title=title, extra={"changes": done})


@task
def status(c, env="staging", json=False):
    """Show the Swarm's nodes: role, availability, state, labels, engine, running tasks.

    Exits non-zero when a node is down."""
    s = _swarm_session(env, json=json)
    with swarm_cluster.open_cluster(s.config, s.events, s.runner) as cluster:
        rows = swarm_cluster.status(cluster)
    down = [str(r["node"]) for r in rows if r["state"] != "ready"]
    title = f"cluster of '{env}': {len(rows)} node(s)" + (
        f", DOWN: {', '.join(down)}" if down else ", all ready"
    )
    s.events.result(rows, COLUMNS, title=title)
    if down:
        raise swarm_cluster.ClusterError(
            f"node(s) down: {', '.join(down)}: their tasks move to other nodes, but a data store "
            "pinned to a down node stays down until it is back",
            "start the node, then inv cluster.status",
        )


def _availability(env: str, node: str, availability: str, dry_run: bool, yes: bool) -> None:
    s = _swarm_session(env, dry_run=dry_run)
    if availability == "drain" and not dry_run:
        confirm(f"drain {node} (its tasks move to other nodes)", env, yes=yes)
    with swarm_cluster.open_cluster(s.config, s.events, s.runner) as cluster:
        changed = swarm_cluster.set_availability(cluster, node, availability)
    s.events.info(f"{node}: {availability}" + ("" if changed else " already: nothing to do"))


@task(
    help={"node": "The node's name in hosts.yml.", "yes": "Drain without asking (CI)."},
    positional=["node"],
)
def drain(c, node, env="staging", dry_run=False, yes=False):
    """Drain a node: Swarm moves its tasks to the other nodes (maintenance, a reboot)."""
    _availability(env, node, "drain", dry_run, yes)


@task(help={"node": "The node's name in hosts.yml."}, positional=["node"])
def activate(c, node, env="staging", dry_run=False):
    """Make a drained node take tasks again."""
    _availability(env, node, "active", dry_run, True)


ns = Collection("cluster")
for t in (init, status, drain, activate):
    ns.add_task(t)
