"""The monitoring files a release mounts, as data: the release's prometheus.yml derived from the
hand-kept base, the blackbox module, the exporter's PostgreSQL role, which containers re-read
what changed, and the writer's file modes."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest
import yaml

from deploysuite.config.layers import load_config
from deploysuite.core.errors import ConfigError
from deploysuite.monitoring.deploymetrics import (
    deploy_metrics,
    read_deploy_metrics_argv,
    write_deploy_metrics_script,
)
from deploysuite.monitoring.stack import (
    BASE_CONFIG,
    MonitoringSettings,
    blackbox_config,
    monitoring_files,
    monitoring_role_argv,
    monitoring_role_sql,
    prometheus_config,
    readers_of,
    write_monitoring_files,
)

REPO = Path(__file__).resolve().parents[2]
BASE = BASE_CONFIG.read_text(encoding="utf-8")


def jobs(text: str) -> dict[str, dict]:
    return {job["job_name"]: job for job in yaml.safe_load(text)["scrape_configs"]}


def test_without_the_profile_the_rules_load_but_nothing_is_paged_or_scraped_beyond_the_base():
    config = yaml.safe_load(prometheus_config(BASE, MonitoringSettings("staging", "app1", ())))
    assert config["global"]["external_labels"] == {"env": "staging"}
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert "alerting" not in config
    assert list(jobs(prometheus_config(BASE, MonitoringSettings("staging", "app1", ())))) == [
        "prometheus", "services",
    ]  # fmt: skip


def test_services_carry_their_service_and_host_labels():
    services = jobs(prometheus_config(BASE, MonitoringSettings("local", "vm", ())))["services"]
    assert services["static_configs"][0]["labels"] == {"host": "vm"}
    assert "chat:8000" in services["static_configs"][0]["targets"]
    assert services["relabel_configs"] == [{
        "source_labels": ["__address__"], "regex": "([^:]+):.*", "target_label": "service",
        "replacement": "$1",
    }]  # fmt: skip


def test_the_monitoring_profile_adds_every_exporter_alertmanager_and_the_probe():
    s = MonitoringSettings("local", "vm", ("local-mail", "monitoring", "backup"), "5s")
    text = prometheus_config(BASE, s)
    config = yaml.safe_load(text)
    assert config["global"]["scrape_interval"] == config["global"]["evaluation_interval"] == "5s"
    assert config["alerting"] == {
        "alertmanagers": [{"static_configs": [{"targets": ["alertmanager:9093"]}]}]
    }
    found = jobs(text)
    assert set(found) == {"prometheus", "services", "backup", "node", "postgres", "redis",
                          "nginx", "rabbitmq", "alertmanager", "blackbox"}  # fmt: skip
    assert found["rabbitmq"]["static_configs"][0]["targets"] == ["rabbitmq:15692"]
    assert found["backup"]["static_configs"][0]["targets"] == ["backup:9187"]
    blackbox = found["blackbox"]
    assert blackbox["params"] == {"module": ["https_ready"]}
    assert blackbox["static_configs"][0]["targets"] == ["https://nginx:443/health"]
    assert {"target_label": "__address__", "replacement": "blackbox-exporter:9115"} in blackbox[
        "relabel_configs"
    ]


def test_a_base_without_the_services_job_is_a_clear_error():
    with pytest.raises(ConfigError, match="no `services` job"):
        prometheus_config("scrape_configs: []\n", MonitoringSettings("x", "h", ()))
    with pytest.raises(ConfigError, match="no scrape_configs list"):
        prometheus_config("global: {}\n", MonitoringSettings("x", "h", ()))


def test_the_probe_trusts_the_stacks_own_ca_only_when_it_has_one():
    own = yaml.safe_load(blackbox_config("localhost", True))["modules"]["https_ready"]
    assert own["http"]["tls_config"] == {
        "server_name": "localhost", "ca_file": "/etc/blackbox_exporter/ca.pem",
    }  # fmt: skip
    assert own["http"]["headers"] == {"Host": "localhost"}
    assert own["http"]["fail_if_not_ssl"] is True
    public = yaml.safe_load(blackbox_config("chat.example.com", False))["modules"]["https_ready"]
    assert public["http"]["tls_config"] == {"server_name": "chat.example.com"}


def test_the_exporter_role_reads_statistics_only_and_its_password_is_quoted():
    sql = monitoring_role_sql("monitoring", "it's")
    assert sql.splitlines() == [
        "SELECT 'CREATE ROLE \"monitoring\"' WHERE NOT EXISTS "
        "(SELECT FROM pg_roles WHERE rolname = 'monitoring')\\gexec",
        'ALTER ROLE "monitoring" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
        "PASSWORD 'it''s';",
        'GRANT pg_monitor TO "monitoring";',
    ]
    with pytest.raises(ConfigError):
        monitoring_role_sql('x"; DROP ROLE postgres; --', "p")


def test_the_role_is_set_through_psql_in_the_postgres_container_never_with_the_password():
    argv = monitoring_role_argv("p1", [Path("/r/docker-compose.prod.yml")], ("monitoring",), "pg")
    assert argv == (
        "docker", "compose", "--project-name", "p1", "--file", "/r/docker-compose.prod.yml",
        "--profile", "monitoring", "exec", "-T", "postgres", "psql", "--quiet", "--no-psqlrc",
        "-v", "ON_ERROR_STOP=1", "--username", "pg", "--dbname", "postgres",
    )  # fmt: skip


def test_changed_files_name_the_containers_that_must_read_them_again():
    assert readers_of([]) == []
    assert readers_of(["prometheus/rules/services.yml", "prometheus/prometheus.yml"]) == [
        "prometheus"
    ]
    assert readers_of([
        "prometheus/alertmanager/alertmanager.yml", "prometheus/blackbox/ca.pem",
    ]) == ["alertmanager", "blackbox-exporter"]  # fmt: skip


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    shutil.copy(REPO / ".env.example", tmp_path / ".env.example")
    (tmp_path / "environments" / "test").mkdir(parents=True)
    (tmp_path / "environments" / "test" / "config.env").write_text("")
    return tmp_path


def test_release_files_hold_the_webhook_only_in_its_secret_file(tree: Path):
    hook = "https://hooks.example.test/services/T0/B0/abcdef"
    config = load_config("test", root=tree, process_env={}, cli={
        "COMPOSE_PROFILES": "monitoring", "NOTIFY_WEBHOOK_URL": hook,
    })  # fmt: skip
    files = monitoring_files(config, "app1", "localhost", b"CA")
    assert files["prometheus/alertmanager/secrets/notify_webhook_url"] == hook.encode()
    public = {k: v for k, v in files.items() if "/secrets/" not in k}
    assert all(hook.encode() not in v for v in public.values())
    assert files["prometheus/blackbox/ca.pem"] == b"CA"
    assert {"prometheus/prometheus.yml", "prometheus/rules/services.yml",
            "prometheus/alertmanager/alertmanager.yml"} <= set(files)  # fmt: skip
    plain = monitoring_files(load_config("test", root=tree, process_env={}, cli={}), "a", "l", None)
    assert not any(
        k.startswith(("prometheus/alertmanager/", "prometheus/blackbox/")) for k in plain
    )


def test_the_writer_keeps_secrets_private_reports_changes_and_removes_leftovers(tmp_path: Path):
    files = {
        "prometheus/prometheus.yml": b"global: {}\n",
        "prometheus/alertmanager/secrets/notify_webhook_url": b"https://hook",
    }
    assert sorted(write_monitoring_files(files, tmp_path)) == sorted(files)
    secret = tmp_path / "prometheus/alertmanager/secrets/notify_webhook_url"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "prometheus/prometheus.yml").stat().st_mode) == 0o644
    assert write_monitoring_files(files, tmp_path) == []  # nothing changed
    left = {"prometheus/prometheus.yml": b"global: {}\n"}
    assert write_monitoring_files(left, tmp_path) == [
        "prometheus/alertmanager/secrets/notify_webhook_url"
    ]
    assert not secret.exists()


def test_the_deploy_textfile_keeps_every_environment_and_records_rollbacks():
    first = deploy_metrics("", "staging", "deployed", 100.0)
    second = deploy_metrics(first, "staging", "rolled back", 200.0)
    third = deploy_metrics(second + "garbage line\n", 'pro"d', "deployed", 300.0)
    samples = [line for line in third.splitlines() if not line.startswith("#")]
    assert samples == [
        'deploysuite_last_deploy_timestamp_seconds{env="pro\\"d",outcome="deployed"} 300.000',
        'deploysuite_last_deploy_timestamp_seconds{env="staging",outcome="deployed"} 100.000',
        'deploysuite_last_deploy_timestamp_seconds{env="staging",outcome="rolled back"} 200.000',
        'deploysuite_last_rollback_timestamp_seconds{env="staging"} 200.000',
    ]
    assert deploy_metrics(third, 'pro"d', "deployed", 300.0) == third  # escaping round-trips
    assert "# TYPE deploysuite_last_rollback_timestamp_seconds gauge" in first


def test_the_textfile_is_replaced_through_a_rename_and_read_without_failing_when_absent():
    assert write_deploy_metrics_script("/srv/staging/metrics") == (
        "sh", "-c", 'set -e; mkdir -p -m 0755 "$1"; t=$(mktemp "$1/.deploysuite.XXXXXX"); '
        'cat > "$t"; chmod 0644 "$t"; mv "$t" "$1/deploysuite.prom"', "sh",
        "/srv/staging/metrics",
    )  # fmt: skip
    assert read_deploy_metrics_argv("/m")[-1] == "/m"


def test_the_monitoring_docs_list_every_alert_the_rules_define():
    from deploysuite.monitoring.rules import AlertThresholds, alert_names, render_rules

    doc = (REPO / "docs" / "deployment" / "monitoring.md").read_text(encoding="utf-8")
    missing = [n for n in alert_names(render_rules(AlertThresholds())) if f"| {n} |" not in doc]
    assert missing == []
