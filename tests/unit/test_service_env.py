import json
import os
import re
import stat
from pathlib import Path

from deploysuite.config.layers import for_service, load_config, load_schema
from deploysuite.config.service_env import (
    SERVICE_VARIABLES,
    reader_of,
    service_environment,
    with_secret_files,
    write_services_env,
)
from deploysuite.core.files import write_secret_file

REPO = Path(__file__).resolve().parents[2]


def test_every_service_variable_is_documented():
    documented = set(load_schema(REPO))
    for service, names in SERVICE_VARIABLES.items():
        assert set(names) <= documented, (service, set(names) - documented)


def test_each_service_gets_only_its_own_secrets():
    holders = {
        name: {s for s, names in SERVICE_VARIABLES.items() if name in names}
        for name in ("AUTH_TOKEN_SECRET", "BILLING_WEBHOOK_SECRET", "SMTP_PASSWORD",
                     "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD")
    }  # fmt: skip
    assert holders == {
        "AUTH_TOKEN_SECRET": {"auth", "chat"},
        "BILLING_WEBHOOK_SECRET": {"billing"},
        "SMTP_PASSWORD": {"email-worker"},
        # the backup service: for a server whose socket asks for a password
        "POSTGRES_PASSWORD": {"auth", "chat", "billing", "analytics", "backup"},
        "RABBITMQ_PASSWORD": {"orchestrator", "email-worker"},
    }


def test_service_override_reaches_only_that_service(suite_tree: Path):
    override = suite_tree / "services" / "chat" / "env" / "local.env"
    override.parent.mkdir(parents=True)
    override.write_text("LOG_LEVEL=DEBUG\n")
    process: dict[str, str] = {}
    config = load_config("local", root=suite_tree, process_env=process)
    chat = service_environment(for_service(config, "chat", process_env=process), "chat")
    auth = service_environment(for_service(config, "auth", process_env=process), "auth")
    assert chat["LOG_LEVEL"] == "DEBUG" and auth["LOG_LEVEL"] == "INFO"
    # the CLI layer still wins over the service override
    cli = load_config("local", root=suite_tree, process_env={}, cli={"LOG_LEVEL": "ERROR"})
    assert (
        service_environment(for_service(cli, "chat", process_env={}), "chat")["LOG_LEVEL"]
        == "ERROR"
    )


def test_repository_overrides_apply(tmp_path: Path):
    # services/email-worker/env/local.env is a committed override of the local environment
    config = load_config("local", root=REPO, process_env={})
    worker = service_environment(
        for_service(config, "email-worker", process_env={}), "email-worker"
    )
    assert worker["EMAIL_RETRY_BASE_SECONDS"] == "1"
    assert "EMAIL_RETRY_BASE_SECONDS" not in service_environment(config, "orchestrator")


def test_services_env_file_is_private_exact_and_rewritten_only_on_change(tmp_path: Path):
    import yaml

    path = tmp_path / "build" / "services.env.yml"
    envs = {"auth": {"A": "1", "B": 'it\'s "quoted": #x'}, "chat": {}}
    assert write_services_env(path, envs) is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert yaml.safe_load(path.read_text()) == {
        "services": {"auth": {"environment": envs["auth"]}, "chat": {"environment": {}}}
    }
    assert write_services_env(path, envs) is False
    assert write_services_env(path, {"auth": {"A": "2"}}) is True


SECRET_VARS = frozenset({"POSTGRES_PASSWORD", "AUTH_TOKEN_SECRET", "RABBITMQ_DEFAULT_PASS",
                         "REDIS_PASSWORD"})  # fmt: skip


def test_secrets_become_files_and_no_value_stays_in_the_compose_document():
    envs = {
        "auth": {"LOG_LEVEL": "INFO", "POSTGRES_PASSWORD": "pw-1", "AUTH_TOKEN_SECRET": "t0k-Zq"},
        "postgres": {"POSTGRES_PASSWORD": "pw-1"},
        "rabbitmq": {"RABBITMQ_DEFAULT_USER": "mq", "RABBITMQ_DEFAULT_PASS": "mq-pw"},
        "redis-exporter": {"REDIS_PASSWORD": "r-pw"},
        "mailsink": {"LOG_LEVEL": "INFO"},
    }
    doc, files = with_secret_files(envs, SECRET_VARS, "/srv/stack")
    text = json.dumps(doc)
    assert not any(v in text for v in ("pw-1", "t0k-Zq", "mq-pw", "r-pw"))
    auth = doc["services"]["auth"]
    assert auth["environment"] == {
        "LOG_LEVEL": "INFO",
        "AUTH_TOKEN_SECRET_FILE": "/run/secrets/auth_token_secret",
        "POSTGRES_PASSWORD_FILE": "/run/secrets/postgres_password",
    }
    # its own folder, read-only: only its own secrets, and a replaced file is seen at once
    assert auth["volumes"] == [{"type": "bind", "source": "/srv/stack/secrets/auth",
                                "target": "/run/secrets", "read_only": True}]  # fmt: skip
    by_path = {f.path: f for f in files}
    assert by_path["secrets/auth/postgres_password"].content == b"pw-1"
    assert by_path["secrets/auth/postgres_password"].owner == "1001:1001"
    assert by_path["secrets/postgres/postgres_password"].owner == "0:0"  # read before the drop
    # RabbitMQ takes its first user from a conf.d file its server reads as rabbitmq (999)
    conf = by_path["secrets/rabbitmq/default_user_conf"]
    assert conf.content == b"default_user = mq\ndefault_pass = mq-pw\n" and conf.owner == "999:999"
    assert doc["services"]["rabbitmq"]["environment"] == {}
    assert doc["services"]["rabbitmq"]["volumes"] == [
        {"type": "bind", "source": "/srv/stack/secrets/rabbitmq/default_user_conf",
         "target": "/etc/rabbitmq/conf.d/20-default-user.conf", "read_only": True}
    ]  # fmt: skip
    # the Redis exporter's password file maps the address to the password
    exporter = by_path["secrets/redis-exporter/redis_password_json"]
    assert json.loads(exporter.content) == {"redis://redis:6379": "r-pw"}
    assert doc["services"]["redis-exporter"]["environment"] == {
        "REDIS_PASSWORD_FILE": "/run/secrets/redis_password_json"
    }
    assert "volumes" not in doc["services"]["mailsink"]
    assert sorted(by_path) == [
        "secrets/auth/auth_token_secret", "secrets/auth/postgres_password",
        "secrets/postgres/postgres_password", "secrets/rabbitmq/default_user_conf",
        "secrets/redis-exporter/redis_password_json",
    ]  # fmt: skip


def test_a_new_secret_restarts_its_readers_but_never_a_store_that_read_it_once():
    def labels(value: str) -> dict:
        envs = {"auth": {"POSTGRES_PASSWORD": value}, "postgres": {"POSTGRES_PASSWORD": value}}
        doc, _ = with_secret_files(envs, SECRET_VARS, "/srv")
        return {s: spec.get("labels") for s, spec in doc["services"].items()}

    one, two = labels("first-value"), labels("second-value")
    assert one["postgres"] is None and two["postgres"] is None
    assert one["auth"] != two["auth"] and one["auth"] == labels("first-value")["auth"]
    assert "first-value" not in json.dumps(one)


def test_each_secret_file_has_the_reader_of_its_service():
    assert reader_of("secrets/auth/postgres_password") == "1001:1001"
    assert reader_of("secrets/backup/postgres_password") == "999:999"
    assert reader_of("secrets/postgres-exporter/data_source_pass") == "65534:65534"


def test_the_compose_file_names_no_secret():
    text = (REPO / "docker-compose.prod.yml").read_text()
    for name in ("POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "REDIS_PASSWORD", "MONGODB_PASSWORD",
                 "MONITORING_DB_PASSWORD", "AUTH_TOKEN_SECRET"):  # fmt: skip
        # compose interpolates ${NAME}; $${NAME} is the container shell's own variable
        assert not re.search(r"(?<!\$)\$\{" + name, text), name


def test_secret_files_are_0400_and_rewritten_atomically(tmp_path: Path):
    path = tmp_path / "secrets" / "auth" / "postgres_password"
    write_secret_file(path, b"one", None)
    write_secret_file(path, b"two", None)
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o711
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["postgres_password"]
