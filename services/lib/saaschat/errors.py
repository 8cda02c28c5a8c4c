"""Errors shared by the services."""

from __future__ import annotations


class DependencyUnavailable(Exception):
    """A dependency could not be reached; request handlers answer 503 with Retry-After."""

    def __init__(self, dependency: str, reason: str, retry_after: float = 1.0) -> None:
        super().__init__(f"{dependency} unavailable: {reason}")
        self.dependency = dependency
        self.retry_after = retry_after
