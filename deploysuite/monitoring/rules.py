"""Prometheus's alert rules: the thresholds an environment sets, the rule files rendered from
prometheus/rules/*.yml.j2 with them, and the promtool commands that check and unit-test them.

`render_rules` is pure (thresholds in, file contents out). The unit tests of the rules live in
prometheus/tests/*.test.yml and are written against the rules rendered with the default
thresholds (`AlertThresholds()`); `write_rule_check_folder` lays rules and tests out the way the
tests name them:

    <folder>/rules/<group>.yml        rendered rules (the tests load ../rules/<group>.yml)
    <folder>/tests/<group>.test.yml   copies of prometheus/tests/

What the rules expect of the scrape configuration (prometheus.yml):
- jobs `services` (every service's /metrics, with a `service` label naming it), `node`
  (node-exporter, textfile collector included), `postgres` (postgres_exporter), `redis`
  (redis_exporter), `rabbitmq` (the broker's rabbitmq_prometheus plugin on :15692), `blackbox`
  (blackbox_exporter probes of the public URL), `backup` (the backup service's agent),
  `alertmanager`, `prometheus`;
- `global.external_labels.env` set to the environment's name: every runbook names it;
- a `host` label on each target naming the machine it runs on, for HostDown's inhibition.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from deploysuite.config.layers import Config
from deploysuite.core.commands import Argv
from deploysuite.core.errors import ConfigError
from deploysuite.monitoring.templates import (
    PROMETHEUS_DIR,
    check_duration,
    promql_number,
    template_environment,
)

RULES_SUBDIR = "rules"
TESTS_SUBDIR = "tests"
RULE_TESTS_DIR = PROMETHEUS_DIR / TESTS_SUBDIR
TEST_SUFFIX = ".test.yml"
SEVERITIES = ("critical", "warning")
ANNOTATIONS = ("summary", "description", "runbook")
# Where promtool sees the check folder inside its container.
CHECK_MOUNT = PurePosixPath("/rules-check")

# The variable each threshold comes from. The backup objectives are the backup service's own
# (its healthcheck judges the same numbers), so the alert and `inv status` never disagree.
VARIABLES: Mapping[str, str] = {
    "rpo_hours": "BACKUP_RPO_HOURS",
    "wal_lag_seconds": "WAL_MAX_LAG_SECONDS",
    "http_5xx_ratio": "ALERT_HTTP_5XX_RATIO",
    "http_min_requests_per_second": "ALERT_HTTP_MIN_REQUESTS_PER_SECOND",
    "http_p99_seconds": "ALERT_HTTP_P99_SECONDS",
    "postgres_connections_ratio": "ALERT_POSTGRES_CONNECTIONS_RATIO",
    "rabbitmq_ready_messages": "ALERT_RABBITMQ_READY_MESSAGES",
    "cert_expiry_days": "ALERT_CERT_EXPIRY_DAYS",
    "disk_full_horizon_hours": "ALERT_DISK_FULL_HORIZON_HOURS",
}
# The `for:` windows an environment may set (the others are the rules' own).
FOR_VARIABLES: Mapping[str, str] = {
    "backup_age_for": "ALERT_BACKUP_AGE_FOR",
    "cert_expiry_for": "ALERT_CERT_EXPIRY_FOR",
}
RATIOS = ("http_5xx_ratio", "postgres_connections_ratio")
# 0 is a meaningful minimum request rate (alert on any traffic); every other threshold of 0
# would fire for ever or never.
MAY_BE_ZERO = ("http_min_requests_per_second",)


@dataclass(frozen=True)
class AlertThresholds:
    """What makes an alert fire. Validated on construction, so an instance always renders rules
    Prometheus loads; the `*_for` fields are how long a condition must hold before it fires."""

    # Newest verified backup older than this: BackupTooOld (the environment's RPO).
    rpo_hours: float = 6.0
    # Oldest WAL segment waiting in the backup service's spool: WalShippingBehind.
    wal_lag_seconds: float = 900.0
    # Share of a service's requests answered 5xx over 5 minutes: High5xxRatio.
    http_5xx_ratio: float = 0.05
    # Below this many requests per second a ratio means little: one failure of two requests
    # must not page. 0.2/s is 60 requests in the 5-minute window.
    http_min_requests_per_second: float = 0.2
    # 99th percentile of a service's request duration: HighLatencyP99.
    http_p99_seconds: float = 1.0
    # Connections in use as a share of max_connections: PostgresConnectionsNearMax.
    postgres_connections_ratio: float = 0.8
    # Messages ready in the broker's queues (and still growing): RabbitMQBacklogGrowing.
    rabbitmq_ready_messages: float = 1000.0
    # Days before the edge certificate expires: CertificateExpiringSoon. Certbot renews 30 days
    # ahead, so 14 days left means renewal has failed for two weeks.
    cert_expiry_days: float = 14.0
    # A filesystem predicted to be full within this many hours: DiskFillingUp.
    disk_full_horizon_hours: float = 24.0
    # One missed scrape is a restart; a minute of them is an outage.
    service_down_for: str = "1m"
    # Health probes run every few seconds; two minutes rides out a dependency's restart.
    service_not_ready_for: str = "2m"
    http_errors_for: str = "5m"
    latency_for: str = "10m"
    datastore_down_for: str = "1m"
    host_down_for: str = "2m"
    endpoint_down_for: str = "2m"
    # The backup's age past the RPO (ALERT_BACKUP_AGE_FOR) and the certificate's expiry
    # (ALERT_CERT_EXPIRY_FOR): slow conditions, which a few minutes of confirmation cost nothing.
    backup_age_for: str = "5m"
    cert_expiry_for: str = "10m"

    def __post_init__(self) -> None:
        for name, variable in VARIABLES.items():
            _check_threshold(
                variable, getattr(self, name), ratio=name in RATIOS, zero_ok=name in MAY_BE_ZERO
            )
        for item in fields(self):
            if item.name.endswith("_for"):
                variable = FOR_VARIABLES.get(item.name, f"AlertThresholds.{item.name}")
                check_duration(
                    getattr(self, item.name), variable, f"set {variable} to a duration such as 5m"
                )


def _check_threshold(variable: str, value: object, *, ratio: bool, zero_ok: bool) -> None:
    floor = "0 or more" if zero_ok else "more than 0"
    fix = f"set {variable} to a number, {floor}" + (" and at most 1" if ratio else "")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{variable}={value!r} is not a finite number", fix)
    shown = f"{variable}={promql_number(value)}"
    if value < 0 or (value == 0 and not zero_ok):
        raise ConfigError(f"{shown} must be {floor}", fix)
    if ratio and value > 1:
        raise ConfigError(f"{shown} is a share and cannot exceed 1 (0.05 means 5%)", fix)


def alert_thresholds(config: Config) -> AlertThresholds:
    """The environment's thresholds; a variable that is not set keeps the default."""
    defaults = AlertThresholds()

    def env_number(key: str, default: float) -> float:
        raw = config.get(key)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(
                f"{key}={raw!r} is not a number",
                f"set {key} to a number such as {promql_number(default)} "
                f"in {config.paths.env_config}",
            ) from None

    return AlertThresholds(
        rpo_hours=env_number("BACKUP_RPO_HOURS", defaults.rpo_hours),
        wal_lag_seconds=env_number("WAL_MAX_LAG_SECONDS", defaults.wal_lag_seconds),
        http_5xx_ratio=env_number("ALERT_HTTP_5XX_RATIO", defaults.http_5xx_ratio),
        http_min_requests_per_second=env_number(
            "ALERT_HTTP_MIN_REQUESTS_PER_SECOND", defaults.http_min_requests_per_second
        ),
        http_p99_seconds=env_number("ALERT_HTTP_P99_SECONDS", defaults.http_p99_seconds),
        postgres_connections_ratio=env_number(
            "ALERT_POSTGRES_CONNECTIONS_RATIO", defaults.postgres_connections_ratio
        ),
        rabbitmq_ready_messages=env_number(
            "ALERT_RABBITMQ_READY_MESSAGES", defaults.rabbitmq_ready_messages
        ),
        cert_expiry_days=env_number("ALERT_CERT_EXPIRY_DAYS", defaults.cert_expiry_days),
        disk_full_horizon_hours=env_number(
            "ALERT_DISK_FULL_HORIZON_HOURS", defaults.disk_full_horizon_hours
        ),
        backup_age_for=config.get("ALERT_BACKUP_AGE_FOR") or defaults.backup_age_for,
        cert_expiry_for=config.get("ALERT_CERT_EXPIRY_FOR") or defaults.cert_expiry_for,
    )


def render_rules(
    thresholds: AlertThresholds, templates_dir: Path = PROMETHEUS_DIR
) -> dict[str, str]:
    """Rule file name -> content, one file per group (same thresholds, same bytes).

    Each `rules/<group>.yml.j2` under templates_dir renders to `<group>.yml`.
    """
    env = template_environment(templates_dir)
    context = {
        "t": thresholds,
        # The environment's name, from Prometheus's external labels: each environment runs its
        # own Prometheus, so the rules stay the same text everywhere.
        "env": "{{ $externalLabels.env }}",
    }
    files: dict[str, str] = {}
    prefix = f"{RULES_SUBDIR}/"
    for name in sorted(env.list_templates(extensions=["j2"])):
        if name.startswith(prefix) and name.endswith(".yml.j2"):
            files[name.removeprefix(prefix).removesuffix(".j2")] = env.get_template(name).render(
                context
            )
    if not files:
        raise ConfigError(
            f"no rule templates under {templates_dir / RULES_SUBDIR}",
            "git checkout -- prometheus/rules",
        )
    return files


def alert_rules(files: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every alerting rule of the rendered files, in file and group order."""
    rules: list[dict[str, Any]] = []
    for name in sorted(files):
        document = yaml.safe_load(files[name]) or {}
        for group in document.get("groups") or ():
            rules += [r for r in group.get("rules") or () if "alert" in r]
    return rules


def alert_names(files: Mapping[str, str]) -> list[str]:
    return [rule["alert"] for rule in alert_rules(files)]


def rule_test_files(tests_dir: Path = RULE_TESTS_DIR) -> dict[str, str]:
    """Test file name -> content of the rules' unit tests."""
    return {
        path.name: path.read_text(encoding="utf-8")
        for path in sorted(tests_dir.glob(f"*{TEST_SUFFIX}"))
    }


def firing_test_cases(tests: Mapping[str, str]) -> dict[str, int]:
    """Alert name -> how many test cases expect it to fire (an `exp_alerts` that is not empty)."""
    counts: dict[str, int] = {}
    for text in tests.values():
        document = yaml.safe_load(text) or {}
        for test in document.get("tests") or ():
            for case in test.get("alert_rule_test") or ():
                if case.get("exp_alerts"):
                    counts[case["alertname"]] = counts.get(case["alertname"], 0) + 1
    return counts


def write_rule_check_folder(
    folder: Path, rules: Mapping[str, str], tests: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """Writes the rendered rules and their tests where the tests look for them; returns the
    (rule files, test files) relative to folder. Readable by anyone: promtool runs as nobody in
    the Prometheus image, and neither holds a secret."""
    out: tuple[list[str], list[str]] = ([], [])
    for subdir, files, listed in ((RULES_SUBDIR, rules, out[0]), (TESTS_SUBDIR, tests, out[1])):
        target = folder / subdir
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for name, content in sorted(files.items()):
            if PurePosixPath(name).name != name:
                raise ValueError(f"rule or test file {name!r} must be a plain file name")
            (target / name).write_text(content, encoding="utf-8")
            os.chmod(target / name, 0o644)
            listed.append(f"{subdir}/{name}")
        os.chmod(target, 0o755)
    os.chmod(folder, 0o755)
    return out


def _promtool(image: str | None, folder: Path, args: Sequence[str], files: Sequence[str]) -> Argv:
    if image is None:
        return ("promtool", *args, *(str(folder / f) for f in files))
    # Offline and read-only: the check needs nothing but the files.
    return (
        "docker", "run", "--rm", "--network", "none",
        "--volume", f"{folder}:{CHECK_MOUNT}:ro",
        "--entrypoint", "promtool",
        image, *args, *(str(CHECK_MOUNT / f) for f in files),
    )  # fmt: skip


def promtool_check_rules_argv(image: str | None, folder: Path, rule_files: Sequence[str]) -> Argv:
    """`promtool check rules` on rule files under folder: promtool on PATH when image is None,
    else the image's, on the folder mounted read-only."""
    return _promtool(image, folder, ("check", "rules"), rule_files)


def promtool_test_argv(image: str | None, folder: Path, test_files: Sequence[str]) -> Argv:
    """`promtool test rules` on test files under folder (laid out by write_rule_check_folder)."""
    return _promtool(image, folder, ("test", "rules"), test_files)
