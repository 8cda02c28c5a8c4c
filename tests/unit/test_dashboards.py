"""Grafana's provisioning as data: the dashboards' JSON, the PromQL of every panel and annotation,
the metric names it reads (each one exposed by a service, the backup agent, the suite's textfile
or an exporter the stack runs), the rule file promtool checks, and the provisioning files and
mounts that hand them to Grafana. No tool runs here: tests/integration/test_dashboards_promtool.py
runs promtool on the same rule file."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

from deploysuite.backup.metrics import status_metrics
from deploysuite.core.errors import ConfigError
from deploysuite.monitoring.dashboards import (
    DASHBOARDS_DIR,
    dashboard_metrics,
    dashboard_queries,
    load_dashboards,
    metric_names,
    panel_queries,
    promtool_check_dashboards_argv,
    record_name,
    rule_file_of_queries,
)
from deploysuite.monitoring.deploymetrics import HELP as DEPLOY_METRICS_HELP
from deploysuite.monitoring.rules import AlertThresholds, alert_rules, render_rules

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "grafana"
DASHBOARDS = load_dashboards()
QUERIES = dashboard_queries(DASHBOARDS)
PROMETHEUS_DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
PANEL_TYPES = {"timeseries", "stat"}
# The services' request filter, as the alert rules write it.
USER_REQUESTS = 'job="services", route!~"/health.*|/metrics"'


def all_panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard.get("panels", []):
        found += [panel, *all_panels(panel)]
    return found


# --- where each metric comes from -------------------------------------------------------------


def rule_metrics() -> set[str]:
    """Every metric the alert rules read (rules rendered with the default thresholds)."""
    return {m for rule in alert_rules(render_rules(AlertThresholds())) for m in
            metric_names(rule["expr"])}  # fmt: skip


def service_metrics() -> set[str]:
    """What every service exposes through the shared library's registry; a histogram is read
    through its _bucket, _sum and _count series."""
    found: set[str] = set()
    declared = re.compile(r"\.(counter|gauge|histogram)\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"")
    for source in sorted((REPO / "services" / "lib" / "saaschat").glob("*.py")):
        for kind, name in declared.findall(source.read_text(encoding="utf-8")):
            suffixes = ("_bucket", "_sum", "_count") if kind == "histogram" else ("",)
            found |= {name + suffix for suffix in suffixes}
    return found


def backup_agent_metrics() -> set[str]:
    """The backup agent's families, from its exposition of a state where every one has a sample."""
    status = {
        "heartbeat": "2024-01-15T15:59:50+00:00", "dumps": "2024-01-15T12:00:00+00:00",
        "newest_verified": "2024-01-15T12:00:05+00:00", "base": "2024-01-15T02:00:00+00:00",
        "newest_base": "2024-01-15T02:10:00+00:00", "last_error": "base: failed",
        "last_error_at": "2024-01-15T14:00:00+00:00", "wal_shipped": 42,
        "wal_last_shipped_at": "2024-01-15T15:58:00+00:00", "wal_spool_oldest_seconds": 12,
        "archiver_last_archived": "2024-01-15T15:57:59+00:00",
        "archiver_last_failed": "2024-01-15T15:58:30+00:00",
    }  # fmt: skip
    text = status_metrics(
        status, dt.datetime(2024, 1, 15, 16, 0, tzinfo=dt.UTC), rpo_hours=6,
        wal_archiving=True, wal_max_lag_seconds=900,
    )  # fmt: skip
    return set(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))


# Exporter metrics the dashboards read that no alert rule reads yet (postgres_exporter v0.11,
# the `postgres` job; the rules already vouch for pg_up, pg_stat_activity_count,
# pg_settings_max_connections and pg_stat_archiver_failed_count).
POSTGRES_EXPORTER_METRICS = {
    "pg_stat_database_xact_commit",
    "pg_stat_database_xact_rollback",
    "pg_database_size_bytes",
    "pg_stat_archiver_archived_count",
}

ALLOWED_METRICS = (
    rule_metrics()
    | service_metrics()
    | backup_agent_metrics()
    | set(DEPLOY_METRICS_HELP)
    | POSTGRES_EXPORTER_METRICS
)


# --- the dashboards ---------------------------------------------------------------------------


def test_the_three_dashboards_exist_with_unique_uids_and_titles():
    assert {"overview", "postgresql", "backups"} <= set(DASHBOARDS)
    uids = [d.get("uid") for d in DASHBOARDS.values()]
    titles = [d.get("title") for d in DASHBOARDS.values()]
    assert all(uids) and all(titles), (uids, titles)
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)
    # Grafana refuses a uid longer than 40 characters or with other characters
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid) for uid in uids), uids


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_dashboard_is_a_grafana_11_model_for_provisioning(name: str):
    dashboard = DASHBOARDS[name]
    assert dashboard["schemaVersion"] == 39
    # A provisioned dashboard is found by uid; a fixed id would clash with Grafana's own.
    assert dashboard.get("id") is None
    assert dashboard["panels"], name


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_reads_prometheus_and_has_a_query(name: str):
    panels = all_panels(DASHBOARDS[name])
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids), f"{name}: panel ids repeat: {ids}"
    for panel in panels:
        where = f"{name}: panel {panel.get('title')!r}"
        assert panel["type"] in PANEL_TYPES, where
        assert panel.get("title"), where
        assert panel.get("datasource") == PROMETHEUS_DATASOURCE, where
        targets = panel.get("targets") or []
        assert targets and all(t.get("expr", "").strip() for t in targets), where
        assert all(t.get("datasource", PROMETHEUS_DATASOURCE) == PROMETHEUS_DATASOURCE
                   for t in targets), where  # fmt: skip
        ref_ids = [t.get("refId") for t in targets]
        assert len(set(ref_ids)) == len(ref_ids), where


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panels_fit_the_24_column_grid_without_overlapping(name: str):
    taken: set[tuple[int, int]] = set()
    for panel in all_panels(DASHBOARDS[name]):
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                 for y in range(g["y"], g["y"] + g["h"])}  # fmt: skip
        assert not cells & taken, f"{name}: {panel['title']!r} overlaps another panel"
        taken |= cells


def test_the_overview_annotates_deploys_and_rollbacks_from_the_suite_textfile():
    annotations = DASHBOARDS["overview"]["annotations"]["list"]
    by_name = {a["name"]: a for a in annotations}
    assert by_name["Deploys"]["target"]["expr"] == (
        "changes(deploysuite_last_deploy_timestamp_seconds[1m]) > 0"
    )
    assert by_name["Rollbacks"]["target"]["expr"] == (
        "changes(deploysuite_last_rollback_timestamp_seconds[1m]) > 0"
    )
    for annotation in annotations:
        assert annotation["datasource"] == PROMETHEUS_DATASOURCE
        # The window of changes() is one step: a longer step would skip deploys between them.
        assert annotation["target"]["interval"] == "60s"
        assert annotation["enable"] is True
    assert set(by_name["Deploys"]["tagKeys"].split(",")) == {"env", "outcome"}


def test_the_alerted_signals_use_the_alerts_own_expressions():
    """A dashboard that shows another number than the alert judges misleads at 3 a.m."""
    queries = {expr for _, expr in QUERIES["overview"]}
    assert f"sum by (service) (rate(http_requests_total{{{USER_REQUESTS}}}[5m]))" in queries
    assert (
        f'sum by (service) (rate(http_requests_total{{{USER_REQUESTS}, status=~"5.."}}[5m]))\n'
        f"/\nsum by (service) (rate(http_requests_total{{{USER_REQUESTS}}}[5m]))"
    ) in queries
    for q in ("0.5", "0.99"):
        assert (
            f"histogram_quantile({q}, sum by (le, service) "
            f"(rate(http_request_duration_seconds_bucket{{{USER_REQUESTS}}}[5m])))"
        ) in queries
    assert 'up{job="services"}' in queries
    postgres = {expr for _, expr in QUERIES["postgresql"]}
    assert (
        "sum by (job, instance) (pg_stat_activity_count)\n"
        "/\nmax by (job, instance) (pg_settings_max_connections)"
    ) in postgres
    backups = {expr for _, expr in QUERIES["backups"]}
    assert "time() - backup_newest_verified_timestamp_seconds" in backups


def test_each_dashboard_reads_what_it_is_for():
    used = dashboard_metrics()
    expected = {
        "overview": {
            "http_requests_total", "http_request_duration_seconds_bucket", "up",
            "http_requests_in_flight", "dependency_up", "circuit_breaker_state",
            "deploysuite_last_deploy_timestamp_seconds",
            "deploysuite_last_rollback_timestamp_seconds",
        },
        "postgresql": {
            "pg_up", "pg_stat_activity_count", "pg_settings_max_connections",
            "pg_stat_database_xact_commit", "pg_stat_database_xact_rollback",
            "pg_database_size_bytes", "pg_stat_archiver_archived_count",
            "pg_stat_archiver_failed_count",
        },
        "backups": {
            "backup_newest_verified_timestamp_seconds", "backup_rpo_seconds",
            "backup_last_run_success", "backup_wal_spool_oldest_seconds",
            "backup_wal_max_lag_seconds", "backup_healthy",
        },
    }  # fmt: skip
    for name, metrics in expected.items():
        assert {m for m, where in used.items() if name in where} == metrics, name


def test_every_metric_a_dashboard_reads_is_exposed_by_something_the_stack_runs():
    unknown = {m: sorted(where) for m, where in dashboard_metrics().items()
               if m not in ALLOWED_METRICS}  # fmt: skip
    assert not unknown, f"metrics nothing in the stack exposes: {unknown}"


def test_the_allow_list_comes_from_the_sources_and_is_no_catch_all():
    # each source contributes what it really declares ...
    assert {"http_requests_total", "http_request_duration_seconds_bucket",
            "http_requests_in_flight", "dependency_up", "circuit_breaker_state",
            "service_info", "schema_version"} <= service_metrics()  # fmt: skip
    assert {"backup_healthy", "backup_rpo_seconds", "backup_wal_max_lag_seconds",
            "backup_last_run_success"} <= backup_agent_metrics()  # fmt: skip
    # ... and a near miss of a real name is not allowed
    for typo in (
        "http_request_total",
        "http_requests_duration_seconds_bucket",
        "pg_upp",
        "backup_rpo_hours",
        "deploysuite_last_deploy_timestamp",
    ):
        assert typo not in ALLOWED_METRICS, typo


def test_metric_names_reads_the_alert_rules_as_written():
    """Every rule reads at least one metric, and each name found is a metric-like word of its
    expression: the allow-list built from the rules holds no keyword, label or function."""
    for rule in alert_rules(render_rules(AlertThresholds())):
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        for name in names:
            assert re.fullmatch(r"[a-z][a-z0-9_]*", name), (rule["alert"], name)
            assert re.search(rf"\b{name}\b", rule["expr"]), (rule["alert"], name)
    assert {"up", "pg_up", "http_requests_total", "backup_healthy",
            "dependency_up"} <= rule_metrics()  # fmt: skip


# --- metric_names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('up{job="services"} == 0', {"up"}),
        ("sum by (service) (rate(http_requests_total[5m]))", {"http_requests_total"}),
        # the grouping clause after the aggregation, and upper-case keywords
        ("sum(rate(http_requests_total[5m])) BY (service, route)", {"http_requests_total"}),
        ("count without (instance) (node_filesystem_avail_bytes)", {"node_filesystem_avail_bytes"}),
        # label names and regexes inside braces name no metric, even with braces in a string
        (
            'http_requests_total{route!~"/health.*|/metrics", status=~"5..", job="a{b}c"}',
            {"http_requests_total"},
        ),
        (
            "histogram_quantile(0.99, sum by (le, service) "
            '(rate(http_request_duration_seconds_bucket{job="services"}[5m])))',
            {"http_request_duration_seconds_bucket"},
        ),
        # vector matching: the label lists of on/ignoring/group_left are no metrics
        (
            "(time() - backup_newest_verified_timestamp_seconds)\n"
            "/ on (job, instance) group_left\nbackup_rpo_seconds",
            {"backup_newest_verified_timestamp_seconds", "backup_rpo_seconds"},
        ),
        ("a_total / ignoring (le) group_right (service) b_total", {"a_total", "b_total"}),
        (
            "backup_healthy unless on (job, instance) backup_newest_verified_timestamp_seconds",
            {"backup_healthy", "backup_newest_verified_timestamp_seconds"},
        ),
        # bool, offset and durations; a function name alone is a metric
        ("pg_up > bool (pg_up offset 1h30m)", {"pg_up"}),
        ("count(circuit_breaker_state == 2) or vector(0)", {"circuit_breaker_state"}),
        (
            "time() - deploysuite_last_rollback_timestamp_seconds < 1800",
            {"deploysuite_last_rollback_timestamp_seconds"},
        ),
        # a subquery, numbers in every notation, Inf and NaN
        (
            "max_over_time(rate(x_total[1m])[1h:5m]) > 1e3 or y > 0x1F or z < Inf or w != NaN",
            {"x_total", "y", "z", "w"},
        ),
        # strings as function arguments, a colon in a recorded name, a comment
        (
            'label_replace(job:up:sum, "dst", "$1 upper", "src", "(.*)") # total by job',
            {"job:up:sum"},
        ),
        ('{__name__="pg_up", job="postgres"}', {"pg_up"}),
        ('{__name__=~"pg_.*"}', set()),
        (
            "predict_linear(node_filesystem_avail_bytes[6h], 24 * 3600) < 0",
            {"node_filesystem_avail_bytes"},
        ),
        (
            "topk(3, sum by (datname) (pg_database_size_bytes)) atan2 x",
            {"pg_database_size_bytes", "x"},
        ),
        ("time()", set()),
    ],
)
def test_metric_names(expr: str, names: set[str]):
    assert metric_names(expr) == names


def test_metric_names_of_every_dashboard_query_are_metric_like():
    """No keyword, function or label slips through on the real dashboards."""
    for name, queries in QUERIES.items():
        for title, expr in queries:
            names = metric_names(expr)
            assert names, f"{name}: {title!r} reads no metric: {expr}"
            for metric in names:
                assert re.fullmatch(r"[a-z][a-z0-9_]*", metric), (name, title, metric)


# --- panel_queries and the rule file ----------------------------------------------------------

SMALL_DASHBOARD = {
    "uid": "t",
    "title": "t",
    "panels": [
        {"title": "Rate", "targets": [{"refId": "A", "expr": "rate(a_total[5m])"},
                                      {"refId": "B", "expr": "b"}]},
        {"title": "A row", "type": "row", "panels": [
            {"title": "Inside", "targets": [{"refId": "A", "expr": "c"}]},
        ]},
        {"title": "Text", "type": "text"},
    ],
    "annotations": {"list": [
        {"name": "Annotations & Alerts", "builtIn": 1, "type": "dashboard"},
        {"name": "Deploys", "target": {"refId": "Anno", "expr": "changes(d[1m]) > 0"}},
        {"name": "Legacy", "expr": "e > 0"},
    ]},
}  # fmt: skip


def test_panel_queries_in_order_with_rows_and_annotations():
    assert panel_queries(SMALL_DASHBOARD) == [
        ("Rate", "rate(a_total[5m])"),
        ("Rate", "b"),
        ("Inside", "c"),
        ("Deploys", "changes(d[1m]) > 0"),
        ("Legacy", "e > 0"),
    ]


def test_the_rule_file_has_one_recording_rule_per_query():
    text = rule_file_of_queries(QUERIES)
    document = yaml.safe_load(text)
    groups = {g["name"]: g["rules"] for g in document["groups"]}
    assert set(groups) == {f"dashboard-{name}" for name in QUERIES}
    for name, queries in QUERIES.items():
        rules = groups[f"dashboard-{name}"]
        assert [(r["labels"]["panel"], r["expr"]) for r in rules] == list(queries)
        assert [r["record"] for r in rules] == [
            f"dashboard:{name}:{n}" for n in range(1, len(queries) + 1)
        ]
        assert all(set(r) == {"record", "expr", "labels"} for r in rules)
    # the deploy annotations are checked like any panel
    assert any("deploysuite_last_deploy_timestamp_seconds" in r["expr"]
               for r in groups["dashboard-overview"])  # fmt: skip


def test_the_rule_file_keeps_multi_line_expressions_readable_and_exact():
    text = rule_file_of_queries({"x": [("Ratio", "a\n/\nb"), ("Label", 'c{d="e: f"}')]})
    assert "    expr: |-\n      a\n      /\n      b\n" in text
    rules = yaml.safe_load(text)["groups"][0]["rules"]
    assert [r["expr"] for r in rules] == ["a\n/\nb", 'c{d="e: f"}']


def test_record_names_are_valid_metric_names_whatever_the_file_is_called():
    assert record_name("overview", 3) == "dashboard:overview:3"
    assert record_name("my-dash.v2", 1) == "dashboard:my_dash_v2:1"
    assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", record_name("ça va", 12))


def test_promtool_argv_on_path_and_in_the_image():
    folder = Path("/tmp/check")
    assert promtool_check_dashboards_argv(None, folder, "dashboards.yml") == (
        "promtool", "check", "rules", "/tmp/check/dashboards.yml",
    )  # fmt: skip
    assert promtool_check_dashboards_argv("mysaaschat/prometheus:bookworm", folder,
                                          "dashboards.yml") == (
        "docker", "run", "--rm", "--network", "none",
        "--volume", "/tmp/check:/rules-check:ro",
        "--entrypoint", "promtool",
        "mysaaschat/prometheus:bookworm", "check", "rules", "/rules-check/dashboards.yml",
    )  # fmt: skip


# --- loading ----------------------------------------------------------------------------------


def test_load_dashboards_reads_every_json_file_by_stem(tmp_path: Path):
    (tmp_path / "b.json").write_text(json.dumps({"uid": "b", "panels": []}))
    (tmp_path / "a.json").write_text(json.dumps({"uid": "a", "panels": []}))
    (tmp_path / "notes.md").write_text("not a dashboard")
    assert load_dashboards(tmp_path) == {"a": {"uid": "a", "panels": []},
                                         "b": {"uid": "b", "panels": []}}  # fmt: skip


def test_a_broken_dashboard_names_its_file_and_line(tmp_path: Path):
    (tmp_path / "broken.json").write_text('{\n  "uid": "x",\n  "panels": [\n}\n')
    with pytest.raises(ConfigError) as caught:
        load_dashboards(tmp_path)
    assert f"{tmp_path / 'broken.json'}:4:" in caught.value.what


def test_a_dashboard_that_is_no_object_is_refused(tmp_path: Path):
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ConfigError, match=r"list\.json: a dashboard is a JSON object"):
        load_dashboards(tmp_path)


def test_dashboard_metrics_maps_each_metric_to_its_dashboards(tmp_path: Path):
    (tmp_path / "one.json").write_text(json.dumps(SMALL_DASHBOARD))
    (tmp_path / "two.json").write_text(json.dumps(
        {"panels": [{"title": "B", "targets": [{"expr": "b + up"}]}]}))  # fmt: skip
    assert dashboard_metrics(tmp_path) == {
        "a_total": {"one"}, "b": {"one", "two"}, "c": {"one"}, "d": {"one"}, "e": {"one"},
        "up": {"two"},
    }  # fmt: skip


def test_the_default_folder_is_the_repository_one():
    assert DASHBOARDS_DIR == GRAFANA / "dashboards"


# --- provisioning and compose -----------------------------------------------------------------


def grafana_service() -> dict:
    compose = yaml.safe_load((REPO / "docker-compose.prod.yml").read_text(encoding="utf-8"))
    return compose["services"]["grafana"]


def mounts() -> dict[str, str]:
    """Container path -> host path of the grafana service's bind mounts (read-only ones)."""
    found = {}
    for volume in grafana_service()["volumes"]:
        source, target, *mode = volume.split(":")
        if source.startswith("./"):
            assert mode == ["ro"], volume
            found[target] = source
    return found


def test_the_datasource_is_the_stack_prometheus_under_the_uid_the_dashboards_use():
    document = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    assert document["apiVersion"] == 1
    [source] = document["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True
    assert {"type": source["type"], "uid": source["uid"]} == PROMETHEUS_DATASOURCE
    # Grafana reaches Prometheus on the network both share
    assert "monitoring" in grafana_service()["networks"]


def test_the_provider_loads_the_mounted_dashboards_into_their_folder():
    document = yaml.safe_load((GRAFANA / "provisioning/dashboards/mysaaschat.yml").read_text())
    assert document["apiVersion"] == 1
    [provider] = document["providers"]
    assert provider["type"] == "file"
    assert provider["folder"] == "My-SaaS-Chat"
    path = provider["options"]["path"]
    assert path == "/var/lib/grafana/dashboards"
    assert mounts()[path] == "./grafana/dashboards"


def test_compose_mounts_the_provisioning_folder_where_grafana_reads_it():
    assert mounts() == {
        "/etc/grafana/provisioning": "./grafana/provisioning",
        "/var/lib/grafana/dashboards": "./grafana/dashboards",
    }
    for target, source in mounts().items():
        assert (REPO / PurePosixPath(source)).is_dir(), target
    assert grafana_service()["profiles"] == ["unavailable"]
