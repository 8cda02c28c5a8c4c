import io
import json
import logging

from saaschat.config import Secret
from saaschat.jsonlog import REDACTED, JsonFormatter, configure_logging, redact, scrub


def test_sensitive_keys_are_redacted_recursively():
    data = redact(
        {
            "user": "a",
            "password": "pw",
            "nested": {"api_key": "k", "list": [{"token": "t"}]},
            "secret_value": Secret("s"),
        }
    )
    assert data["user"] == "a"
    assert data["password"] == REDACTED
    assert data["nested"]["api_key"] == REDACTED
    assert data["nested"]["list"][0]["token"] == REDACTED
    assert data["secret_value"] == REDACTED


def test_text_is_scrubbed_of_credentials():
    assert scrub("amqp://svc:pa55@rabbit:5672/") == f"amqp://svc:{REDACTED}@rabbit:5672/"
    assert "abc.def" not in scrub("Authorization: Bearer abc.def")
    assert "pw1" not in scrub("connect password=pw1 host=db")


def test_formatter_emits_one_json_object_per_line_without_secrets():
    stream = io.StringIO()
    configure_logging("auth", "INFO", stream=stream)
    try:
        log = logging.getLogger("test.jsonlog")
        log.info("login for user", extra={"user_id": 5, "password": "hunter2"})
        log.warning("dsn postgresql://u:hunter3@db/x")
        try:
            raise ValueError("token=hunter4")
        except ValueError:
            log.exception("failed")
    finally:
        logging.getLogger().handlers.clear()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert records[0]["service"] == "auth"
    assert records[0]["level"] == "info"
    assert records[0]["user_id"] == 5
    assert records[2]["error"]["type"] == "ValueError"
    assert "hunter" not in stream.getvalue()


def test_formatter_keeps_standard_fields():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "hello %s", ("world",), None)
    entry = json.loads(JsonFormatter("svc").format(record))
    assert entry["message"] == "hello world"
    assert entry["level"] == "error"
    assert entry["time"].endswith("+00:00")
