"""Alerting as data: the rules rendered from the environment's thresholds, their promtool tests,
Alertmanager's routing, and the argv of promtool and amtool. No tool runs here: the integration
tests (tests/integration/test_alerting_config.py) run promtool and amtool on the same files."""

from __future__ import annotations

import re
import secrets
import shutil
import stat
from pathlib import Path

import jinja2
import pytest
import yaml
from invoke import Collection
from invoke.loader import FilesystemLoader

from deploysuite.config.layers import load_config
from deploysuite.core.errors import ConfigError
from deploysuite.monitoring import alertmanager as am
from deploysuite.monitoring.rules import (
    ANNOTATIONS,
    SEVERITIES,
    VARIABLES,
    AlertThresholds,
    alert_names,
    alert_rules,
    alert_thresholds,
    firing_test_cases,
    promtool_check_rules_argv,
    promtool_test_argv,
    render_rules,
    rule_test_files,
    write_rule_check_folder,
)
from deploysuite.monitoring.templates import DURATION_RE, promql_number

REPO = Path(__file__).resolve().parents[2]
DEFAULTS = render_rules(AlertThresholds())
TESTS = rule_test_files()


def rules_by_name(files: dict[str, str]) -> dict[str, dict]:
    return {rule["alert"]: rule for rule in alert_rules(files)}


def fake_webhook_url() -> str:
    # Made at run time: a fixed token here would be a finding of the repository's secret scan.
    return f"https://chat.example.test/hooks/{secrets.token_urlsafe(24)}"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A suite root with the real schema and one empty environment: only defaults apply."""
    shutil.copy(REPO / ".env.example", tmp_path / ".env.example")
    (tmp_path / "environments" / "test").mkdir(parents=True)
    (tmp_path / "environments" / "test" / "config.env").write_text("")
    return tmp_path


def config_with(tree: Path, **values: str):
    return load_config("test", root=tree, process_env={}, cli=values)


# --- rules ------------------------------------------------------------------------------------


def test_the_rules_cover_every_area_with_unique_alert_names():
    assert sorted(DEFAULTS) == [
        "backups.yml", "datastores.yml", "deploys.yml", "edge.yml", "host.yml",
        "monitoring.yml", "services.yml",
    ]  # fmt: skip
    names = alert_names(DEFAULTS)
    assert len(names) == len(set(names))
    assert {
        "ServiceDown", "ServiceNotReady", "High5xxRatio", "HighLatencyP99", "PostgresDown",
        "PostgresConnectionsNearMax", "WalArchivingFailing", "RedisDown", "RabbitMQDown",
        "RabbitMQBacklogGrowing", "BackupTooOld", "BackupRunFailed", "WalShippingBehind",
        "BackupMetricsAbsent", "BackupNeverVerified", "CertificateExpiringSoon", "EndpointDown",
        "DiskFillingUp", "HostDown", "DeployRolledBack", "PrometheusRuleEvaluationFailures",
        "PrometheusConfigReloadFailed", "AlertmanagerNotificationsFailing", "ExporterDown",
    } <= set(names)  # fmt: skip


@pytest.mark.parametrize("rule", alert_rules(DEFAULTS), ids=lambda r: r["alert"])
def test_every_alert_has_a_severity_and_the_three_annotations(rule: dict):
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert set(annotations) == set(ANNOTATIONS)
    for key in ANNOTATIONS:
        assert annotations[key].strip(), key
        assert "\n" not in annotations[key], f"{key} must be one line"
    assert "First: inv " in annotations["runbook"]
    assert "for" not in rule or DURATION_RE.match(rule["for"])


def test_runbooks_name_only_tasks_the_suite_has():
    module, _ = FilesystemLoader(start=str(REPO)).load("tasks")
    known: set[str] = set()

    def walk(collection: Collection, prefix: str = "") -> None:
        known.update(prefix + name for name in collection.tasks)
        if collection.default:
            known.add(prefix.rstrip("."))
        for name, sub in collection.collections.items():
            walk(sub, f"{prefix}{name}.")

    walk(Collection.from_module(module))
    named = {
        task
        for rule in alert_rules(DEFAULTS)
        for task in re.findall(r"\binv ([a-z][a-z.-]*[a-z])", rule["annotations"]["runbook"])
    }
    assert named and named <= known, sorted(named - known)


def test_runbooks_name_the_environment_from_prometheus_external_labels():
    runbooks = [rule["annotations"]["runbook"] for rule in alert_rules(DEFAULTS)]
    assert all("--env={{ $externalLabels.env }}" in r or "--env={{ $labels.env }}" in r
               for r in runbooks)  # fmt: skip


def test_default_thresholds_appear_in_the_expressions():
    rules = rules_by_name(DEFAULTS)
    assert rules["ServiceDown"]["for"] == "1m"
    assert rules["ServiceNotReady"]["for"] == "2m"
    assert ") > 0.05\n" in rules["High5xxRatio"]["expr"]
    assert ">= 0.2" in rules["High5xxRatio"]["expr"]
    assert ") > 1\n" in rules["HighLatencyP99"]["expr"]
    assert "> 0.8" in rules["PostgresConnectionsNearMax"]["expr"]
    assert "> 1000" in rules["RabbitMQBacklogGrowing"]["expr"]
    assert rules["BackupTooOld"]["expr"].endswith("> 6 * 3600")
    assert rules["BackupNeverVerified"]["for"] == "360m"
    assert rules["WalShippingBehind"]["expr"] == "backup_wal_spool_oldest_seconds > 900"
    assert rules["CertificateExpiringSoon"]["expr"].endswith("< 14 * 86400")
    assert "24 * 3600) < 0" in rules["DiskFillingUp"]["expr"]


def test_changed_thresholds_change_the_expressions_and_windows():
    changed = AlertThresholds(
        rpo_hours=12, wal_lag_seconds=600, http_5xx_ratio=0.1, http_min_requests_per_second=1,
        http_p99_seconds=0.75, postgres_connections_ratio=0.9, rabbitmq_ready_messages=5000,
        cert_expiry_days=21, disk_full_horizon_hours=6, service_down_for="3m",
    )  # fmt: skip
    rules = rules_by_name(render_rules(changed))
    assert rules["ServiceDown"]["for"] == "3m"
    assert "for 3m." in rules["ServiceDown"]["annotations"]["description"]
    assert ") > 0.1\n" in rules["High5xxRatio"]["expr"]
    assert ">= 1" in rules["High5xxRatio"]["expr"]
    assert "(threshold 10%" in rules["High5xxRatio"]["annotations"]["description"]
    assert ") > 0.75\n" in rules["HighLatencyP99"]["expr"]
    assert "> 0.9" in rules["PostgresConnectionsNearMax"]["expr"]
    assert "> 5000" in rules["RabbitMQBacklogGrowing"]["expr"]
    assert rules["BackupTooOld"]["expr"].endswith("> 12 * 3600")
    assert rules["BackupNeverVerified"]["for"] == "720m"
    assert rules["WalShippingBehind"]["expr"].endswith("> 600")
    assert rules["CertificateExpiringSoon"]["expr"].endswith("< 21 * 86400")
    assert "6 * 3600) < 0" in rules["DiskFillingUp"]["expr"]


def test_rendering_is_deterministic_and_keeps_go_templates():
    assert render_rules(AlertThresholds()) == DEFAULTS
    assert "{{ $labels.service }} is down" in DEFAULTS["services.yml"]
    assert "[[" not in "".join(DEFAULTS.values())


def test_an_unknown_template_variable_is_an_error(tmp_path: Path):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "x.yml.j2").write_text("threshold: [[ t.no_such_threshold ]]\n")
    with pytest.raises(jinja2.UndefinedError):
        render_rules(AlertThresholds(), tmp_path)


def test_no_rule_templates_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="no rule templates"):
        render_rules(AlertThresholds(), tmp_path)


def test_promql_numbers_read_as_written():
    assert [promql_number(v) for v in (1000.0, 0.05, 6, 1e-7, 0.1 * 3)] == [
        "1000", "0.05", "6", "1e-07", "0.30000000000000004",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        promql_number(float("inf"))


# --- the promtool tests -----------------------------------------------------------------------


def test_every_alert_has_a_promtool_case_that_fires_and_one_that_stays_silent():
    fired = firing_test_cases(TESTS)
    silent: set[str] = set()
    for text in TESTS.values():
        for group in yaml.safe_load(text)["tests"]:
            silent |= {
                case["alertname"]
                for case in group.get("alert_rule_test") or ()
                if not case.get("exp_alerts")
            }
    names = set(alert_names(DEFAULTS))
    assert names - set(fired) == set(), "alerts no test fires"
    assert names - silent == set(), "alerts no test keeps silent"
    assert set(fired) <= names and silent <= names, "tests of alerts that do not exist"


def test_every_firing_case_checks_labels_and_all_three_annotations():
    for name, text in TESTS.items():
        for group in yaml.safe_load(text)["tests"]:
            assert group["external_labels"]["env"], name
            for case in group.get("alert_rule_test") or ():
                for alert in case.get("exp_alerts") or ():
                    assert alert["exp_labels"]["severity"] in SEVERITIES, (name, case)
                    assert set(alert["exp_annotations"]) == set(ANNOTATIONS), (name, case)


def test_the_test_files_load_the_rendered_rule_files():
    loaded = {
        rule_file
        for text in TESTS.values()
        for rule_file in yaml.safe_load(text)["rule_files"]
    }  # fmt: skip
    assert loaded == {f"../rules/{name}" for name in DEFAULTS}


def test_tested_alerts_counts_only_cases_that_expect_alerts():
    text = (
        "tests:\n  - alert_rule_test:\n"
        "      - {alertname: A, eval_time: 1m, exp_alerts: []}\n"
        "      - {alertname: A, eval_time: 2m, exp_alerts: [{exp_labels: {severity: warning}}]}\n"
        "      - {alertname: B, eval_time: 2m}\n"
    )
    assert firing_test_cases({"t.test.yml": text}) == {"A": 1}


def test_the_check_folder_puts_rules_where_the_tests_look(tmp_path: Path):
    folder = tmp_path / "check"
    folder.mkdir(mode=0o700)
    (folder / "rules").mkdir()
    (folder / "rules" / "stale.yml").write_text("left over")
    rule_files, test_files = write_rule_check_folder(folder, DEFAULTS, TESTS)
    assert rule_files == [f"rules/{name}" for name in sorted(DEFAULTS)]
    assert test_files == [f"tests/{name}" for name in sorted(TESTS)]
    assert sorted(p.name for p in (folder / "rules").iterdir()) == sorted(DEFAULTS)
    # promtool runs as nobody in its image: everything must be readable by others
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert stat.S_IMODE((folder / rule_files[0]).stat().st_mode) == 0o644
    with pytest.raises(ValueError, match="plain file name"):
        write_rule_check_folder(folder, {"../x.yml": ""}, {})


# --- thresholds from the configuration --------------------------------------------------------


def test_the_schema_defaults_are_the_code_defaults(tree: Path):
    assert alert_thresholds(config_with(tree)) == AlertThresholds()
    routing = am.alertmanager_routing(config_with(tree))
    assert (routing.group_wait, routing.group_interval) == (am.GROUP_WAIT, am.GROUP_INTERVAL)
    assert (routing.repeat_interval, routing.page_repeat_interval) == (
        am.REPEAT_INTERVAL, am.PAGE_REPEAT_INTERVAL,
    )  # fmt: skip


def test_thresholds_come_from_the_environment(tree: Path):
    config = config_with(
        tree, ALERT_HTTP_5XX_RATIO="0.1", BACKUP_RPO_HOURS="2", ALERT_CERT_EXPIRY_DAYS="7"
    )
    thresholds = alert_thresholds(config)
    assert (thresholds.http_5xx_ratio, thresholds.rpo_hours, thresholds.cert_expiry_days) == (
        0.1, 2.0, 7.0,
    )  # fmt: skip
    assert "> 2 * 3600" in rules_by_name(render_rules(thresholds))["BackupTooOld"]["expr"]


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("ALERT_HTTP_5XX_RATIO", "five percent", "is not a number"),
        ("ALERT_HTTP_5XX_RATIO", "1.5", "cannot exceed 1"),
        ("ALERT_POSTGRES_CONNECTIONS_RATIO", "80", "cannot exceed 1"),
        ("ALERT_HTTP_P99_SECONDS", "-1", "must be more than 0"),
        ("ALERT_RABBITMQ_READY_MESSAGES", "0", "must be more than 0"),
        ("ALERT_CERT_EXPIRY_DAYS", "nan", "not a finite number"),
        ("ALERT_HTTP_MIN_REQUESTS_PER_SECOND", "-0.1", "must be 0 or more"),
        ("BACKUP_RPO_HOURS", "6h", "is not a number"),
        ("WAL_MAX_LAG_SECONDS", "inf", "not a finite number"),
    ],
)
def test_a_bad_threshold_is_one_line_naming_the_variable_and_the_fix(
    tree: Path, key: str, value: str, says: str
):
    with pytest.raises(ConfigError) as caught:
        alert_thresholds(config_with(tree, **{key: value}))
    line = caught.value.one_line()
    assert key in caught.value.what and says in caught.value.what
    assert caught.value.fix and key in caught.value.fix
    assert "\n" not in line


def test_zero_minimum_request_rate_means_any_traffic(tree: Path):
    thresholds = alert_thresholds(config_with(tree, ALERT_HTTP_MIN_REQUESTS_PER_SECOND="0"))
    assert ">= 0\n" in rules_by_name(render_rules(thresholds))["High5xxRatio"]["expr"]


def test_every_threshold_variable_is_documented(tree: Path):
    schema = config_with(tree).schema
    assert set(VARIABLES.values()) <= set(schema)


def test_a_for_window_that_is_no_duration_is_refused():
    with pytest.raises(ConfigError, match="service_down_for"):
        AlertThresholds(service_down_for="one minute")
    with pytest.raises(ConfigError, match="0s"):
        AlertThresholds(latency_for="0s")


# --- Alertmanager -----------------------------------------------------------------------------


def routing(**changes) -> am.AlertRouting:
    base = {
        "email_to": "oncall@example.test",
        "email_from": "alerts@example.test",
        "smtp_smarthost": "mailsink:1025",
    }
    return am.AlertRouting(**{**base, **changes})


def test_routes_by_severity_to_page_and_ticket_grouped_by_alert_and_service():
    config = yaml.safe_load(am.render_alertmanager_config(routing()))
    route = config["route"]
    assert route["receiver"] == "ticket"
    assert route["group_by"] == ["alertname", "service"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == (
        "30s", "5m", "4h",
    )  # fmt: skip
    assert route["routes"] == [
        {"receiver": "page", "matchers": ['severity="critical"'], "repeat_interval": "1h"},
        {"receiver": "ticket", "matchers": ['severity="warning"']},
    ]
    assert [r["name"] for r in config["receivers"]] == ["page", "ticket"]


def test_mail_goes_through_the_environment_smtp_server_without_tls_locally():
    config = yaml.safe_load(am.render_alertmanager_config(routing()))
    assert config["global"] == {
        "resolve_timeout": "5m",
        "smtp_smarthost": "mailsink:1025",
        "smtp_from": "alerts@example.test",
        "smtp_require_tls": False,
    }
    for receiver in config["receivers"]:
        (email,) = receiver["email_configs"]
        assert email["to"] == "oncall@example.test" and email["send_resolved"] is True
        assert email["headers"]["Subject"].startswith(f"[{receiver['name']}] ")


def test_without_a_webhook_the_receivers_have_no_webhook_integration():
    config = yaml.safe_load(am.render_alertmanager_config(routing()))
    assert all(set(r) == {"name", "email_configs"} for r in config["receivers"])
    assert am.alertmanager_secret_files(routing()) == {}


def test_with_a_webhook_both_receivers_read_its_url_from_a_file():
    url = fake_webhook_url()
    text = am.render_alertmanager_config(routing(webhook_url=url))
    assert url not in text
    for receiver in yaml.safe_load(text)["receivers"]:
        (slack,) = receiver["slack_configs"]
        assert slack["api_url_file"] == "/etc/alertmanager/secrets/notify_webhook_url"
        assert "api_url" not in slack
        assert slack["send_resolved"] is True
        assert slack["title"].startswith(f"[{receiver['name']}] ")
        assert "{{ .Annotations.runbook }}" in slack["text"]
    assert am.alertmanager_secret_files(routing(webhook_url=url)) == {
        "secrets/notify_webhook_url": url
    }


def test_smtp_login_reads_the_password_from_a_file():
    password = secrets.token_urlsafe(16)
    r = routing(smtp_username="alerts", smtp_password=password, smtp_require_tls=True)
    text = am.render_alertmanager_config(r)
    assert password not in text
    config = yaml.safe_load(text)["global"]
    assert config["smtp_auth_username"] == "alerts"
    assert config["smtp_auth_password_file"] == "/etc/alertmanager/secrets/smtp_password"
    assert config["smtp_require_tls"] is True
    assert am.alertmanager_secret_files(r) == {"secrets/smtp_password": password}


def test_inhibition_host_down_and_data_stores_down():
    config = yaml.safe_load(am.render_alertmanager_config(routing()))
    host, stores = config["inhibit_rules"]
    assert host == {
        "source_matchers": ['alertname="HostDown"', 'host=~".+"'],
        "target_matchers": ['alertname!="HostDown"'],
        "equal": ["host"],
    }
    assert stores["target_matchers"] == ['alertname="ServiceNotReady"']
    assert stores["equal"] == ["dependency"]
    # The store alerts named by the inhibition are exactly those carrying a `dependency` label,
    # and each label is a name the services' dependency_up gauge uses.
    (matcher,) = stores["source_matchers"]
    named = set(re.fullmatch(r'alertname=~"(.*)"', matcher).group(1).split("|"))
    labelled = {
        name: rule["labels"]["dependency"]
        for name, rule in rules_by_name(DEFAULTS).items()
        if "dependency" in rule["labels"]
    }
    assert named == set(labelled)
    assert set(labelled.values()) == {"postgresql", "redis", "rabbitmq"}


def test_the_secrets_never_show_in_repr_or_the_summary():
    url, password = fake_webhook_url(), secrets.token_urlsafe(16)
    r = routing(webhook_url=url, smtp_username="alerts", smtp_password=password)
    shown = repr(r) + repr(am.describe_routing(r)) + am.render_alertmanager_config(r)
    assert url not in shown and password not in shown
    assert am.describe_routing(r) == [
        {
            "severity": "critical", "receiver": "page", "repeat": "1h",
            "integrations": "e-mail to oncall@example.test via mailsink:1025; "
            "webhook (NOTIFY_WEBHOOK_URL)",
        },
        {
            "severity": "warning", "receiver": "ticket", "repeat": "4h",
            "integrations": "e-mail to oncall@example.test via mailsink:1025; "
            "webhook (NOTIFY_WEBHOOK_URL)",
        },
    ]  # fmt: skip


def test_written_files_are_private_and_an_unset_webhook_leaves_no_file(tmp_path: Path):
    url = fake_webhook_url()
    written = am.write_alertmanager(routing(webhook_url=url), tmp_path)
    assert written == [tmp_path / "alertmanager.yml", tmp_path / "secrets/notify_webhook_url"]
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (tmp_path / "secrets/notify_webhook_url").read_text() == url  # no newline
    assert am.write_alertmanager(routing(), tmp_path) == [tmp_path / "alertmanager.yml"]
    assert not (tmp_path / "secrets/notify_webhook_url").exists()


def test_routing_from_the_local_environment(tree: Path):
    (tree / "environments" / "test" / "config.env").write_text(
        "SMTP_HOST=mailsink\nSMTP_PORT=1025\n"
    )
    r = am.alertmanager_routing(config_with(tree))
    assert (r.smtp_smarthost, r.smtp_require_tls, r.webhook_url) == ("mailsink:1025", False, None)
    assert r.email_to == "oncall@my-saas-chat.local"
    assert r.email_from == "no-reply@my-saas-chat.local"
    url = fake_webhook_url()
    r = am.alertmanager_routing(
        config_with(tree, SMTP_STARTTLS="true", NOTIFY_WEBHOOK_URL=url, ALERT_GROUP_WAIT="10s")
    )
    assert (r.smtp_require_tls, r.webhook_url, r.group_wait) == (True, url, "10s")


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({"ALERT_GROUP_WAIT": "half a minute"}, "ALERT_GROUP_WAIT"),
        ({"ALERT_PAGE_REPEAT_INTERVAL": "0m"}, "ALERT_PAGE_REPEAT_INTERVAL"),
        ({"ALERT_EMAIL_TO": "oncall"}, "ALERT_EMAIL_TO"),
        ({"SMTP_PORT": "smtp"}, "SMTP_PORT"),
        ({"SMTP_USERNAME": "alerts"}, "SMTP_PASSWORD"),
    ],
)
def test_bad_routing_settings_name_the_variable(tree: Path, values: dict, names: str):
    with pytest.raises(ConfigError) as caught:
        am.alertmanager_routing(config_with(tree, **values))
    assert names in caught.value.one_line() and "\n" not in caught.value.one_line()


def test_a_webhook_that_is_no_url_is_refused_without_showing_it(tree: Path):
    value = "not-a-url-" + secrets.token_hex(8)
    with pytest.raises(ConfigError) as caught:
        am.alertmanager_routing(config_with(tree, NOTIFY_WEBHOOK_URL=value))
    assert "NOTIFY_WEBHOOK_URL" in caught.value.one_line()
    assert value not in caught.value.one_line()


# --- commands ---------------------------------------------------------------------------------


def test_promtool_argv_on_path_and_in_the_image():
    folder = Path("/tmp/check")
    assert promtool_check_rules_argv(None, folder, ["rules/a.yml", "rules/b.yml"]) == (
        "promtool", "check", "rules", "/tmp/check/rules/a.yml", "/tmp/check/rules/b.yml",
    )  # fmt: skip
    assert promtool_test_argv("img:1", folder, ["tests/a.test.yml"]) == (
        "docker", "run", "--rm", "--network", "none",
        "--volume", "/tmp/check:/rules-check:ro", "--entrypoint", "promtool",
        "img:1", "test", "rules", "/rules-check/tests/a.test.yml",
    )  # fmt: skip
    assert promtool_check_rules_argv("img:1", folder, ["rules/a.yml"])[-3:] == (
        "check", "rules", "/rules-check/rules/a.yml",
    )  # fmt: skip


def test_amtool_argv():
    folder = Path("/tmp/am")
    assert am.amtool_check_config_argv("am:1", folder) == (
        "docker", "run", "--rm", "--network", "none",
        "--volume", "/tmp/am:/alertmanager-check:ro", "--entrypoint", "amtool",
        "am:1", "check-config", "/alertmanager-check/alertmanager.yml",
    )  # fmt: skip
    assert am.amtool_route_argv(
        "am:1", folder, {"severity": "critical", "alertname": "X"}, "page", user="1000:1000"
    ) == (
        "docker", "run", "--rm", "--network", "none", "--user", "1000:1000",
        "--volume", "/tmp/am:/alertmanager-check:ro", "--entrypoint", "amtool",
        "am:1", "config", "routes", "test",
        "--config.file=/alertmanager-check/alertmanager.yml", "--verify.receivers=page",
        "alertname=X", "severity=critical",
    )  # fmt: skip
