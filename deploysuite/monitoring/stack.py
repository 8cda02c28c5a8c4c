"""What the stack's monitoring reads, as files: Prometheus's configuration, its alert rules and
Alertmanager's routing, rendered from the environment for one release.

prometheus/prometheus.yml stays the hand-kept base (checked by `promtool check config` in CI and
baked into the Prometheus image); `prometheus_config` derives the release's copy from it: the
environment as an external label (the rules' runbooks name it), every service target labelled
with its `service` and `host`, the rule files, and, with the `monitoring` compose profile, the
exporters' and Alertmanager's jobs and Alertmanager as the place alerts go. Without the profile
the rules are still evaluated (`inv alerts` reads them from Prometheus), nobody is paged.

`monitoring_files` is pure: relative path -> bytes, for the local build folder, a remote
release or a Swarm's configs alike. Paths under `alertmanager/secrets/` are secrets.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from deploysuite.backup.postgres import ident, literal
from deploysuite.config.layers import Config
from deploysuite.core import commands
from deploysuite.core.commands import Argv
from deploysuite.core.errors import ConfigError
from deploysuite.engines.stack import compose_profiles
from deploysuite.monitoring import alertmanager as am
from deploysuite.monitoring.rules import alert_thresholds, render_rules
from deploysuite.monitoring.templates import PROMETHEUS_DIR, check_duration

PROFILE = "monitoring"
# nginx's stub_status: an alias nginx has on the monitoring network only (docker-compose.prod.yml)
NGINX_STATUS_LISTEN = "nginx-status:8081"
BASE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES_MOUNT = "/etc/prometheus/rules"
SCRAPE_INTERVAL = "15s"
# Exporters of the `monitoring` profile: job -> (compose service, port, metrics path).
EXPORTER_JOBS: Mapping[str, tuple[str, int, str]] = {
    "node": ("node-exporter", 9100, "/metrics"),
    "postgres": ("postgres-exporter", 9187, "/metrics"),
    "redis": ("redis-exporter", 9121, "/metrics"),
    "nginx": ("nginx-exporter", 9113, "/metrics"),
    "rabbitmq": ("rabbitmq", 15692, "/metrics"),
    "alertmanager": ("alertmanager", 9093, "/metrics"),
}
BACKUP_JOB = ("backup", 9187, "/metrics")
BLACKBOX = ("blackbox-exporter", 9115)


@dataclass(frozen=True)
class MonitoringSettings:
    env: str
    host: str  # the machine the stack runs on: every target's `host` label (HostDown inhibits)
    profiles: tuple[str, ...]
    scrape_interval: str = SCRAPE_INTERVAL
    # What the blackbox exporter probes: nginx's HTTPS port inside the stack, under the public
    # name its certificate carries.
    probe_url: str = "https://nginx:443/health"

    @property
    def alerting(self) -> bool:
        return PROFILE in self.profiles

    @property
    def backup(self) -> bool:
        return "backup" in self.profiles


def monitoring_enabled(config: Config) -> bool:
    return PROFILE in compose_profiles(config)


def monitoring_settings(config: Config, host: str) -> MonitoringSettings:
    profiles = compose_profiles(config)
    interval = check_duration(
        config.get("PROMETHEUS_SCRAPE_INTERVAL") or SCRAPE_INTERVAL,
        "PROMETHEUS_SCRAPE_INTERVAL",
        "a Prometheus duration such as 15s or 1m",
    )
    return MonitoringSettings(config.env, host, profiles, interval)


def _static(job: str, targets: Sequence[str], host: str, **extra: Any) -> dict[str, Any]:
    return {"job_name": job, **extra,
            "static_configs": [{"targets": list(targets), "labels": {"host": host}}]}  # fmt: skip


def prometheus_config(base_text: str, s: MonitoringSettings) -> str:
    """The release's prometheus.yml from the hand-kept base (see the module's docstring)."""
    base = yaml.safe_load(base_text)
    if not isinstance(base, dict) or not isinstance(base.get("scrape_configs"), list):
        raise ConfigError(f"{BASE_CONFIG}: no scrape_configs list", "git checkout -- prometheus")
    jobs = {job["job_name"]: job for job in base["scrape_configs"]}
    if "services" not in jobs:
        raise ConfigError(f"{BASE_CONFIG}: no `services` job", "git checkout -- prometheus")
    config: dict[str, Any] = {
        "global": {
            **base.get("global", {}),
            "scrape_interval": s.scrape_interval,
            "evaluation_interval": s.scrape_interval,
            "external_labels": {"env": s.env},
        },
        "rule_files": [f"{RULES_MOUNT}/*.yml"],
    }
    scrape: list[dict[str, Any]] = []
    for job in base["scrape_configs"]:
        job = {**job, "static_configs": [
            {**group, "labels": {**group.get("labels", {}), "host": s.host}}
            for group in job.get("static_configs", [])
        ]}  # fmt: skip
        if job["job_name"] == "services":
            # `service` from the target's host part (chat:8000 -> chat): what the rules group by
            job["relabel_configs"] = [{"source_labels": ["__address__"], "regex": "([^:]+):.*",
                                       "target_label": "service", "replacement": "$1"}]  # fmt: skip
        scrape.append(job)
    if s.backup:
        name, port, path = BACKUP_JOB
        scrape.append(_static("backup", [f"{name}:{port}"], s.host, metrics_path=path))
    if s.alerting:
        for job, (name, port, path) in EXPORTER_JOBS.items():
            scrape.append(_static(job, [f"{name}:{port}"], s.host, metrics_path=path))
        name, port = BLACKBOX
        scrape.append({
            "job_name": "blackbox", "metrics_path": "/probe", "params": {"module": ["https_ready"]},
            "static_configs": [{"targets": [s.probe_url], "labels": {"host": s.host}}],
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": f"{name}:{port}"},
            ],
        })  # fmt: skip
        config["alerting"] = {"alertmanagers": [{"static_configs": [
            {"targets": [f"alertmanager:{EXPORTER_JOBS['alertmanager'][1]}"]}]}]}  # fmt: skip
    config["scrape_configs"] = scrape
    header = (
        "# Rendered by inv deploy from prometheus/prometheus.yml for environment "
        f"'{s.env}'; edit the base or the environment, not this file.\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def blackbox_config(server_name: str, own_ca: bool) -> str:
    """The blackbox exporter's one module: HTTPS to nginx under the public name, so an expired
    or wrong certificate fails the probe and its expiry is a metric. `own_ca`: the stack's CA
    (mounted at /etc/blackbox_exporter/ca.pem) is trusted, else the system's."""
    tls: dict[str, Any] = {"server_name": server_name}
    if own_ca:
        tls["ca_file"] = "/etc/blackbox_exporter/ca.pem"
    module = {
        "prober": "http",
        "timeout": "5s",
        "http": {
            "valid_status_codes": [200],
            "fail_if_not_ssl": True,
            "headers": {"Host": server_name},
            "tls_config": tls,
        },
    }
    return yaml.safe_dump({"modules": {"https_ready": module}}, sort_keys=False)


def monitoring_files(
    config: Config, host: str, server_name: str, ca_pem: bytes | None
) -> dict[str, bytes]:
    """prometheus/... relative path -> bytes of everything the monitoring containers mount."""
    s = monitoring_settings(config, host)
    files = {
        "prometheus.yml": prometheus_config(BASE_CONFIG.read_text(encoding="utf-8"), s).encode(),
    }
    for name, text in render_rules(alert_thresholds(config)).items():
        files[f"rules/{name}"] = text.encode()
    if s.alerting:
        routing = am.alertmanager_routing(config)
        files[f"alertmanager/{am.CONFIG_FILE}"] = am.render_alertmanager_config(routing).encode()
        for name, value in am.alertmanager_secret_files(routing).items():
            files[f"alertmanager/{name}"] = value.encode()
        files["blackbox/config.yml"] = blackbox_config(server_name, ca_pem is not None).encode()
        if ca_pem is not None:
            files["blackbox/ca.pem"] = ca_pem
    return {f"prometheus/{name}": data for name, data in files.items()}


def is_secret_file(path: str) -> bool:
    return path.startswith(f"prometheus/alertmanager/{am.SECRETS_SUBDIR}/")


# First folder under prometheus/ -> the container that reads it: a change there recreates it.
READERS = {"prometheus.yml": "prometheus", "rules": "prometheus", "alertmanager": "alertmanager",
           "blackbox": "blackbox-exporter"}  # fmt: skip


def readers_of(changed: Iterable[str]) -> list[str]:
    """The services whose mounted files changed (relative paths as monitoring_files names
    them), in a stable order. prometheus.yml is a single-file bind mount: a replaced file is
    seen only by a new container, hence recreate rather than reload."""
    found = {READERS[PurePosixPath(p).parts[1]] for p in changed if len(PurePosixPath(p).parts) > 1}
    return sorted(found)


def write_monitoring_files(files: Mapping[str, bytes], root: Path) -> list[str]:
    """Writes monitoring_files' output under root (the stack's build folder) and removes what
    is no longer rendered under root/prometheus. Secrets are 0600 in a 0700 folder from the
    first byte; the rest 0644 (Prometheus runs as nobody). Each file through a rename. Returns
    the relative paths that changed."""
    changed: list[str] = []
    for rel, data in sorted(files.items()):
        path = root / rel
        if path.is_file() and path.read_bytes() == data:
            continue
        secret = is_secret_file(rel)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if secret else 0o755)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600 if secret else 0o644)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        changed.append(rel)
    folder = root / "prometheus"
    if folder.is_dir():
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            if rel not in files:
                path.unlink()
                changed.append(rel)
    return changed


def monitoring_role_sql(user: str, password: str) -> str:
    """psql input that leaves the exporter's role as it must be, whatever it was: it exists,
    logs in with this password, and reads statistics only (pg_monitor, no superuser)."""
    role = ident(user)
    exists = f"SELECT FROM pg_roles WHERE rolname = {literal(user)}"
    return (
        f"SELECT 'CREATE ROLE {role}' WHERE NOT EXISTS ({exists})\\gexec\n"
        f"ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
        f"PASSWORD {literal(password)};\n"
        f"GRANT pg_monitor TO {role};\n"
    )


def monitoring_role_argv(
    project: str, files: Sequence[Path], profiles: Sequence[str], superuser: str
) -> Argv:
    """psql in the running postgres container, reading monitoring_role_sql on stdin: the
    password never is an argument."""
    return commands.compose(
        project, files, "exec", "-T", "postgres", "psql", "--quiet", "--no-psqlrc",
        "-v", "ON_ERROR_STOP=1", "--username", superuser, "--dbname", "postgres",
        profiles=profiles,
    )  # fmt: skip
