"""Deploy lock tasks: who holds an environment's lock, and breaking a dead deploy's lock."""

from __future__ import annotations

import datetime as dt

from invoke import Collection

from deploysuite.cli import confirm, task
from deploysuite.config.session import session
from deploysuite.deploy.lock import heartbeat_age, lock_path, lock_ttl, read_info, release
from deploysuite.engines.hosts import deploy_root, lock_host_connection


@task
def status(c, env="staging", json=False):
    """Show who holds the environment's deploy lock, since when, and whether it is stale.

    Stale: no heartbeat from its holder for longer than DEPLOY_LOCK_TTL_SECONDS; the next deploy
    takes it over."""
    s = session(env, json=json)
    path = lock_path(deploy_root(s.config), env)
    ttl = lock_ttl(s.config)
    with lock_host_connection(s.config) as conn:
        held = read_info(conn, path)
        exists = conn.run(("test", "-d", path))[0] == 0
        silent = heartbeat_age(conn, path) if exists else None
    now = dt.datetime.now(dt.UTC)
    unread = "held, owner unreadable" if exists else "free"
    text = held.describe(now) if held else unread
    if silent is not None:
        text += f"; last heartbeat {silent} s ago"
        if silent > ttl:
            text += f": STALE (TTL {ttl} s), the next deploy takes it over"
    row = {"env": env, "host": conn.host.name, "lock": path, "state": text,
           "heartbeat_age_seconds": silent, "ttl_seconds": ttl,
           "stale": silent is not None and silent > ttl}  # fmt: skip
    s.events.result([row], ["env", "host", "state"], title="deploy lock:")


@task(help={"yes": "Break the lock without asking (only when its deploy is known to be dead)."})
def release_(c, env="staging", yes=False):
    """Break the environment's deploy lock, whoever holds it (a dead deploy's stale lock)."""
    s = session(env)
    path = lock_path(deploy_root(s.config), env)
    with lock_host_connection(s.config) as conn:
        held = read_info(conn, path)
        if held is None and conn.run(("test", "-d", path))[0] != 0:
            s.events.info(f"nothing to do: the deploy lock of '{env}' is free")
            return
        who = held.describe(dt.datetime.now(dt.UTC)) if held else "an unknown holder"
        s.events.info(f"the lock is {who}")
        confirm(f"break the deploy lock of '{env}'", env, yes=yes)
        release(conn, path, token=None)
    s.events.info(f"released the deploy lock of '{env}'")


ns = Collection("lock")
ns.add_task(status)
ns.add_task(release_, name="release")
