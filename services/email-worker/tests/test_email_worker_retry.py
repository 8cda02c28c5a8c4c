import pytest

from email_worker.retry import DEAD_LETTER, RETRY, attempt_of, backoff_seconds, decide


def test_backoff_doubles_and_is_capped():
    assert [backoff_seconds(n, 2.0, 30.0) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
    assert backoff_seconds(10_000, 1.0, 60.0) == 60.0
    with pytest.raises(ValueError):
        backoff_seconds(0, 1.0, 60.0)


def test_transient_failures_retry_until_the_last_attempt():
    decisions = [decide(n, permanent=False, max_attempts=4, base=1, cap=100) for n in (1, 2, 3, 4)]
    assert [d.action for d in decisions] == [RETRY, RETRY, RETRY, DEAD_LETTER]
    assert [d.delay for d in decisions[:3]] == [1, 2, 4]
    assert [d.next_attempt for d in decisions[:3]] == [2, 3, 4]


def test_permanent_failures_dead_letter_at_once():
    assert decide(1, permanent=True, max_attempts=10, base=1, cap=10).action == DEAD_LETTER


def test_attempt_header_parsing():
    assert attempt_of(None) == 1
    assert attempt_of({}) == 1
    assert attempt_of({"x-attempt": 3}) == 3
    assert attempt_of({"x-attempt": b"4"}) == 4
    assert attempt_of({"x-attempt": "zero"}) == 1
    assert attempt_of({"x-attempt": -2}) == 1
