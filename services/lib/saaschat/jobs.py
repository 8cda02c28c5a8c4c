"""The email job: the message the orchestrator publishes and the email-worker consumes.

One description of the contract, checked by the same rules on both sides of the queue: the
producer validates a request before publishing, the consumer validates what it receives (a
message could come from an older release or another publisher).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from saaschat.validation import normalize_email

MAX_SUBJECT = 200
MAX_BODY = 100_000
MAX_JOB_ID = 64


class InvalidJob(ValueError):
    pass


@dataclass(frozen=True)
class EmailJob:
    job_id: str
    to: str
    subject: str
    body: str
    created_at: str = ""

    def encode(self) -> bytes:
        return json.dumps(
            {
                "job_id": self.job_id,
                "type": "email",
                "to": self.to,
                "subject": self.subject,
                "body": self.body,
                "created_at": self.created_at,
            },
            separators=(",", ":"),
        ).encode("utf-8")


def checked_fields(data: dict[str, Any]) -> tuple[str, str, str]:
    """(to, subject, body) of a job object, or InvalidJob naming the first bad field."""
    if data.get("type") != "email":
        raise InvalidJob('type must be "email"')
    to = normalize_email(data.get("to"))
    if to is None:
        raise InvalidJob("to must be a valid email address")
    subject = data.get("subject")
    if not isinstance(subject, str) or not subject.strip() or len(subject) > MAX_SUBJECT:
        raise InvalidJob(f"subject must be a non-empty string of at most {MAX_SUBJECT} chars")
    if "\r" in subject or "\n" in subject:
        raise InvalidJob("subject must be a single line")
    body = data.get("body")
    if not isinstance(body, str) or len(body) > MAX_BODY:
        raise InvalidJob(f"body must be a string of at most {MAX_BODY} chars")
    return to, subject.strip(), body


def job_from_request(payload: dict[str, Any], job_id: str | None = None) -> EmailJob:
    """A new job from an API request: a fresh id and the time it was accepted."""
    to, subject, body = checked_fields(payload)
    return EmailJob(
        job_id=job_id or uuid.uuid4().hex,
        to=to,
        subject=subject,
        body=body,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def decode_job(raw: bytes) -> EmailJob:
    """A job from a queue message."""
    try:
        data: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidJob("message body is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidJob('message is not an object of type "email"')
    to, subject, body = checked_fields(data)
    job_id = data.get("job_id")
    if not isinstance(job_id, str) or not job_id or len(job_id) > MAX_JOB_ID:
        raise InvalidJob("job_id missing")
    if not job_id.isprintable():
        raise InvalidJob("job_id must be printable")
    return EmailJob(job_id, to, subject, body, str(data.get("created_at") or ""))
