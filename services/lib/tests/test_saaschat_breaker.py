import pytest

from saaschat.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitOpenError


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def make(threshold=3, reset=10.0):
    clock = Clock()
    changes = []
    breaker = CircuitBreaker(
        "db",
        failure_threshold=threshold,
        reset_timeout=reset,
        clock=clock,
        on_state_change=lambda old, new: changes.append((old, new)),
    )
    return breaker, clock, changes


def test_opens_after_threshold_consecutive_failures():
    breaker, _, changes = make(threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == CLOSED
    breaker.record_failure()
    assert breaker.state == OPEN
    assert not breaker.allow_request()
    assert changes == [(CLOSED, OPEN)]


def test_success_resets_the_failure_count():
    breaker, _, _ = make(threshold=2)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == CLOSED


def test_half_open_after_reset_timeout_allows_one_trial():
    breaker, clock, _ = make(threshold=1, reset=10)
    breaker.record_failure()
    clock.now += 9.9
    assert breaker.state == OPEN
    assert breaker.retry_after() == pytest.approx(0.1)
    clock.now += 0.1
    assert breaker.state == HALF_OPEN
    assert breaker.allow_request() is True
    assert breaker.allow_request() is False  # only one trial at a time


def test_trial_success_closes_and_failure_reopens():
    breaker, clock, changes = make(threshold=1, reset=5)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow_request()
    breaker.record_failure()
    assert breaker.state == OPEN
    clock.now += 5
    assert breaker.allow_request()
    breaker.record_success()
    assert breaker.state == CLOSED
    assert changes[-1] == (HALF_OPEN, CLOSED)


async def test_call_fails_fast_when_open_and_classifies_errors():
    breaker, _, _ = make(threshold=1)

    async def constraint_violation():
        raise KeyError("duplicate")

    with pytest.raises(KeyError):
        await breaker.call(constraint_violation, is_failure=lambda e: not isinstance(e, KeyError))
    assert breaker.state == CLOSED  # the dependency answered

    async def down():
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        await breaker.call(down)
    assert breaker.state == OPEN
    called = []

    async def never():
        called.append(1)

    with pytest.raises(CircuitOpenError) as info:
        await breaker.call(never)
    assert called == []
    assert info.value.retry_after > 0
