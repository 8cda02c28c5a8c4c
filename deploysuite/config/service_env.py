"""Each service's environment: exactly the variables it reads, resolved through all six layers
(with its own override file), written into a generated compose file that the deploy adds to
docker-compose.prod.yml (an `env_file` would do too, but Compose then stamps containers with a
config hash that `docker compose config --hash` does not reproduce, and a no-op deploy could not
be told from a change).

A service gets only its own secrets: billing never sees the token key, auth never sees the
webhook secret. The host names of the stack's own network (postgres, redis, rabbitmq) are not
configuration: the compose file sets them. The data stores' and exporters' credentials come
from here too (STORE_SECRETS): the compose file itself names no secret.

Secrets reach the containers as files, never as environment values (which `docker inspect`
shows to anyone who may run it): with_secret_files() turns each secret into a file of its own,
secrets/<service>/<name> (mode 0400, owned by the user that reads it: READERS), mounted at
/run/secrets/<name> through Compose's `secrets:`, and the service reads `<VAR>_FILE` (the
PostgreSQL image's convention, which the services, the backup agent and the local images follow).
Under Swarm the values stay in the file and deploysuite.engines.swarmstack turns them into Swarm
secrets the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Set
from dataclasses import dataclass
from pathlib import Path

from deploysuite.config.layers import Config, for_service
from deploysuite.core.files import write_private

COMMON = (
    "SERVICE_VERSION",
    "RELEASE_ID",
    "LOG_LEVEL",
    "SHUTDOWN_DRAIN_SECONDS",
    "SHUTDOWN_GRACE_SECONDS",
    "HEALTH_CHECK_TIMEOUT_SECONDS",
    "HEALTH_INTERVAL_SECONDS",
    "BREAKER_FAILURE_THRESHOLD",
    "BREAKER_RESET_SECONDS",
)
POSTGRES = (
    "POSTGRES_PORT",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_POOL_MAX",
    "MIGRATE_WAIT_SECONDS",
)
RABBITMQ = (
    "RABBITMQ_PORT",
    "RABBITMQ_USER",
    "RABBITMQ_PASSWORD",
    "RABBITMQ_VHOST",
    "RABBITMQ_HEARTBEAT_SECONDS",
)
TOKENS = ("AUTH_TOKEN_SECRET", "AUTH_TOKEN_SECRET_PREVIOUS")

SERVICE_VARIABLES: Mapping[str, tuple[str, ...]] = {
    "auth": (*COMMON, *POSTGRES, *TOKENS, "AUTH_DB_NAME", "AUTH_TOKEN_TTL_SECONDS"),
    "chat": (
        *COMMON,
        *POSTGRES,
        *TOKENS,
        "CHAT_DB_NAME",
        "REDIS_PORT",
        "REDIS_USER",
        "REDIS_PASSWORD",
        "REDIS_DB",
    ),
    "billing": (*COMMON, *POSTGRES, "BILLING_DB_NAME", "BILLING_WEBHOOK_SECRET"),
    "analytics": (*COMMON, *POSTGRES, "ANALYTICS_DB_NAME"),
    "orchestrator": (*COMMON, *RABBITMQ),
    "email-worker": (
        *COMMON,
        *RABBITMQ,
        "SMTP_HOST",
        "SMTP_PORT",
        "SMTP_FROM",
        "SMTP_USERNAME",
        "SMTP_PASSWORD",
        "SMTP_STARTTLS",
        "SMTP_TIMEOUT_SECONDS",
        "EMAIL_MAX_ATTEMPTS",
        "EMAIL_RETRY_BASE_SECONDS",
        "EMAIL_RETRY_MAX_SECONDS",
    ),
    "mailsink": (*COMMON, "MAILSINK_SMTP_PORT", "MAILSINK_HTTP_PORT", "MAILSINK_MAX_MESSAGES"),
    "backup": (
        "RELEASE_ID",
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "AUTH_DB_NAME",
        "CHAT_DB_NAME",
        "BILLING_DB_NAME",
        "ANALYTICS_DB_NAME",
        "S3_ENDPOINT_URL",
        "S3_REGION",
        "S3_BUCKET",
        "S3_PREFIX",
        "S3_ACCESS_KEY_ID",
        "S3_SECRET_ACCESS_KEY",
        "S3_SSE",
        "S3_PART_SIZE_MB",
        "S3_PART_CHECKSUM",
        "BACKUP_INTERVAL_HOURS",
        "BACKUP_RPO_HOURS",
        "BACKUP_KEEP",
        "BACKUP_RETENTION_DAYS",
        "BACKUP_RETRY_MINUTES",
        "POSTGRES_ARCHIVE_MODE",
        "BASEBACKUP_INTERVAL_HOURS",
        "WAL_MAX_LAG_SECONDS",
        "BACKUP_METRICS_ADDRESS",
        "BACKUP_METRICS_PORT",
        "NOTIFY_WEBHOOK_URL",
    ),
}


# The data stores' and exporters' credentials: the variable the image reads -> the configuration
# key whose value it gets.
STORE_SECRETS: Mapping[str, Mapping[str, str]] = {
    "postgres": {"POSTGRES_PASSWORD": "POSTGRES_PASSWORD"},
    "redis": {"REDIS_PASSWORD": "REDIS_PASSWORD"},
    "rabbitmq": {"RABBITMQ_DEFAULT_USER": "RABBITMQ_USER",
                 "RABBITMQ_DEFAULT_PASS": "RABBITMQ_PASSWORD"},
    "mongodb": {"MONGO_INITDB_ROOT_PASSWORD": "MONGODB_PASSWORD"},
    "postgres-exporter": {"DATA_SOURCE_PASS": "MONITORING_DB_PASSWORD"},
    "redis-exporter": {"REDIS_PASSWORD": "REDIS_PASSWORD"},
}  # fmt: skip

# Stores that take their credential once, into their volume (PostgreSQL, RabbitMQ, MongoDB), or
# change it live (Redis, through inv env.rotate): a new value never restarts them. A value the
# running store does not accept is found before anything changes (deploysuite.deploy.drift).
# Every other service reads its secrets when it starts: a new value replaces its containers.
READ_ONCE = ("postgres", "redis", "rabbitmq", "mongodb")

# Who reads a service's secret files: its compose `user`, or root for the images that start as
# root and read the file before they drop to their own user; RabbitMQ's server reads its conf.d
# as rabbitmq (999) after the drop. Unlisted services run as the services' user.
READERS: Mapping[str, str] = {
    "postgres": "0:0", "redis": "0:0", "mongodb": "0:0", "rabbitmq": "999:999",
    "backup": "999:999", "postgres-exporter": "65534:65534", "redis-exporter": "65534:65534",
    "nginx": "101:101",  # the edge's private key (deploysuite/deploy/secretfiles.py)
}  # fmt: skip
SERVICE_USER = "1001:1001"
SECRETS_TARGET = "/run/secrets"
RABBITMQ_CONF = "/etc/rabbitmq/conf.d/20-default-user.conf"
SECRETS_LABEL = "com.mysaaschat.secrets"


def service_environment(config: Config, service: str) -> dict[str, str]:
    """The variables `service` reads, from a config loaded for that service (so its override
    file applies); unset ones are left out and the service's own default holds. The backup
    service also learns the environment's name: its S3 keys are filed under it."""
    env = {
        name: value
        for name in SERVICE_VARIABLES[service]
        if (value := config.get(name)) is not None
    }
    if service == "backup":
        env["BACKUP_ENV"] = config.env
    return env


def store_environment(config: Config, service: str) -> dict[str, str]:
    return {
        var: value for var, key in STORE_SECRETS[service].items()
        if (value := config.get(key)) is not None
    }  # fmt: skip


def environments(config: Config) -> dict[str, dict[str, str]]:
    """Every service's generated environment: the services' own (each from its own six-layer
    config) and the stores' credentials."""
    envs = {s: service_environment(for_service(config, s), s) for s in SERVICE_VARIABLES}
    envs.update({s: store_environment(config, s) for s in STORE_SECRETS})
    return envs


def secret_variables(config: Config) -> frozenset[str]:
    """The container variables whose values are secrets: the configuration's secrets, under the
    name the service reads them by."""
    names = {spec.name for spec in config.schema.values() if spec.is_secret}
    stores = {var for m in STORE_SECRETS.values() for var, key in m.items() if key in names}
    return frozenset(names | stores)


@dataclass(frozen=True)
class SecretFile:
    path: str  # relative to the folder the generated compose file names
    content: bytes
    owner: str  # "uid:gid" of the reader, mode 0400


def secrets_digest(service: str, values: list[bytes]) -> str:
    """What the service's label carries so that Compose sees a changed secret (a file's content
    is not part of a service's configuration hash): slow to invert, never the values."""
    joined = b"\0".join(values)
    return hashlib.pbkdf2_hmac("sha256", joined, f"{SECRETS_LABEL}:{service}".encode(), 20_000)[
        :12
    ].hex()


def with_secret_files(
    envs: Mapping[str, Mapping[str, str]], secret_vars: Set[str], base: str
) -> tuple[dict, list[SecretFile]]:
    """The generated compose document with every secret as a file under `base` (an absolute,
    stable folder on the engine's host), and the files to write there. Pure.

    Each service mounts its own folder, <base>/secrets/<service>, read-only at /run/secrets: a
    folder (not each file) so that a file replaced by a rename, as every write here does, is
    what a running container reads next (Redis' healthcheck after a rotation), and a container
    started again finds its files whatever release is live. RabbitMQ's one file goes into its
    conf.d, which its server reads once."""
    services: dict[str, dict] = {}
    files: list[SecretFile] = []
    for service, env in sorted(envs.items()):
        owner = READERS.get(service, SERVICE_USER)
        folder = f"{base}/secrets/{service}"
        plain = {k: v for k, v in env.items() if k not in secret_vars}
        secret = {k: v for k, v in env.items() if k in secret_vars}
        named: list[tuple[str, bytes]] = []  # (file name, content)
        volumes: list[dict] = []
        if service == "rabbitmq":
            lines = [f"default_user = {plain.pop('RABBITMQ_DEFAULT_USER', '')}"] if (
                "RABBITMQ_DEFAULT_USER" in plain) else []  # fmt: skip
            lines += [f"default_pass = {secret.pop('RABBITMQ_DEFAULT_PASS')}"] if (
                "RABBITMQ_DEFAULT_PASS" in secret) else []  # fmt: skip
            if lines:
                named.append(("default_user_conf", ("\n".join(lines) + "\n").encode()))
                volumes.append({"type": "bind", "source": f"{folder}/default_user_conf",
                                "target": RABBITMQ_CONF, "read_only": True})  # fmt: skip
        if service == "redis-exporter" and "REDIS_PASSWORD" in secret:
            # the exporter's password file maps the address to the password (JSON)
            content = json.dumps({"redis://redis:6379": secret.pop("REDIS_PASSWORD")}).encode()
            named.append(("redis_password_json", content))
            plain["REDIS_PASSWORD_FILE"] = f"{SECRETS_TARGET}/redis_password_json"
        for var, value in sorted(secret.items()):
            named.append((var.lower(), value.encode()))
            plain[f"{var}_FILE"] = f"{SECRETS_TARGET}/{var.lower()}"
        spec: dict = {"environment": plain}
        files += [SecretFile(f"secrets/{service}/{name}", c, owner) for name, c in named]
        if named and service != "rabbitmq":
            volumes.append({"type": "bind", "source": folder, "target": SECRETS_TARGET,
                            "read_only": True})  # fmt: skip
        if volumes:
            spec["volumes"] = volumes
        if named and service not in READ_ONCE:
            spec["labels"] = {SECRETS_LABEL: secrets_digest(service, [c for _, c in named])}
        services[service] = spec
    return {"services": services}, files


def reader_of(path: str) -> str:
    """secrets/<service>/<name> -> the "uid:gid" that reads it."""
    parts = path.split("/")
    return READERS.get(parts[1], SERVICE_USER) if len(parts) == 3 else "0:0"


def render_compose_doc(doc: Mapping) -> str:
    header = "# Generated by inv deploy from the configuration layers; holds no secret value.\n"
    return header + json.dumps(doc, indent=2, sort_keys=True) + "\n"


def render_services_env(environments: Mapping[str, Mapping[str, str]]) -> str:
    """A compose file that adds each service's environment. JSON is valid YAML and quotes every
    value exactly, whatever characters a secret holds."""
    doc = {"services": {name: {"environment": dict(env)} for name, env in environments.items()}}
    header = "# Generated by inv deploy from the configuration layers; holds secrets (mode 0600).\n"
    return header + json.dumps(doc, indent=2, sort_keys=True) + "\n"


def write_services_env(path: Path, environments: Mapping[str, Mapping[str, str]]) -> bool:
    """Mode 0600; False when the file already says the same."""
    text = render_services_env(environments)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    write_private(path, text)
    return True
