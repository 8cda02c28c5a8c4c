"""Retry schedule and dead-letter decision for email jobs.

Attempt n (1-based) that fails transiently is retried after
``min(max_seconds, base_seconds * 2 ** (n - 1))`` seconds, until ``max_attempts`` attempts
have been made; then, or at once for a permanent failure (an SMTP 5xx reply, a malformed
job), the message goes to the dead-letter queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from saaschat.amqp import ATTEMPT_HEADER

RETRY = "retry"
DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class Decision:
    action: str
    delay: float = 0.0
    next_attempt: int = 0


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    if attempt < 1:
        raise ValueError("attempts are numbered from 1")
    # Bound the exponent so huge attempt numbers cannot overflow.
    return min(cap, base * (2 ** min(attempt - 1, 60)))


def decide(
    attempt: int, *, permanent: bool, max_attempts: int, base: float, cap: float
) -> Decision:
    if permanent or attempt >= max_attempts:
        return Decision(DEAD_LETTER)
    return Decision(RETRY, backoff_seconds(attempt, base, cap), attempt + 1)


def attempt_of(headers: Mapping[str, Any] | None) -> int:
    """The 1-based attempt number carried in the message headers (1 when absent or bad)."""
    value = (headers or {}).get(ATTEMPT_HEADER)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        attempt = int(value)
    except (TypeError, ValueError):
        return 1
    return attempt if attempt >= 1 else 1
