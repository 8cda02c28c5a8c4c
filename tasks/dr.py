"""Disaster-recovery drills: prove the backups restore, and how fast."""

from __future__ import annotations

from invoke import Collection

from deploysuite.backup import postgres
from deploysuite.backup.context import BackupContext, open_bucket
from deploysuite.backup.drill import drill as run_drill
from deploysuite.backup.drill import drill_base
from deploysuite.cli import task
from deploysuite.config.session import session
from deploysuite.core.errors import ChecksFailed
from deploysuite.deploy.preflight_items import records


@task(
    iterable=["set_"],
    help={
        "db": "One database, or all.",
        "rto_hours": "Recovery time objective: a restore must take no longer.",
        "rpo_hours": "Recovery point objective: the newest backup must be no older.",
    },
)
def drill(c, env="local", db="all", rto_hours=2.0, rpo_hours=6.0, json=False, verbose=False,
          set_=None):  # fmt: skip
    """Restore the newest backups into scratch databases, verify them, measure RTO and RPO.

    With --db all, the newest base backup (where a point-in-time restore starts) is unpacked
    into a scratch server as well and checked file by file with pg_verifybackup."""
    s = session(env, json=json, verbose=verbose, overrides=set_ or [])
    store, s3 = open_bucket(s)
    with postgres.postgres_for(s) as pg:
        ctx = BackupContext(s, pg, store, s3)
        results = [run_drill(ctx, name)
                   for name in postgres.chosen_databases(s.config, db)]  # fmt: skip
        base = drill_base(ctx) if db == "all" and not s.runner.dry_run else None
    rows = [r.row(float(rpo_hours), float(rto_hours)) for r in results]
    if base is not None:
        rows.append(base.row())
    s.events.result(
        rows, ["database", "backup", "age", "rpo", "restore", "rto", "rows"],
        title=f"DR drill of '{env}' (targets: RPO {rpo_hours} h, RTO {rto_hours} h):",
        extra={"env": env, "rpo_hours": rpo_hours, "rto_hours": rto_hours, "results": rows},
    )  # fmt: skip
    missed = [f"{r['database']} {k}" for r in rows for k in ("rpo", "rto")
              if r[k] not in ("ok", "-")]  # fmt: skip
    records.record_result(s, "drills", records.new_record(not missed, missed, env=env, db=db,
        rpo_hours=rpo_hours, rto_hours=rto_hours, results=rows))  # fmt: skip
    if missed:
        raise ChecksFailed(f"DR targets missed: {', '.join(missed)}",
                           f"inv backup --env={env}; schedule backups at least every "
                           f"{rpo_hours} h")  # fmt: skip


ns = Collection("dr", drill)
