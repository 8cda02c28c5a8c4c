import os
import stat
from pathlib import Path

from deploysuite.config.layers import for_service, load_config, load_schema
from deploysuite.config.service_env import (
    SERVICE_VARIABLES,
    service_environment,
    write_services_env,
)

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
