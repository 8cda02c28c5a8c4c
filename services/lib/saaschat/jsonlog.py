"""One JSON object per line on stdout, with secrets redacted.

Extra fields are passed with ``logger.info("message", extra={"user_id": 7})``. Any field whose
name looks sensitive (password, secret, token, authorization, dsn, ...) is replaced by
``[REDACTED]``; message text is scrubbed of bearer tokens, ``password=...`` pairs and
credentials embedded in URLs.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import sys
import traceback
from typing import Any

from saaschat.config import Secret

REDACTED = "[REDACTED]"

_SENSITIVE_KEY = re.compile(
    r"pass(word|wd)?|secret|token|authori[sz]ation|dsn|api[-_]?key|cookie|credential|signature",
    re.IGNORECASE,
)
_SCRUBBERS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host -> scheme://user:[REDACTED]@host
    (re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?P<post>@)"), REDACTED),
    (re.compile(r"(?P<pre>\bBearer\s+)[A-Za-z0-9._~+/=-]+(?P<post>)", re.IGNORECASE), REDACTED),
    (
        re.compile(
            r"(?P<pre>\b(?:password|passwd|secret|token|api_key)\s*[=:]\s*)[^\s&,;]+(?P<post>)",
            re.IGNORECASE,
        ),
        REDACTED,
    ),
)

_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def scrub(text: str) -> str:
    for pattern, replacement in _SCRUBBERS:
        text = pattern.sub(lambda m, r=replacement: f"{m.group('pre')}{r}{m.group('post')}", text)
    return text


def redact(value: Any, key: str | None = None, _depth: int = 0) -> Any:
    """Copy of ``value`` with sensitive keys redacted and strings scrubbed."""
    if key is not None and _SENSITIVE_KEY.search(key):
        return REDACTED
    if isinstance(value, Secret):
        return REDACTED
    if _depth > 6:
        return "..."
    if isinstance(value, dict):
        return {str(k): redact(v, str(k), _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [redact(v, None, _depth + 1) for v in value]
    if isinstance(value, str):
        return scrub(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return scrub(str(value))


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _dt.datetime.fromtimestamp(record.created, _dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        for name, value in record.__dict__.items():
            if name in _STANDARD_ATTRS or name.startswith("_") or name in entry:
                continue
            entry[name] = redact(value, name)
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, tb = record.exc_info
            entry["error"] = {
                "type": exc_type.__name__,
                "message": scrub(str(exc)),
                "stack": scrub("".join(traceback.format_tb(tb))),
            }
        return json.dumps(entry, default=str, separators=(",", ":"))


def configure_logging(service: str, level: str = "INFO", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Client libraries are chatty while a dependency is down; the services log that themselves.
    for noisy in ("aio_pika", "aiormq", "asyncio", "mail.log", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
