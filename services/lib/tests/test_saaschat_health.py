import asyncio

import pytest

from saaschat.breaker import CircuitBreaker
from saaschat.health import (
    FAIL,
    PASS,
    WARN,
    Check,
    HealthMonitor,
    Observation,
    aggregate,
    build_document,
    decide_status,
    http_status_for,
    is_ready,
    run_check,
    run_checks,
)


async def ok():
    return None


async def down():
    raise ConnectionError("connection refused")


async def hang():
    await asyncio.sleep(30)


@pytest.mark.parametrize(
    ("probe_ok", "required", "breaker_open", "expected"),
    [
        (True, True, False, PASS),
        (True, True, True, WARN),
        (True, False, True, WARN),
        (False, True, False, FAIL),
        (False, True, True, FAIL),
        (False, False, False, WARN),
        (False, False, True, WARN),
    ],
)
def test_decide_status(probe_ok, required, breaker_open, expected):
    assert (
        decide_status(probe_ok=probe_ok, required=required, breaker_open=breaker_open) == expected
    )


def test_aggregate_takes_the_worst():
    assert aggregate([]) == PASS
    assert aggregate([PASS, WARN, PASS]) == WARN
    assert aggregate([WARN, FAIL, PASS]) == FAIL
    assert [http_status_for(s) for s in (PASS, WARN, FAIL)] == [200, 200, 503]


async def test_open_breaker_turns_a_passing_check_into_warn():
    breaker = CircuitBreaker("postgresql", failure_threshold=1, reset_timeout=60)
    breaker.record_failure()
    result = await run_check(Check("postgresql", ok, breaker=breaker), timeout=0.5)
    assert result.probe_ok is True
    assert result.status == WARN
    assert "circuit breaker open" in result.output


async def test_hanging_probe_times_out_quickly_and_fails():
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await run_checks(
        [Check("postgresql", hang), Check("redis", down, required=False), Check("x", ok)],
        timeout=0.1,
    )
    assert loop.time() - started < 1.0  # concurrent, each bounded
    by_key = {r.key: r for r in results}
    assert by_key["postgresql:responseTime"].status == FAIL
    assert by_key["postgresql:responseTime"].output == "timed out"
    assert by_key["redis:responseTime"].status == WARN
    assert by_key["x:responseTime"].status == PASS
    assert is_ready(results) is False
    assert is_ready([by_key["redis:responseTime"], by_key["x:responseTime"]]) is True


async def test_document_follows_the_health_check_draft():
    async def schema():
        return Observation(value=3, output="release expects 3")

    results = await run_checks(
        [Check("postgresql", ok), Check("schema", schema, measurement="version")], timeout=0.5
    )
    doc = build_document(
        results,
        service_id="auth",
        version="1.0.0",
        release_id="r7",
        description="auth service",
        uptime_seconds=12.5,
    )
    assert doc["status"] == PASS
    assert (doc["version"], doc["releaseId"], doc["serviceId"]) == ("1.0.0", "r7", "auth")
    pg = doc["checks"]["postgresql:responseTime"][0]
    assert pg["componentType"] == "datastore"
    assert pg["observedUnit"] == "ms"
    assert isinstance(pg["observedValue"], float)
    assert pg["time"].endswith("Z")
    assert doc["checks"]["schema:version"][0]["observedValue"] == 3
    assert doc["checks"]["uptime"][0]["observedValue"] == 12.5
    assert "output" not in doc


async def test_document_fails_and_explains_when_a_required_check_fails():
    results = await run_checks([Check("rabbitmq", down, component_type="component")], 0.5)
    doc = build_document(
        results, service_id="s", version="v", release_id="r", description="d", uptime_seconds=1
    )
    assert doc["status"] == FAIL
    assert "rabbitmq:responseTime" in doc["output"]
    assert doc["checks"]["rabbitmq:responseTime"][0]["status"] == FAIL


async def test_monitor_cached_readiness_and_shutdown():
    monitor = HealthMonitor("s", "v", "r", "d", timeout=0.2, checks=[Check("x", ok)])
    assert monitor.cached_ready() is False  # nothing evaluated yet
    await monitor.evaluate()
    assert monitor.cached_ready() is True
    monitor.shutting_down = True
    assert monitor.cached_ready() is False
