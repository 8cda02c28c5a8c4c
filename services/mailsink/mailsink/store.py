"""Received mail, parsed, held in memory (oldest dropped beyond the limit)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import itertools
from collections import deque
from typing import Any


def parse_mail(raw: bytes) -> dict[str, Any]:
    """Subject, headers and the text body (line endings as LF, without the final newline
    that MIME encoding appends)."""
    message = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
    part = message.get_body(preferencelist=("plain", "html"))
    body = part.get_content().removesuffix("\n") if part is not None else ""
    return {
        "subject": str(message.get("Subject", "")),
        "body": body,
        "headers": {k: str(v) for k, v in message.items()},
        "message_id": str(message.get("Message-ID", "")),
    }


class MailStore:
    def __init__(self, limit: int = 1000) -> None:
        self._messages: deque[dict[str, Any]] = deque(maxlen=limit)
        self._ids = itertools.count(1)

    def add(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> dict[str, Any]:
        parsed = parse_mail(raw)
        entry = {
            "id": next(self._ids),
            "from": mail_from,
            "to": list(rcpt_tos),
            "received_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "size": len(raw),
            **parsed,
        }
        self._messages.append(entry)
        return entry

    def list(self, to: str | None = None) -> list[dict[str, Any]]:
        if to is None:
            return list(self._messages)
        wanted = to.lower()
        return [m for m in self._messages if any(r.lower() == wanted for r in m["to"])]

    def clear(self) -> int:
        count = len(self._messages)
        self._messages.clear()
        return count

    def __len__(self) -> int:
        return len(self._messages)
