"""`inv timeline`: what happened to an environment, newest first, from the sources the suite
already has: the host's audit log (deploys, rollbacks, scale changes), Prometheus's own `ALERTS`
series (alerts fired and resolved), the backup service's metrics (verified and failed runs, WAL
waiting to be shipped) and the suite's deploy textfile (the local environment's deploys).

Everything here is pure: the queries and the argv that asks them inside the stack's Prometheus
container, and parsers over saved answers. deploy/live.py finds the stack; the task runs.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlencode

from deploysuite.core import commands
from deploysuite.core.commands import Argv
from deploysuite.monitoring.alerts import AlertsError
from deploysuite.monitoring.deploymetrics import ROLLBACK_OUTCOMES

SERVICE = "prometheus"
URL = "http://127.0.0.1:9090"
COLUMNS = ["time", "kind", "what", "detail"]
# The rules are evaluated every 15 s: a finer step shows nothing more. Prometheus refuses a
# range query of more than 11,000 points per series; a long window takes a coarser step.
MIN_STEP_SECONDS = 15
MAX_POINTS = 10_000
_SINCE = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

Kind = Literal[
    "deploy",
    "rollback",
    "scale",
    "audit",
    "alert fired",
    "alert resolved",
    "backup verified",
    "backup failed",
    "wal lag",
]
AUDIT_KINDS: Mapping[str, Kind] = {"deploy": "deploy", "rollback": "rollback", "scale": "scale"}

ALERTS_QUERY = 'ALERTS{alertstate="firing"}'
VERIFIED_QUERY = "backup_newest_verified_timestamp_seconds"
FAILED_QUERY = "backup_last_error_timestamp_seconds"


class TimelineError(AlertsError):
    """A --since the timeline cannot use, or a Prometheus answer it cannot read."""


@dataclass(frozen=True)
class TimelineEvent:
    time: dt.datetime  # UTC
    kind: Kind
    what: str
    detail: str = ""

    def as_row(self) -> dict[str, str]:
        return {"time": self.time.isoformat(timespec="seconds"), "kind": self.kind,
                "what": self.what, "detail": self.detail}  # fmt: skip


@dataclass(frozen=True)
class Series:
    """One series of a Prometheus answer: its labels and its (unix time, value) samples."""

    labels: Mapping[str, str]
    samples: tuple[tuple[float, float], ...]


Source = Literal["alerts", "verified", "failed", "wal lag", "deploys"]
# what a person misses when a source is not read
SOURCE_EVENTS: Mapping[Source, str] = {
    "alerts": "alert", "verified": "backup", "failed": "backup", "wal lag": "WAL lag",
    "deploys": "deploy",
}  # fmt: skip


@dataclass(frozen=True)
class PrometheusQuery:
    source: Source
    query: str
    url: str


# --- the window -------------------------------------------------------------------------------


def parse_since(text: str) -> dt.timedelta:
    """The window's length from "6h", "90m", "2d" or "300s"."""
    value = text.strip()
    if not value:
        raise TimelineError("--since needs a duration", "e.g. --since 6h, 90m or 2d")
    match = _SINCE.match(value)
    if not match:
        raise TimelineError(
            f"--since {text!r} is not a duration",
            "a whole number and s, m, h or d: --since 6h, 90m or 2d",
        )
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds == 0:
        raise TimelineError("--since 0 is an empty window", "e.g. --since 6h")
    return dt.timedelta(seconds=seconds)


def range_step(window: dt.timedelta) -> int:
    """Seconds between the points of a range query over `window`."""
    return max(MIN_STEP_SECONDS, math.ceil(window.total_seconds() / MAX_POINTS))


def duration_text(seconds: float) -> str:
    whole = max(0, round(seconds))
    if whole < 120:
        return f"{whole} s"
    if whole < 7200:
        return f"{whole // 60} min"
    if whole < 2 * 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


# --- commands as data -------------------------------------------------------------------------


def _unix(when: dt.datetime) -> str:
    stamp = when.timestamp()
    return str(int(stamp)) if stamp.is_integer() else f"{stamp:.3f}"


def query_range_url(query: str, start: dt.datetime, end: dt.datetime, step: int) -> str:
    params = {"query": query, "start": _unix(start), "end": _unix(end), "step": str(step)}
    return f"{URL}/api/v1/query_range?{urlencode(params)}"


def query_url(query: str, at: dt.datetime) -> str:
    return f"{URL}/api/v1/query?{urlencode({'query': query, 'time': _unix(at)})}"


def prometheus_exec_argv(project: str, files: Sequence[Path], profiles: Sequence[str],
                         url: str) -> Argv:  # fmt: skip
    """Prometheus's HTTP API read from inside its container: no port published beyond its
    127.0.0.1, the same command on this machine and on a host over SSH."""
    return commands.compose(project, files, "exec", "-T", SERVICE, "wget", "-q", "-O", "-", url,
                            profiles=profiles)  # fmt: skip


def wal_lag_query(window: dt.timedelta) -> str:
    return f"max_over_time(backup_wal_spool_oldest_seconds[{int(window.total_seconds())}s])"


def deploy_metric_query(env: str) -> str:
    return f'deploysuite_last_deploy_timestamp_seconds{{env="{env}"}}'


def prometheus_queries(env: str, start: dt.datetime, end: dt.datetime,
                       local: bool) -> list[PrometheusQuery]:  # fmt: skip
    """What the timeline asks Prometheus, in order; the deploy textfile only for the local
    environment (a remote one's audit log says more: release, who, CI run)."""
    step = range_step(end - start)
    wal_lag = wal_lag_query(end - start)

    def ranged(source: Source, query: str) -> PrometheusQuery:
        return PrometheusQuery(source, query, query_range_url(query, start, end, step))

    found = [
        ranged("alerts", ALERTS_QUERY),
        ranged("verified", VERIFIED_QUERY),
        ranged("failed", FAILED_QUERY),
        PrometheusQuery("wal lag", wal_lag, query_url(wal_lag, end)),
    ]
    if local:
        # a range, not the last value: every local deploy of the window, not one per outcome
        found.append(ranged("deploys", deploy_metric_query(env)))
    return found


# --- parsers ----------------------------------------------------------------------------------


def parse_series(text: str, query: str) -> list[Series]:
    """A Prometheus API answer (a matrix or a vector) -> its series; NaN and infinite samples
    are dropped. An answer that is no JSON or not a success names the query."""
    try:
        doc = json.loads(text)
    except ValueError:
        first = (text.strip().splitlines() or ["an empty answer"])[0][:120]
        raise TimelineError(f"Prometheus's answer to {query} is not JSON: {first}") from None
    if not isinstance(doc, dict) or doc.get("status") != "success":
        why = doc.get("error") if isinstance(doc, dict) else None
        kind = doc.get("errorType") if isinstance(doc, dict) else None
        reason = f"{kind}: {why}" if kind and why else str(why or "no status 'success'")
        raise TimelineError(f"Prometheus refused {query}: {reason}")
    data = doc.get("data") or {}
    out = []
    for item in data.get("result") or []:
        raw = item.get("values") if "values" in item else [item.get("value")]
        samples = []
        for pair in raw or []:
            try:
                stamp, value = float(pair[0]), float(pair[1])
            except (TypeError, ValueError, IndexError):
                continue
            if math.isfinite(value):
                samples.append((stamp, value))
        labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        out.append(Series(labels, tuple(sorted(samples))))
    return out


def _utc(stamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(stamp, dt.UTC)


def _parse_time(value: object) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def _text(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return " ".join(str(value or "").split())


def audit_events(
    records: Iterable[Mapping[str, object]], since: dt.datetime
) -> list[TimelineEvent]:
    """The host's audit records (deploy/target.py's read_audit) from `since` on. A record
    without a readable time is skipped: its place in the timeline would be a guess."""
    out = []
    for record in records:
        when = _parse_time(record.get("time"))
        if when is None or when < since:
            continue
        action = str(record.get("action") or "")
        kind = AUDIT_KINDS.get(action, "audit")
        release, outcome = _text(record.get("release")), _text(record.get("outcome"))
        if kind == "scale":
            replicas = record.get("replicas")
            counts = replicas if isinstance(replicas, Mapping) else {}
            what = ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "replicas"
        elif kind == "rollback":
            what = f"to {release}" + ("" if outcome == "rolled back to" else f" ({outcome})")
        elif kind == "deploy":
            what = f"{release} {outcome}".strip()
        else:
            what = " ".join(p for p in (action or "?", release, outcome) if p)
        previous = _text(record.get("previous"))
        parts = [
            f"from {previous}" if previous and previous != release else "",
            f"changed {_text(record.get('changed'))}" if record.get("changed") else "",
            f"by {_text(record.get('by'))}" if record.get("by") else "",
            _text(record.get("ci_run_url")),
            _text(record.get("detail")),
        ]
        out.append(TimelineEvent(when, kind, what, "; ".join(p for p in parts if p)))
    return out


def _alert_detail(labels: Mapping[str, str]) -> str:
    where = (f"service={labels['service']}" if labels.get("service")
             else f"instance={labels['instance']}" if labels.get("instance") else "")  # fmt: skip
    return ", ".join(p for p in (f"severity={labels.get('severity', '-')}", where) if p)


def alert_events(
    matrix_json_text: str,
    end: dt.datetime,
    step_seconds: int,
    start: dt.datetime | None = None,
) -> list[TimelineEvent]:
    """`ALERTS{alertstate="firing"}` over the window -> "alert fired" at the first sample of
    each run of samples and "alert resolved" one step after its last, unless the run reaches
    the window's end (still firing)."""
    end_at = end.timestamp()
    out = []
    for series in parse_series(matrix_json_text, ALERTS_QUERY):
        name = series.labels.get("alertname", "?")
        base = _alert_detail(series.labels)
        runs: list[list[float]] = []
        for stamp, _ in series.samples:
            # half a step of slack: the answer's times are floats in milliseconds
            if runs and stamp - runs[-1][-1] <= step_seconds * 1.5:
                runs[-1].append(stamp)
            else:
                runs.append([stamp])
        for run in runs:
            first, last = run[0], run[-1]
            resolved = last + step_seconds
            notes = []
            began_before = start is not None and first - step_seconds < start.timestamp()
            if began_before:
                notes.append("firing since before the window")
            if resolved > end_at:
                notes.append("still firing")
            out.append(TimelineEvent(_utc(first), "alert fired", name, "; ".join([base, *notes])))
            if resolved <= end_at:
                at_least = "at least " if began_before else ""
                lasted = f"{base}; fired for {at_least}{duration_text(resolved - first)}"
                out.append(TimelineEvent(_utc(resolved), "alert resolved", name, lasted))
    return out


def _distinct_values(series: Iterable[Series]) -> list[float]:
    return sorted({value for s in series for _, value in s.samples})


def backup_events(
    verified_json_text: str, failed_json_text: str, since: dt.datetime
) -> list[TimelineEvent]:
    """The backup service's timestamps over the window: each distinct value of
    `backup_newest_verified_timestamp_seconds` is a verified backup at that time, each distinct
    value of `backup_last_error_timestamp_seconds` a failed run; those before `since` are the
    window's starting state, not events in it."""
    out = []
    for value in _distinct_values(parse_series(verified_json_text, VERIFIED_QUERY)):
        if value >= since.timestamp():
            note = "each database's newest verified dump is this new"
            out.append(
                TimelineEvent(_utc(value), "backup verified", "dumps of every database", note)
            )
    for value in _distinct_values(parse_series(failed_json_text, FAILED_QUERY)):
        if value >= since.timestamp():
            out.append(TimelineEvent(_utc(value), "backup failed",
                                     "dumps, base backup or WAL shipping",
                                     "which one and why: the backup service's log"))  # fmt: skip
    return out


def backup_note(verified_json_text: str, failed_json_text: str, since: dt.datetime) -> str | None:
    """One info line when the window holds no verified backup: no backup service at all, or
    when the newest verified one before the window finished."""
    verified = parse_series(verified_json_text, VERIFIED_QUERY)
    failed = parse_series(failed_json_text, FAILED_QUERY)
    if not verified and not failed:
        return ("no backup metrics in the window: the stack runs no backup service "
                "(compose profile backup), so no backup events")  # fmt: skip
    values = _distinct_values(verified)
    if not values:
        return "the backup service verified no backup in the window, only failed runs"
    if values[-1] < since.timestamp():
        newest = _utc(values[-1]).isoformat(timespec="seconds")
        return f"no backup verified in the window; the newest verified one finished at {newest}"
    return None


def wal_lag_events(
    vector_json_text: str, at: dt.datetime, window: dt.timedelta
) -> list[TimelineEvent]:
    """`max_over_time(backup_wal_spool_oldest_seconds[window])` at the window's end -> one
    summary line when WAL waited at all."""
    series = parse_series(vector_json_text, wal_lag_query(window))
    longest = max((value for s in series for _, value in s.samples), default=0.0)
    if longest <= 0:
        return []
    span = duration_text(window.total_seconds())
    return [TimelineEvent(at, "wal lag", f"WAL waited up to {duration_text(longest)}",
                          f"the longest wait in the spool over the last {span}; "
                          "WalShippingBehind fires above WAL_MAX_LAG_SECONDS")]  # fmt: skip


def deploy_metric_events(
    vector_json_text: str, since: dt.datetime | None = None
) -> list[TimelineEvent]:
    """`deploysuite_last_deploy_timestamp_seconds{env,outcome}` (a vector, or a range whose
    distinct values are each one deploy) -> the local environment's deploys, which keep no
    audit log. The value is the time the deploy ended."""
    seen: set[tuple[float, str, str]] = set()
    for series in parse_series(vector_json_text, "deploysuite_last_deploy_timestamp_seconds"):
        outcome = series.labels.get("outcome", "?")
        env = series.labels.get("env", "?")
        for _, value in series.samples:
            if since is None or value >= since.timestamp():
                seen.add((value, env, outcome))
    return [
        TimelineEvent(_utc(value), "rollback" if outcome in ROLLBACK_OUTCOMES else "deploy",
                      outcome, f"env={env}, from the suite's textfile metric (no release id)")
        for value, env, outcome in sorted(seen)
    ]  # fmt: skip


# --- the view ---------------------------------------------------------------------------------


def merge(events: Iterable[TimelineEvent]) -> list[dict[str, str]]:
    """Rows newest first; events at the same second in a fixed order (kind, then what)."""
    ordered = sorted(events, key=lambda e: (e.kind, e.what, e.detail))
    ordered.sort(key=lambda e: e.time, reverse=True)
    return [e.as_row() for e in ordered]


def read_answers(
    answers: Mapping[Source, str], start: dt.datetime, end: dt.datetime
) -> tuple[list[TimelineEvent], list[str]]:
    """Prometheus's answers (source -> text; a missing source was not asked or not answered)
    -> the events and one info line per source that could not be read or had nothing to say.
    A bad answer costs its own source only."""
    events: list[TimelineEvent] = []
    notes: list[str] = []

    def read(source: Source, parse: Callable[[], list[TimelineEvent]]) -> bool:
        try:
            events.extend(parse())
        except TimelineError as exc:
            notes.append(f"{exc.what}; no {SOURCE_EVENTS[source]} events")
            return False
        return True

    if "alerts" in answers:
        step = range_step(end - start)
        read("alerts", lambda: alert_events(answers["alerts"], end, step, start))
    if "verified" in answers and "failed" in answers:
        verified, failed = answers["verified"], answers["failed"]
        if read("verified", lambda: backup_events(verified, failed, start)):
            note = backup_note(verified, failed, start)
            notes.extend([note] if note else [])
    if "wal lag" in answers:
        read("wal lag", lambda: wal_lag_events(answers["wal lag"], end, end - start))
    if "deploys" in answers:
        read("deploys", lambda: deploy_metric_events(answers["deploys"], start))
    return events, notes


def prometheus_down_note(where: str, queries: Sequence[PrometheusQuery], why: str) -> str:
    kinds = list(dict.fromkeys(SOURCE_EVENTS[q.source] for q in queries))
    missing = " or ".join([", ".join(kinds[:-1]), kinds[-1]] if len(kinds) > 1 else kinds)
    return f"Prometheus did not answer on {where}, so this timeline has no {missing} events: {why}"


LOCAL_AUDIT_NOTE = (
    "the local environment keeps no audit log: its deploys come from the suite's textfile "
    "metric (time and outcome only)"
)
