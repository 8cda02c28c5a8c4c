"""The incident view: what happened to an environment, newest first, from every source at hand."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from invoke import Collection

from deploysuite.cli import task
from deploysuite.config.session import Session, session
from deploysuite.core.errors import SuiteError
from deploysuite.core.runner import Command
from deploysuite.deploy.live import LiveStack, live_host, live_stack
from deploysuite.deploy.target import read_audit
from deploysuite.monitoring import timeline as tl


def _ask_prometheus(
    live: LiveStack, queries: Sequence[tl.PrometheusQuery]
) -> tuple[dict[tl.Source, str], list[str]]:
    """Each query's answer, and a line for each that got none. When the first one fails,
    Prometheus is taken as down and the rest are not asked: each would wait for its timeout."""
    answers: dict[tl.Source, str] = {}
    notes: list[str] = []
    stack = live.stack
    for query in queries:
        argv = tl.prometheus_exec_argv(stack.project, stack.files, stack.profiles, query.url)
        try:
            result = live.runner.run(Command(argv, env=live.env, mutates=False, timeout=60))
        except SuiteError as exc:
            if not answers:
                return {}, [tl.prometheus_down_note(live.where, queries, exc.what)]
            notes.append(f"Prometheus did not answer {query.query}, so no "
                         f"{tl.SOURCE_EVENTS[query.source]} events: {exc.what}")  # fmt: skip
            continue
        answers[query.source] = result.stdout
    return answers, notes


def _from_prometheus(
    live: LiveStack, start: dt.datetime, end: dt.datetime, local: bool, env: str
) -> tuple[list[tl.TimelineEvent], list[str]]:
    answers, notes = _ask_prometheus(live, tl.prometheus_queries(env, start, end, local))
    events, more = tl.read_answers(answers, start, end)
    return events, notes + more


def _gather(
    s: Session, start: dt.datetime, end: dt.datetime
) -> tuple[list[tl.TimelineEvent], list[str], str]:
    """Events, info lines (a source missing or empty) and where the stack runs. Only a host
    that cannot be reached at all ends the run: any one source may be missing."""
    env = s.config.env
    if env == "local":
        with live_stack(s) as live:
            events, notes = _from_prometheus(live, start, end, True, env)
        return events, [tl.LOCAL_AUDIT_NOTE, *notes], live.where
    with live_host(s) as (t, live_or_none):
        where = t.conn.host.name
        notes = []
        try:
            events = tl.audit_events(read_audit(t), start)
        except SuiteError as exc:
            events, notes = [], [f"the audit log on {where} could not be read: {exc.what}"]
        if live_or_none is None:
            notes.append(f"'{env}' has no live release, so no Prometheus to ask: audit log only")
            return events, notes, where
        more, prometheus_notes = _from_prometheus(live_or_none, start, end, False, env)
    return events + more, notes + prometheus_notes, where


@task(
    help={
        "since": "How far back to look: a whole number and s, m, h or d (6h, 90m, 2d).",
    }
)
def timeline(c, env="local", since="6h", json=False):
    """Show what happened to an environment, newest first: deploys, rollbacks, alerts, backups.

    Merges the host's audit log (deploys, rollbacks, scale changes; remote environments), the
    alerts Prometheus fired and resolved, the backup service's verified and failed runs and its
    WAL lag, and (locally) the suite's deploy metric. A source that cannot be read is named in
    one line; the rest is still shown."""
    window = tl.parse_since(since)
    s = session(env, json=json)
    end = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = end - window
    events, notes, where = _gather(s, start, end)
    for note in notes:
        s.events.info(note)
    rows = tl.merge(events)
    found = f"{len(rows)} events, newest first" if rows else "no events found"
    title = f"timeline of '{env}' ({where}) since {start.isoformat(timespec='seconds')}: {found}"
    s.events.result(rows, tl.COLUMNS, title=title, extra={
        "env": env, "where": where, "since": since, "start": start.isoformat(),
        "end": end.isoformat(), "notes": notes,
    })  # fmt: skip


ns = Collection("timeline", timeline)
