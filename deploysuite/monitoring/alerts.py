"""Alerts as an operator sees them: what fires, a silence for maintenance, and a synthetic alert
sent end to end. Everything goes through `amtool` inside the stack's Alertmanager container
(`docker compose exec`), so the same commands work on this machine and on a host over SSH, and
nothing needs a port published beyond 127.0.0.1.

The argv builders and the parsers here are pure; deploy/live.py finds the stack, the tasks run.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from deploysuite.core import commands
from deploysuite.core.commands import Argv
from deploysuite.core.errors import SuiteError

SERVICE = "alertmanager"
URL = "http://127.0.0.1:9093"
TEST_ALERT = "DeploySuiteRoutingTest"
MATCHER_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*(=~|!=|!~|=)\S.*$")
COLUMNS = ["alert", "severity", "service", "state", "age", "runbook"]


class AlertsError(SuiteError):
    exit_code = 12


def exec_argv(project: str, files: Sequence[Path], profiles: Sequence[str], *argv: str) -> Argv:
    """argv run inside the stack's Alertmanager container."""
    return commands.compose(project, files, "exec", "-T", SERVICE, *argv, profiles=profiles)


def amtool_argv(project: str, files: Sequence[Path], profiles: Sequence[str], *args: str) -> Argv:
    return exec_argv(project, files, profiles, "amtool", f"--alertmanager.url={URL}", *args)


def query_args() -> tuple[str, ...]:
    return ("alert", "query", "--output", "json")


def metrics_args() -> Argv:
    """Alertmanager's own counters, read from inside its container."""
    return ("wget", "-q", "-O", "-", f"{URL}/metrics")


def age(since: str, now: dt.datetime) -> str:
    try:
        start = dt.datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        return "?"
    seconds = max(0, int((now - start).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def parse_alerts(text: str, now: dt.datetime) -> list[dict[str, str]]:
    """amtool's `alert query -o json` -> rows, critical first, then the oldest."""
    try:
        alerts = json.loads(text or "[]")
    except ValueError as exc:
        raise AlertsError(f"Alertmanager's answer is not JSON: {exc}") from None
    rows = []
    for alert in alerts if isinstance(alerts, list) else []:
        labels: Mapping[str, str] = alert.get("labels") or {}
        notes: Mapping[str, str] = alert.get("annotations") or {}
        status = alert.get("status") or {}
        rows.append({
            "alert": labels.get("alertname", "?"),
            "severity": labels.get("severity", "-"),
            "service": labels.get("service") or labels.get("instance") or "-",
            "state": status.get("state", "active"),
            "age": age(str(alert.get("startsAt", "")), now),
            "runbook": " ".join(str(notes.get("runbook") or notes.get("summary") or "").split()),
            "since": str(alert.get("startsAt", "")),
        })  # fmt: skip
    order = {"critical": 0, "warning": 1}
    return sorted(rows, key=lambda r: (order.get(r["severity"], 2), r["since"]))


def parse_matchers(matchers: Sequence[str]) -> tuple[str, ...]:
    if not matchers:
        raise AlertsError("a silence needs at least one matcher", "--match alertname=ServiceDown")
    for matcher in matchers:
        if not MATCHER_RE.match(matcher):
            raise AlertsError(
                f"{matcher!r} is not a matcher",
                "use label=value (or =~, !=, !~), e.g. --match alertname=ServiceDown",
            )
    return tuple(matchers)


def silence_args(matchers: Sequence[str], duration: str, comment: str, author: str) -> Argv:
    if not comment.strip():
        raise AlertsError("a silence needs a comment saying why", "--comment 'database upgrade'")
    return ("silence", "add", f"--duration={duration}", f"--comment={comment}",
            f"--author={author}", *parse_matchers(matchers))  # fmt: skip


# What a rolling deploy may blip while containers change: silenced for the deploy's duration
# in its own environment, lifted when it ends (a problem that stays then alerts as usual).
DEPLOY_BLIPS = ("ServiceDown", "ServiceNotReady", "EndpointDown", "HighLatencyP99")


def deploy_silence_args(env: str, release: str, minutes: int, author: str) -> Argv:
    return silence_args(
        [f"env={env}", f"alertname=~{'|'.join(DEPLOY_BLIPS)}"], f"{minutes}m",
        f"inv deploy of {release}: expected blips while containers change", author,
    )  # fmt: skip


def expire_args(silence_id: str) -> Argv:
    return ("silence", "expire", silence_id)


def test_alert_args(env: str, token: str, now: dt.datetime, severity: str = "warning") -> Argv:
    """A synthetic alert that resolves by itself 5 minutes after `now`; `token` tells this
    run's alert from an earlier one."""

    def stamp(when: dt.datetime) -> str:
        return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    # both ends given: amtool 0.25 without --start dates the alert at its end
    return ("alert", "add", f"alertname={TEST_ALERT}", f"severity={severity}",
            f"env={env}", f"token={token}",
            f"--annotation=summary=Routing test of {env}: nothing is wrong",
            "--annotation=runbook=Sent by inv alerts.test: no action needed",
            f"--start={stamp(now)}", f"--end={stamp(now + dt.timedelta(minutes=5))}")  # fmt: skip


def notification_counts(metrics_text: str) -> dict[str, tuple[float, float]]:
    """integration -> (notifications sent, of which failed) from Alertmanager's /metrics."""
    counts: dict[str, list[float]] = {}
    pattern = re.compile(
        r'^alertmanager_notifications(_failed)?_total\{[^}]*integration="([^"]+)"[^}]*\}\s+(\S+)$'
    )
    for line in metrics_text.splitlines():
        match = pattern.match(line.strip())
        if not match:
            continue
        failed, integration, value = match.groups()
        entry = counts.setdefault(integration, [0.0, 0.0])
        entry[1 if failed else 0] += float(value)
    return {k: (v[0], v[1]) for k, v in counts.items()}


def delivery_progress(
    before: Mapping[str, tuple[float, float]],
    after: Mapping[str, tuple[float, float]],
    integrations: Sequence[str],
) -> tuple[list[str], list[str]]:
    """Which of the configured integrations have sent since `before`, which failed."""
    sent, failed = [], []
    for name in integrations:
        was, now = before.get(name, (0.0, 0.0)), after.get(name, (0.0, 0.0))
        if now[1] > was[1]:
            failed.append(name)
        elif now[0] > was[0]:
            sent.append(name)
    return sent, failed


def configured_integrations(alertmanager_yml: str) -> list[str]:
    """The integration names Alertmanager counts (email, slack, webhook, ...) of the routing."""
    doc: Any = yaml.safe_load(alertmanager_yml) or {}
    found = set()
    for receiver in doc.get("receivers") or []:
        for key in receiver:
            if key.endswith("_configs"):
                found.add(key.removesuffix("_configs"))
    return sorted(found)
