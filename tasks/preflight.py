"""Preflight: the deployment checklist's automated items run against an environment, and the
checklist itself (DEPLOYMENT-CHECKLIST.md) rendered from the item registry."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from invoke import Collection

from deploysuite import PROJECT_ROOT
from deploysuite.cli import task
from deploysuite.config.session import session
from deploysuite.deploy.preflight_items.checks import run_checklist
from deploysuite.deploy.preflight_items.evaluate import COLUMNS, closing_error
from deploysuite.deploy.preflight_items.registry import ITEMS, render_checklist

CHECKLIST = PROJECT_ROOT / "DEPLOYMENT-CHECKLIST.md"


@task(
    default=True,
    iterable=["only", "set_"],
    help={
        "only": "Run only this item (its id, e.g. tls or backups). Repeatable.",
        "tree": "The git tree the release is built from, for clean-tree and the code's "
        "migrations (default: the suite's root).",
    },
)
def check(c, env="local", only=None, tree="", json=False, verbose=False, set_=None):
    """Run every automated item of the deployment checklist: one table, non-zero on a failure.

    Each item says passed, failed (with its evidence and the fix) or skipped (with why it
    cannot be checked here); the manual items are listed in DEPLOYMENT-CHECKLIST.md."""
    s = session(env, json=json, verbose=verbose, overrides=set_ or [])
    root = Path(tree).resolve() if tree else s.config.root
    rows = run_checklist(s, root, dt.datetime.now(dt.UTC), only or [])
    counts = {k: sum(1 for r in rows if r["result"] == k) for k in ("passed", "failed", "skipped")}
    manual = [{"id": i.id, "group": i.group, "title": i.title, "why": i.why}
              for i in ITEMS if not i.automated]  # fmt: skip
    s.events.result(
        rows, COLUMNS,
        title=f"preflight of '{env}': {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['skipped']} skipped; {len(manual)} manual items in {CHECKLIST.name}",
        extra={"env": env, "passed": not counts["failed"], "counts": counts, "manual": manual},
    )  # fmt: skip
    error = closing_error(env, rows)
    if error is not None:
        raise error


@task(help={"write": f"Write {CHECKLIST.name} instead of printing it."})
def checklist(c, write=False):
    """Print DEPLOYMENT-CHECKLIST.md as the item registry renders it (--write updates it)."""
    text = render_checklist()
    if write:
        CHECKLIST.write_text(text, encoding="utf-8")
        print(f"wrote {CHECKLIST}")
    else:
        print(text, end="")


ns = Collection("preflight")
ns.add_task(check, default=True)
ns.add_task(checklist)
