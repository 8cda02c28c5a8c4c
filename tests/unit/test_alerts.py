"""inv alerts as data: amtool's argv inside the Alertmanager container, its answers parsed, the
delivery counters of a routing test, silences refused when they are unclear."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from deploysuite.monitoring import alerts as al

NOW = dt.datetime(2026, 12, 6, 3, 0, tzinfo=dt.UTC)
FILES = [Path("/r/docker-compose.prod.yml")]


def test_amtool_runs_inside_the_alertmanager_container_against_its_loopback():
    assert al.amtool_argv("p1", FILES, ("monitoring",), *al.query_args()) == (
        "docker", "compose", "--project-name", "p1", "--file", "/r/docker-compose.prod.yml",
        "--profile", "monitoring", "exec", "-T", "alertmanager", "amtool",
        "--alertmanager.url=http://127.0.0.1:9093", "alert", "query", "--output", "json",
    )  # fmt: skip


def test_alerts_are_rows_critical_first_then_oldest():
    answer = [
        {"labels": {"alertname": "HighLatencyP99", "severity": "warning", "service": "chat"},
         "annotations": {"runbook": "p99 above 1 s.\n  First: inv logs --service chat"},
         "startsAt": "2026-12-06T02:00:00Z", "status": {"state": "active"}},
        {"labels": {"alertname": "ServiceDown", "severity": "critical", "instance": "auth:8000"},
         "annotations": {"summary": "auth is down"},
         "startsAt": "2026-12-06T02:59:30.5Z", "status": {"state": "suppressed"}},
    ]  # fmt: skip
    rows = al.parse_alerts(json.dumps(answer), NOW)
    assert [(r["alert"], r["service"], r["state"], r["age"]) for r in rows] == [
        ("ServiceDown", "auth:8000", "suppressed", "29 s"),
        ("HighLatencyP99", "chat", "active", "60 min"),
    ]
    assert rows[0]["runbook"] == "auth is down"
    assert rows[1]["runbook"] == "p99 above 1 s. First: inv logs --service chat"
    assert al.parse_alerts("[]", NOW) == []
    with pytest.raises(al.AlertsError, match="not JSON"):
        al.parse_alerts("connection refused", NOW)


def test_a_silence_needs_a_clear_matcher_and_a_reason():
    args = al.silence_args(["alertname=ServiceDown", "service=~chat|auth"], "2h", "upgrade", "me@h")
    assert args == (
        "silence", "add", "--duration=2h", "--comment=upgrade", "--author=me@h",
        "alertname=ServiceDown", "service=~chat|auth",
    )  # fmt: skip
    with pytest.raises(al.AlertsError, match="at least one matcher"):
        al.silence_args([], "2h", "upgrade", "me")
    with pytest.raises(al.AlertsError, match="is not a matcher"):
        al.silence_args(["ServiceDown"], "2h", "upgrade", "me")
    with pytest.raises(al.AlertsError, match="comment"):
        al.silence_args(["alertname=X"], "2h", "  ", "me")


def test_the_routing_test_alert_names_its_run_and_ends_by_itself():
    args = al.test_alert_args("staging", "ab12", NOW)
    assert args[:6] == ("alert", "add", "alertname=DeploySuiteRoutingTest", "severity=warning",
                        "env=staging", "token=ab12")  # fmt: skip
    assert args[-2:] == ("--start=2026-12-06T03:00:00Z", "--end=2026-12-06T03:05:00Z")


METRICS = """# HELP alertmanager_notifications_total The total number of attempted notifications.
alertmanager_notifications_total{integration="email"} 3
alertmanager_notifications_total{integration="slack"} 1
alertmanager_notifications_total{integration="webhook"} 0
alertmanager_notifications_failed_total{integration="email",reason="other"} 0
alertmanager_notifications_failed_total{integration="slack",reason="clientError"} 1
alertmanager_notifications_failed_total{integration="slack",reason="serverError"} 1
"""


def test_delivery_is_read_from_alertmanagers_own_counters():
    before = al.notification_counts(METRICS)
    assert before == {"email": (3.0, 0.0), "slack": (1.0, 2.0), "webhook": (0.0, 0.0)}
    after = {"email": (4.0, 0.0), "slack": (2.0, 3.0)}
    assert al.delivery_progress(before, after, ["email", "slack"]) == (["email"], ["slack"])
    assert al.delivery_progress(before, before, ["email"]) == ([], [])


def test_the_integrations_are_those_the_routing_configures():
    routing = """
receivers:
  - name: page
    email_configs: [{to: a@b}]
    slack_configs: [{api_url_file: /etc/alertmanager/secrets/notify_webhook_url}]
  - name: ticket
    email_configs: [{to: a@b}]
"""
    assert al.configured_integrations(routing) == ["email", "slack"]
    assert al.configured_integrations("") == []


def test_a_deploy_silences_only_its_own_environments_blips_for_a_bounded_time():
    assert al.deploy_silence_args("staging", "20261206T030000Z-abc", 25, "ci@runner") == (
        "silence", "add", "--duration=25m",
        "--comment=inv deploy of 20261206T030000Z-abc: expected blips while containers change",
        "--author=ci@runner", "env=staging",
        "alertname=~ServiceDown|ServiceNotReady|EndpointDown|HighLatencyP99",
    )  # fmt: skip
