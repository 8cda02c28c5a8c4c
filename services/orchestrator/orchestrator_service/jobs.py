"""Job requests accepted by the orchestrator and their queue message form."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from saaschat.validation import normalize_email

MAX_SUBJECT = 200
MAX_BODY = 100_000


class InvalidJob(ValueError):
    pass


@dataclass(frozen=True)
class EmailJob:
    job_id: str
    to: str
    subject: str
    body: str
    created_at: str

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


def parse_job(payload: dict[str, Any], job_id: str | None = None) -> EmailJob:
    if payload.get("type") != "email":
        raise InvalidJob('type must be "email"')
    to = normalize_email(payload.get("to"))
    if to is None:
        raise InvalidJob("to must be a valid email address")
    subject = payload.get("subject")
    if not isinstance(subject, str) or not subject.strip() or len(subject) > MAX_SUBJECT:
        raise InvalidJob(f"subject must be a non-empty string of at most {MAX_SUBJECT} chars")
    if "\r" in subject or "\n" in subject:
        raise InvalidJob("subject must be a single line")
    body = payload.get("body")
    if not isinstance(body, str) or len(body) > MAX_BODY:
        raise InvalidJob(f"body must be a string of at most {MAX_BODY} chars")
    return EmailJob(
        job_id=job_id or uuid.uuid4().hex,
        to=to,
        subject=subject.strip(),
        body=body,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
