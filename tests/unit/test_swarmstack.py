"""The Swarm stack rendered from compose's resolved model: secrets out of the file, configs by
content hash, placement by role, dnsrr and host-mode ports, update and rollback policy."""

from __future__ import annotations

import json

import pytest
import yaml

from deploysuite.engines import swarmstack as ss

PASSWORD = "pw$x-not-in-any-file"  # pragma: allowlist secret
ESCAPED = "pw$$x-not-in-any-file"  # pragma: allowlist secret
TOKEN = "token-secret-value-123"

# Shapes as `docker compose config --format json` writes them (a literal $ stays $$).
COMPOSE = {
    "name": "mysaaschat",
    "services": {
        "nginx": {
            "image": "reg/nginx@sha256:aa", "cap_add": ["NET_BIND_SERVICE"], "cap_drop": ["ALL"],
            "depends_on": {"auth": {"condition": "service_healthy"}}, "command": None,
            "ports": [{"mode": "ingress", "host_ip": "127.0.0.1", "target": 443,
                       "published": "8543", "protocol": "tcp"}],
            "read_only": True, "restart": "unless-stopped",
            "security_opt": ["no-new-privileges:true"], "tmpfs": ["/tmp:size=16m", "/run"],
            "networks": {"frontend": None},
            "volumes": [
                {"type": "bind", "source": "/r/nginx/nginx.conf",
                 "target": "/etc/nginx/nginx.conf", "read_only": True},
                {"type": "bind", "source": "/r/tls", "target": "/etc/nginx/tls", "read_only": True},
                {"type": "volume", "source": "acme-webroot", "target": "/var/www/certbot",
                 "read_only": True},
            ],
            "deploy": {"resources": {"limits": {"cpus": 0.5, "memory": "134217728"}}},
        },
        "auth": {
            "image": "reg/auth@sha256:bb", "user": "1001:1001",
            "environment": {"POSTGRES_HOST": "postgres", "LOG_LEVEL": "info",
                            "POSTGRES_PASSWORD": ESCAPED,
                            "AUTH_TOKEN_SECRET": TOKEN},
            "networks": {"frontend": None, "backend": None},
            "healthcheck": {"test": ["CMD", "true"], "interval": "5s"},
        },
        "postgres": {
            "image": "reg/postgres:15", "shm_size": 134217728,
            "environment": {"POSTGRES_PASSWORD": ESCAPED, "POSTGRES_USER": "u"},
            "healthcheck": {"test": ["CMD-SHELL", "pg_isready -U \"$${POSTGRES_USER}\""]},
            "ports": [{"mode": "ingress", "host_ip": "127.0.0.1", "target": 5432,
                       "published": "5432"}],
            "networks": {"backend": None},
            "volumes": [{"type": "volume", "source": "postgres-data",
                         "target": "/var/lib/postgresql/data"}],
        },
    },
    "networks": {"frontend": {"name": "mysaaschat_frontend"},
                 "backend": {"name": "mysaaschat_backend", "internal": True},
                 "unused": {}},
    "volumes": {"postgres-data": {}, "acme-webroot": {}, "unused-data": {}},
}  # fmt: skip

PG_KEY, TOKEN_KEY = "POSTGRES_PASSWORD", "AUTH_TOKEN_SECRET"
SECRET_KEYS = {PASSWORD: PG_KEY, TOKEN: TOKEN_KEY}

BIND = {
    "/r/nginx/nginx.conf": {"": b"events {}\n"},
    "/r/tls": {"cert.pem": b"CERT", "privkey.pem": b"PRIVATE KEY"},
}


def render(compose=COMPOSE, **changes):
    opts = ss.SwarmOptions(
        project="proj",
        secret_values=SECRET_KEYS,
        bind_files=BIND,
        replicas={"auth": 3},
    )
    for key, value in changes.items():
        opts = ss.SwarmOptions(**{**opts.__dict__, key: value})
    return ss.render_stack(compose, opts)


def test_no_secret_value_is_in_the_stack_file_and_services_read_file_variables():
    stack = render()
    text = yaml.safe_dump(stack.doc) + json.dumps(stack.doc)
    for value in (PASSWORD, "pw$$x", TOKEN, "PRIVATE KEY"):
        assert value not in text
    auth = stack.doc["services"]["auth"]
    assert auth["environment"] == {
        "POSTGRES_HOST": "postgres", "LOG_LEVEL": "info",
        "POSTGRES_PASSWORD_FILE": "/run/secrets/postgres_password",
        "AUTH_TOKEN_SECRET_FILE": "/run/secrets/auth_token_secret",
    }  # fmt: skip
    refs = {r["target"]: r for r in auth["secrets"]}
    assert refs["postgres_password"]["uid"] == "1001" and refs["postgres_password"]["mode"] == 0o400
    # the value a process reads is the real one: compose's $$ is a single $
    assert stack.secrets[refs["postgres_password"]["source"]] == PASSWORD.encode()


def test_one_value_is_one_object_shared_by_every_service_that_reads_it():
    stack = render()
    pg = stack.doc["services"]["postgres"]
    assert pg["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert pg["secrets"][0]["mode"] == 0o444  # root-started image, drops to its own user
    password_objects = [n for n in stack.secrets if "postgres_password" in n]
    assert len(password_objects) == 1
    assert set(stack.doc["secrets"]) == set(stack.secrets)
    assert all(v == {"external": True} for v in stack.doc["secrets"].values())


def test_objects_are_named_by_content_so_a_rotation_is_a_new_name():
    before = render()
    new_value = "rotated-value-0123456789"
    changed = json.loads(json.dumps(COMPOSE).replace(ESCAPED, new_value))
    rotated = render(changed, secret_values={new_value: PG_KEY, TOKEN: TOKEN_KEY})
    old = {n for n in before.secrets if "postgres_password" in n}
    new = {n for n in rotated.secrets if "postgres_password" in n}
    assert old and new and old.isdisjoint(new)
    assert new_value not in json.dumps(rotated.doc)
    assert render().secrets == before.secrets  # same input, same names
    name = ss.object_name("proj", "postgres_password", b"x")
    assert name.startswith("proj-postgres_password-") and len(name) <= 64
    assert len(ss.object_name("p" * 30, "n" * 60, b"x")) <= 64


def test_bind_mounted_files_become_configs_and_the_private_key_a_secret():
    stack = render()
    nginx = stack.doc["services"]["nginx"]
    configs = {c["target"]: c for c in nginx["configs"]}
    assert set(configs) == {"/etc/nginx/nginx.conf", "/etc/nginx/tls/cert.pem"}
    assert stack.configs[configs["/etc/nginx/nginx.conf"]["source"]] == b"events {}\n"
    key = next(r for r in nginx["secrets"] if r["target"] == "/etc/nginx/tls/privkey.pem")
    assert key["mode"] == 0o400 and stack.secrets[key["source"]] == b"PRIVATE KEY"
    assert not any(v.get("type") == "bind" for v in nginx["volumes"])


def test_a_bind_mount_without_files_is_refused():
    with pytest.raises(ValueError, match="/r/tls"):
        render(bind_files={"/r/nginx/nginx.conf": {"": b""}})


def test_placement_replicas_and_update_order_follow_the_role():
    services = render().doc["services"]
    nginx, auth, pg = (
        services["nginx"]["deploy"],
        services["auth"]["deploy"],
        services["postgres"]["deploy"],
    )
    assert nginx["mode"] == "global"
    assert nginx["placement"]["constraints"] == ["node.labels.mysaaschat.role.edge == true"]
    assert auth["replicas"] == 3
    assert auth["placement"]["constraints"] == ["node.labels.mysaaschat.role.app == true"]
    assert auth["update_config"]["order"] == "start-first"
    assert auth["update_config"]["failure_action"] == "rollback"
    assert pg["replicas"] == 1 and pg["update_config"]["order"] == "stop-first"
    assert pg["placement"]["constraints"] == ["node.labels.mysaaschat.role.data == true"]
    for d in (nginx, auth, pg):
        assert d["endpoint_mode"] == "dnsrr"
        assert d["restart_policy"]["condition"] == "any"
    assert nginx["resources"]["limits"] == {"cpus": "0.5", "memory": "134217728"}


def test_only_the_edge_publishes_and_in_host_mode():
    services = render().doc["services"]
    assert services["nginx"]["ports"] == [
        {"target": 443, "published": 8543, "protocol": "tcp", "mode": "host"}
    ]
    assert "ports" not in services["postgres"]


def test_what_swarm_cannot_use_is_left_out_or_translated():
    stack = render()
    nginx = stack.doc["services"]["nginx"]
    for key in ("depends_on", "restart", "security_opt", "tmpfs", "command"):
        assert key not in nginx
    assert "shm_size" not in stack.doc["services"]["postgres"]
    tmpfs = [v for v in nginx["volumes"] if v["type"] == "tmpfs"]
    assert tmpfs == [{"type": "tmpfs", "target": "/tmp", "tmpfs": {"size": 16 * 1024**2}},
                     {"type": "tmpfs", "target": "/run"}]  # fmt: skip
    assert stack.doc["version"] == "3.9" and "name" not in stack.doc
    assert set(stack.doc["networks"]) == {"frontend", "backend"}
    assert stack.doc["networks"]["backend"] == {"driver": "overlay", "attachable": True,
                                                "internal": True}  # fmt: skip
    assert set(stack.doc["volumes"]) == {"postgres-data", "acme-webroot"}
    # literal $ stays escaped for the stack file's own interpolation
    assert "$${POSTGRES_USER}" in stack.doc["services"]["postgres"]["healthcheck"]["test"][1]


def test_a_secret_inside_a_longer_value_stops_the_render():
    compose = json.loads(json.dumps(COMPOSE))
    compose["services"]["auth"]["environment"]["DATABASE_URL"] = f"postgres://u:{TOKEN}@db/x"
    with pytest.raises(ValueError, match="AUTH_TOKEN_SECRET would be in the stack file"):
        render(compose)


def test_replicas_are_parsed_from_service_equals_count():
    assert ss.parse_replicas("chat=3, auth=2") == {"chat": 3, "auth": 2}
    assert ss.parse_replicas("") == {}
    with pytest.raises(ValueError, match="'chat' is not SERVICE=REPLICAS"):
        ss.parse_replicas("chat")
