"""The Swarm stack of a release, rendered from docker-compose.prod.yml: no second stack file.

Input is what `docker compose config --format json` makes of the one compose file with the
environment's profiles, variables and services' environments (services.env.yml). render_stack()
turns it into a `docker stack deploy` file (compose format 3.9, which Debian's docker 20.10
reads) and the Swarm objects it refers to:

- every environment value that is one of the configuration's secrets leaves the file: it
  becomes a Swarm secret, and the service reads `<VAR>_FILE=/run/secrets/<name>` instead (the
  PostgreSQL image's convention, which the services and the local images follow);
- every bind-mounted file (nginx's configuration, Prometheus', the TLS certificate) becomes a
  Swarm config, the private key a secret;
- objects are named by content hash (<project>-<name>-<sha256[:12]>): a changed value is a new
  object and a changed service spec, a rollback's stack file names the old ones again;
- services get their placement by role (node.labels.mysaaschat.role.<role>), replicas,
  update_config (start-first, rollback on failure; data stores stop-first: two PostgreSQLs must
  never share a volume), rollback_config and restart policy; every service uses endpoint_mode
  dnsrr and nginx publishes in host mode on the edge nodes: the kernels here have no IPVS, so
  Swarm's VIPs and its ingress routing mesh cannot work (docs/deployment/swarm.md).

Pure: no I/O. The rendered file holds no secret value.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from deploysuite.engines.cluster import placement_constraint

STACK_VERSION = "3.9"
SECRETS_DIR = "/run/secrets"

# Which nodes run what (hosts.yml roles).
EDGE_SERVICES = ("nginx", "certbot")
DATA_SERVICES = ("postgres", "redis", "rabbitmq", "prometheus", "backup", "mailsink", "mongodb",
                 "clickhouse", "jaeger", "grafana")  # fmt: skip

# Keys a Swarm service has no use for, or that `docker stack deploy` refuses or ignores: what
# they did is done otherwise (depends_on: the deploy's order; restart: restart_policy; tmpfs:
# tmpfs mounts; ports: host mode).
DROPPED = (
    "build", "depends_on", "container_name", "restart", "profiles", "security_opt", "shm_size",
    "tmpfs", "pull_policy", "expose", "init", "develop", "ports", "volumes", "environment",
    "networks", "deploy", "links", "external_links", "extra_hosts",
)  # fmt: skip

# Images that take a secret in a configuration file rather than a *_FILE variable (RabbitMQ 3.9+
# refuses RABBITMQ_DEFAULT_PASS_FILE): the variables become that one file, as a secret.
SECRET_CONFIG_FILES = {
    "rabbitmq": (
        "/etc/rabbitmq/conf.d/20-default-user.conf",
        {"RABBITMQ_DEFAULT_USER": "default_user", "RABBITMQ_DEFAULT_PASS": "default_pass"},
    ),
}  # fmt: skip

NAME_RE = re.compile(r"[^a-zA-Z0-9_.-]+")
SIZE_RE = re.compile(r"^(\d+)([kmg]?)$", re.IGNORECASE)
UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


@dataclass(frozen=True)
class SwarmOptions:
    project: str
    # environment value -> the configuration key it is the value of, for every secret
    secret_values: Mapping[str, str]
    # bind-mount source -> {relative path ("" for a file): bytes}: what the mounts hold
    bind_files: Mapping[str, Mapping[str, bytes]]
    replicas: Mapping[str, int] = field(default_factory=dict)
    # file names that are secrets when mounted (TLS private key)
    secret_file_names: frozenset[str] = frozenset({"privkey.pem"})
    monitor: str = "15s"


@dataclass(frozen=True)
class RenderedStack:
    doc: dict[str, Any]
    secrets: dict[str, bytes]  # object name -> content
    configs: dict[str, bytes]

    def services(self) -> list[str]:
        return sorted(self.doc["services"])


def object_name(project: str, name: str, content: bytes) -> str:
    """<project>-<name>-<sha256[:12]>, within Swarm's 64 characters."""
    digest = hashlib.sha256(content).hexdigest()[:12]
    slug = NAME_RE.sub("-", name).strip("-.")[: 63 - len(project) - 14] or "x"
    return f"{project}-{slug}-{digest}"


def role_of(service: str) -> str:
    if service in EDGE_SERVICES:
        return "edge"
    if service in DATA_SERVICES:
        return "data"
    return "app"


def tmpfs_mount(spec: str) -> dict[str, Any]:
    """`/tmp:size=16m` -> a tmpfs mount of 16 MiB."""
    target, _, options = spec.partition(":")
    mount: dict[str, Any] = {"type": "tmpfs", "target": target}
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        match = SIZE_RE.match(value)
        if key == "size" and match:
            mount["tmpfs"] = {"size": int(match.group(1)) * UNITS[match.group(2).lower()]}
    return mount


def unescape(value: str) -> str:
    """compose config keeps `$$` for a literal `$`: the value a process sees."""
    return value.replace("$$", "$")


def render_stack(compose: Mapping[str, Any], opts: SwarmOptions) -> RenderedStack:
    secrets: dict[str, bytes] = {}
    configs: dict[str, bytes] = {}
    services: dict[str, Any] = {}
    for name, service in sorted(compose["services"].items()):
        services[name] = render_service(name, service, opts, secrets, configs)
    used_networks = {n for s in services.values() for n in s.get("networks", [])}
    used_volumes = {
        m["source"] for s in services.values() for m in s.get("volumes", [])
        if m.get("type") == "volume"
    }  # fmt: skip
    networks = {}
    for name in sorted(used_networks):
        spec = (compose.get("networks") or {}).get(name) or {}
        net: dict[str, Any] = {"driver": "overlay", "attachable": True}
        if spec.get("internal"):
            net["internal"] = True
        networks[name] = net
    doc: dict[str, Any] = {
        "version": STACK_VERSION,
        "services": services,
        "networks": networks,
        "volumes": {name: {} for name in sorted(used_volumes)},
    }
    if secrets:
        doc["secrets"] = {n: {"external": True} for n in sorted(secrets)}
    if configs:
        doc["configs"] = {n: {"external": True} for n in sorted(configs)}
    refuse_leaks(doc, opts.secret_values)
    return RenderedStack(doc, secrets, configs)


def refuse_leaks(doc: Mapping[str, Any], secret_values: Mapping[str, str]) -> None:
    """The last word before a stack file exists: no secret value anywhere in it (a secret
    inside a longer value, say a URL with a password, would otherwise pass unnoticed)."""
    text = json.dumps(doc)
    for value, key in secret_values.items():
        if value and (value in text or value.replace("$", "$$") in text):
            raise ValueError(
                f"the value of {key} would be in the stack file: pass it as a whole variable"
            )


def render_service(
    name: str,
    service: Mapping[str, Any],
    opts: SwarmOptions,
    secrets: dict[str, bytes],
    configs: dict[str, bytes],
) -> dict[str, Any]:
    out = {k: v for k, v in service.items() if k not in DROPPED and v is not None}
    uid, gid = owner(service)
    env: dict[str, str] = {}
    refs: list[dict[str, Any]] = []
    environment = dict(service.get("environment") or {})
    if name in SECRET_CONFIG_FILES:
        target, keys = SECRET_CONFIG_FILES[name]
        lines = [f"{setting} = {unescape(str(environment.pop(var)))}\n"
                 for var, setting in keys.items() if environment.get(var) is not None]  # fmt: skip
        content = "".join(lines).encode()
        obj = object_name(opts.project, PurePosixPath(target).name, content)
        secrets[obj] = content
        refs.append({"source": obj, "target": target, "uid": uid, "gid": gid, "mode": 0o444})
    for key, value in sorted(environment.items()):
        if value is None:
            continue
        real = unescape(str(value))
        secret_key = opts.secret_values.get(real)
        if secret_key is None:
            env[key] = str(value)
            continue
        obj = object_name(opts.project, secret_key.lower(), real.encode())
        secrets[obj] = real.encode()
        target = secret_key.lower()
        env[f"{key}_FILE"] = f"{SECRETS_DIR}/{target}"
        refs.append({"source": obj, "target": target, "uid": uid, "gid": gid,
                     "mode": 0o400 if uid != "0" else 0o444})  # fmt: skip
    if env:
        out["environment"] = env
    mounts, config_refs = render_mounts(service, opts, secrets, configs, refs)
    if mounts:
        out["volumes"] = mounts
    if refs:
        out["secrets"] = sorted(refs, key=lambda r: r["target"])
    if config_refs:
        out["configs"] = sorted(config_refs, key=lambda r: r["target"])
    if service.get("networks"):
        out["networks"] = sorted(service["networks"])
    ports = [
        {"target": int(p["target"]), "published": int(p["published"]),
         "protocol": p.get("protocol", "tcp"), "mode": "host"}
        for p in service.get("ports") or () if p.get("published")
    ]  # fmt: skip
    if ports and role_of(name) == "edge":
        out["ports"] = ports  # the monitoring UIs publish nothing: SSH to the node instead
    out["deploy"] = deploy_section(name, service, opts)
    return out


def owner(service: Mapping[str, Any]) -> tuple[str, str]:
    """Who reads the secret files: the service's user, or root for images that start as root
    and drop to their own user (the files are then 0444 inside that one container)."""
    user = str(service.get("user") or "")
    if not user:
        return "0", "0"
    uid, _, gid = user.partition(":")
    return uid, gid or uid


def render_mounts(
    service: Mapping[str, Any],
    opts: SwarmOptions,
    secrets: dict[str, bytes],
    configs: dict[str, bytes],
    secret_refs: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    mounts: list[dict[str, Any]] = []
    config_refs: list[dict[str, Any]] = []
    for volume in service.get("volumes") or ():
        if volume.get("type") == "volume":
            mount = {"type": "volume", "source": volume["source"], "target": volume["target"]}
            if volume.get("read_only"):
                mount["read_only"] = True
            mounts.append(mount)
            continue
        if volume.get("type") != "bind":
            continue
        files = opts.bind_files.get(volume["source"])
        if files is None:
            raise ValueError(f"bind mount {volume['source']} has no files to turn into configs")
        for rel, content in sorted(files.items()):
            target = str(PurePosixPath(volume["target"]) / rel) if rel else volume["target"]
            base = PurePosixPath(target).name
            if base in opts.secret_file_names:
                obj = object_name(opts.project, base, content)
                secrets[obj] = content
                uid, gid = owner(service)  # nginx's own user reads its key
                secret_refs.append({"source": obj, "target": target, "uid": uid, "gid": gid,
                                    "mode": 0o400})  # fmt: skip
            else:
                obj = object_name(opts.project, base, content)
                configs[obj] = content
                config_refs.append({"source": obj, "target": target, "mode": 0o444})
    for spec in service.get("tmpfs") or ():
        mounts.append(tmpfs_mount(spec))
    return mounts, config_refs


def deploy_section(name: str, service: Mapping[str, Any], opts: SwarmOptions) -> dict[str, Any]:
    role = role_of(name)
    limits = ((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    deploy: dict[str, Any] = {
        "endpoint_mode": "dnsrr",
        "placement": {"constraints": [placement_constraint(role)]},
        "restart_policy": {"condition": "any", "delay": "2s", "window": "30s"},
        "resources": {"limits": {k: str(v) for k, v in limits.items() if k in ("cpus", "memory")}},
    }
    if role == "edge":
        # one per edge node, each publishing the ports on its own address (host mode)
        deploy["mode"] = "global"
        order = "stop-first"  # a host-mode port cannot be bound twice on one node
    elif role == "data":
        deploy["replicas"] = 1
        order = "stop-first"  # a second instance must never open the same volume
    else:
        deploy["replicas"] = int(opts.replicas.get(name, 1))
        order = "start-first"
    deploy["update_config"] = {
        "parallelism": 1, "delay": "0s", "order": order, "failure_action": "rollback",
        "monitor": opts.monitor, "max_failure_ratio": 0,
    }  # fmt: skip
    deploy["rollback_config"] = {"parallelism": 0, "order": order, "failure_action": "pause",
                                 "monitor": "5s"}  # fmt: skip
    return deploy


def parse_replicas(text: str) -> dict[str, int]:
    """SWARM_REPLICAS / `inv scale` arguments: `chat=3,auth=2`."""
    out: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        service, _, count = item.partition("=")
        if not count.isdigit() or not service:
            raise ValueError(f"{item!r} is not SERVICE=REPLICAS")
        out[service.strip()] = int(count)
    return out
