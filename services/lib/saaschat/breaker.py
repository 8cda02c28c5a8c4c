"""Circuit breaker guarding calls to a dependency.

closed     calls pass; ``failure_threshold`` consecutive failures open the circuit.
open       calls fail fast with CircuitOpenError until ``reset_timeout`` has elapsed.
half_open  one trial call is let through; success closes the circuit, failure re-opens it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class CircuitOpenError(Exception):
    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"circuit {name} is open; retry in {retry_after:.1f}s")
        self.name = name
        self.retry_after = retry_after


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        on_state_change: Callable[[str, str], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._on_state_change = on_state_change
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self.reset_timeout:
            self._transition(HALF_OPEN)
        return self._state

    @property
    def is_open(self) -> bool:
        return self.state == OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def retry_after(self) -> float:
        if self._state != OPEN:
            return 0.0
        return max(0.0, self.reset_timeout - (self._clock() - self._opened_at))

    def allow_request(self) -> bool:
        """True if a call may go ahead now; in half_open this reserves the single trial."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def release_trial(self) -> None:
        """A reserved trial ended without telling anything about the dependency."""
        self._trial_in_flight = False

    def record_success(self) -> None:
        self._trial_in_flight = False
        self._failures = 0
        if self._state != CLOSED:
            self._transition(CLOSED)

    def record_failure(self) -> None:
        self._trial_in_flight = False
        self._failures += 1
        if self._state == HALF_OPEN or (
            self._state == CLOSED and self._failures >= self.failure_threshold
        ):
            self._opened_at = self._clock()
            self._transition(OPEN)
        elif self._state == OPEN:
            self._opened_at = self._clock()

    def ensure_allowed(self) -> None:
        if not self.allow_request():
            raise CircuitOpenError(self.name, self.retry_after())

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        is_failure: Callable[[BaseException], bool] = lambda exc: isinstance(exc, Exception),
    ) -> T:
        """Run ``fn`` through the breaker. Exceptions for which ``is_failure`` is false (for
        example a constraint violation) prove the dependency answered and count as success."""
        self.ensure_allowed()
        try:
            result = await fn()
        except BaseException as exc:
            if isinstance(exc, Exception) and is_failure(exc):
                self.record_failure()
            elif isinstance(exc, Exception):
                self.record_success()
            else:
                self.release_trial()
            raise
        self.record_success()
        return result

    def _transition(self, new_state: str) -> None:
        old, self._state = self._state, new_state
        if new_state != HALF_OPEN:
            self._trial_in_flight = False
        if old != new_state and self._on_state_change is not None:
            self._on_state_change(old, new_state)
