import re
from pathlib import Path

import pytest

from saaschat import config
from saaschat.config import ConfigError, Secret

SERVICES = Path(__file__).resolve().parents[2]
ENV_CALL = re.compile(r"env(?:_\w+)?\(\"([A-Z0-9_]+)\"")


def test_missing_required_variable_names_it():
    with pytest.raises(ConfigError) as info:
        config.env("AUTH_DB_NAME", required=True, environ={})
    assert str(info.value) == "missing required environment variable AUTH_DB_NAME"


def test_missing_required_secret_names_it_and_empty_counts_as_unset():
    with pytest.raises(ConfigError, match="POSTGRES_PASSWORD"):
        config.env_secret("POSTGRES_PASSWORD", environ={"POSTGRES_PASSWORD": "  "})


def test_a_secret_file_stands_for_the_variable(tmp_path):
    secret = tmp_path / "postgres_password"
    secret.write_text("s3cret\n")
    environ = {"POSTGRES_PASSWORD_FILE": str(secret)}
    assert config.env_secret("POSTGRES_PASSWORD", environ=environ).reveal() == "s3cret"
    with pytest.raises(ConfigError, match="both POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE"):
        config.env_secret("POSTGRES_PASSWORD", environ={**environ, "POSTGRES_PASSWORD": "x"})
    with pytest.raises(ConfigError, match="POSTGRES_PASSWORD_FILE=/nonexistent cannot be read"):
        config.env_secret("POSTGRES_PASSWORD", environ={"POSTGRES_PASSWORD_FILE": "/nonexistent"})


def test_defaults_and_values():
    assert config.env("X_NAME", "dflt", environ={}) == "dflt"
    assert config.env("X_NAME", "dflt", environ={"X_NAME": " v "}) == "v"
    assert config.env_int("X_INT", 5, environ={"X_INT": "42"}) == 42
    assert config.env_float("X_F", 1.5, environ={}) == 1.5
    assert config.env_bool("X_B", False, environ={"X_B": "Yes"}) is True
    assert config.env_bool("X_B", True, environ={"X_B": "off"}) is False


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: config.env_int("PORT", environ={"PORT": "80a"}), "PORT must be an integer"),
        (lambda: config.env_int("PORT", environ={"PORT": "0"}, minimum=1), "PORT must be >= 1"),
        (lambda: config.env_float("T", environ={"T": "nan"}), "T must be a finite number"),
        (lambda: config.env_bool("B", environ={"B": "maybe"}), "B must be a boolean"),
    ],
)
def test_malformed_values_name_the_variable(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_secret_errors_never_echo_the_value():
    with pytest.raises(ConfigError) as info:
        config.env_secret("AUTH_TOKEN_SECRET", min_length=32, environ={"AUTH_TOKEN_SECRET": "tiny"})
    assert "AUTH_TOKEN_SECRET" in str(info.value)
    assert "tiny" not in str(info.value)


def test_secret_hides_itself():
    secret = Secret("hunter2-hunter2")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in f"{secret}"
    assert secret.reveal() == "hunter2-hunter2"


def test_service_settings_defaults():
    settings = config.load_service_settings("chat", environ={})
    assert (settings.name, settings.version, settings.release_id) == ("chat", "dev", "dev")
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    assert (settings.drain_seconds, settings.grace_seconds) == (2.0, 10.0)
    assert settings.check_timeout == 1.0


def test_service_settings_reject_drain_longer_than_grace():
    env = {"SHUTDOWN_DRAIN_SECONDS": "20", "SHUTDOWN_GRACE_SECONDS": "10"}
    with pytest.raises(ConfigError, match="SHUTDOWN_DRAIN_SECONDS"):
        config.load_service_settings("chat", environ=env)


def test_postgres_settings_keep_password_secret():
    pg = config.load_postgres_settings(
        "auth", environ={"POSTGRES_PASSWORD": "pw-123456", "POSTGRES_HOST": "db"}
    )
    assert pg.describe() == "db:5432/auth"
    assert "pw-123456" not in repr(pg)


def _python_files():
    return [p for p in SERVICES.rglob("*.py") if "tests" not in p.parts and p.name != "conftest.py"]


def test_only_config_module_reads_the_environment():
    offenders = []
    for path in _python_files():
        if path.name == "config.py" and path.parent.name == "saaschat":
            continue
        text = path.read_text()
        if re.search(r"os\.environ|os\.getenv|getenv\(", text):
            offenders.append(str(path.relative_to(SERVICES)))
    assert offenders == []


EXPECTED_VARIABLES = {
    # every service
    "SERVICE_NAME", "SERVICE_VERSION", "RELEASE_ID", "PORT", "LOG_LEVEL",
    "SHUTDOWN_DRAIN_SECONDS", "SHUTDOWN_GRACE_SECONDS", "HEALTH_CHECK_TIMEOUT_SECONDS",
    "HEALTH_INTERVAL_SECONDS", "BREAKER_FAILURE_THRESHOLD", "BREAKER_RESET_SECONDS",
    # PostgreSQL (auth, chat, billing, analytics)
    "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_POOL_MAX",
    "MIGRATIONS_DIR", "MIGRATE_WAIT_SECONDS",
    "AUTH_DB_NAME", "CHAT_DB_NAME", "BILLING_DB_NAME", "ANALYTICS_DB_NAME",
    # Redis (chat), RabbitMQ (orchestrator, email-worker)
    "REDIS_HOST", "REDIS_PORT", "REDIS_USER", "REDIS_PASSWORD", "REDIS_DB",
    "RABBITMQ_HOST", "RABBITMQ_PORT", "RABBITMQ_USER", "RABBITMQ_PASSWORD", "RABBITMQ_VHOST",
    "RABBITMQ_HEARTBEAT_SECONDS",
    # service-specific
    "AUTH_TOKEN_SECRET", "AUTH_TOKEN_SECRET_PREVIOUS", "AUTH_TOKEN_TTL_SECONDS",
    "BILLING_WEBHOOK_SECRET",
    "SMTP_HOST", "SMTP_PORT", "SMTP_FROM", "SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_STARTTLS",
    "SMTP_TIMEOUT_SECONDS", "EMAIL_MAX_ATTEMPTS", "EMAIL_RETRY_BASE_SECONDS",
    "EMAIL_RETRY_MAX_SECONDS",
    "MAILSINK_SMTP_PORT", "MAILSINK_HTTP_PORT", "MAILSINK_MAX_MESSAGES",
}  # fmt: skip


def test_every_env_call_has_its_literal_name_right_after_the_parenthesis():
    calls = re.compile(r"\benv(?:_int|_float|_bool|_secret)?\(")
    dynamic = []
    for path in _python_files():
        if path.name == "config.py" and path.parent.name == "saaschat":
            continue
        text = path.read_text()
        for match in calls.finditer(text):
            if not text.startswith('"', match.end()):
                line = text.count("\n", 0, match.start()) + 1
                dynamic.append(f"{path.relative_to(SERVICES)}:{line}")
    assert dynamic == []


def test_the_documented_regex_finds_every_variable():
    names = {m for p in _python_files() for m in ENV_CALL.findall(p.read_text())}
    assert names == EXPECTED_VARIABLES
