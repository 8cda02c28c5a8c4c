"""Health contract shared by every service.

/health           cheap: last known readiness, 200 or 503 (503 while shutting down)
/health/live      the process is alive; never looks at dependencies
/health/ready     runs every check now; 200 when all required checks pass, else 503
/health/detailed  IETF health-check document (draft-inadarei-api-health-check),
                  ``application/health+json``, 200 for pass/warn, 503 for fail

Each check runs concurrently with the others and under its own short timeout, so a dead
dependency never hangs an endpoint. Status of one check:

- probe failed and the dependency is required      -> fail
- probe failed and the dependency is optional      -> warn
- probe passed but the dependency's breaker is open -> warn (degraded: requests fail fast)
- probe passed                                      -> pass
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from saaschat.breaker import CircuitBreaker

PASS = "pass"
WARN = "warn"
FAIL = "fail"
_SEVERITY = {PASS: 0, WARN: 1, FAIL: 2}

HEALTH_CONTENT_TYPE = "application/health+json"

log = logging.getLogger("saaschat.health")


@dataclass(frozen=True)
class Observation:
    """What a probe may return instead of None to report its own observed value."""

    value: Any
    unit: str | None = None
    output: str | None = None


@dataclass
class Check:
    name: str
    probe: Callable[[], Awaitable[Observation | None]]
    component_type: str = "datastore"
    measurement: str = "responseTime"
    required: bool = True
    breaker: CircuitBreaker | None = None

    @property
    def key(self) -> str:
        return f"{self.name}:{self.measurement}"


@dataclass
class CheckResult:
    name: str
    key: str
    component_type: str
    status: str
    probe_ok: bool
    required: bool
    observed_value: Any
    observed_unit: str | None
    output: str | None
    time: str

    def to_json(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "componentType": self.component_type,
            "observedValue": self.observed_value,
        }
        if self.observed_unit:
            item["observedUnit"] = self.observed_unit
        item["status"] = self.status
        item["time"] = self.time
        if self.output:
            item["output"] = self.output
        return item


def rfc3339(ts: float | None = None) -> str:
    moment = _dt.datetime.fromtimestamp(time.time() if ts is None else ts, _dt.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def decide_status(*, probe_ok: bool, required: bool, breaker_open: bool) -> str:
    if not probe_ok:
        return FAIL if required else WARN
    if breaker_open:
        return WARN
    return PASS


def aggregate(statuses: Iterable[str]) -> str:
    worst = PASS
    for status in statuses:
        if _SEVERITY[status] > _SEVERITY[worst]:
            worst = status
    return worst


def http_status_for(status: str) -> int:
    return 503 if status == FAIL else 200


def is_ready(results: Iterable[CheckResult]) -> bool:
    return all(r.probe_ok for r in results if r.required)


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    text = str(exc).strip() or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:300]


async def run_check(check: Check, timeout: float) -> CheckResult:
    started = time.perf_counter()
    observation: Observation | None = None
    error: str | None = None
    try:
        observation = await asyncio.wait_for(check.probe(), timeout)
        probe_ok = True
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        probe_ok = False
        error = _describe_error(exc)
    elapsed_ms = round((time.perf_counter() - started) * 1000.0, 3)
    breaker_open = check.breaker is not None and check.breaker.is_open
    status = decide_status(probe_ok=probe_ok, required=check.required, breaker_open=breaker_open)
    output = error
    if probe_ok and breaker_open:
        output = f"circuit breaker open after {check.breaker.consecutive_failures} failures"
    if observation is not None:
        value, unit = observation.value, observation.unit
        output = output or observation.output
    else:
        value, unit = elapsed_ms, "ms"
    return CheckResult(
        name=check.name,
        key=check.key,
        component_type=check.component_type,
        status=status,
        probe_ok=probe_ok,
        required=check.required,
        observed_value=value,
        observed_unit=unit,
        output=output,
        time=rfc3339(),
    )


async def run_checks(checks: Iterable[Check], timeout: float) -> list[CheckResult]:
    return list(await asyncio.gather(*(run_check(c, timeout) for c in checks)))


def build_document(
    results: Iterable[CheckResult],
    *,
    service_id: str,
    version: str,
    release_id: str,
    description: str,
    uptime_seconds: float,
    shutting_down: bool = False,
) -> dict[str, Any]:
    results = list(results)
    checks: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        checks.setdefault(result.key, []).append(result.to_json())
    checks["uptime"] = [
        {
            "componentType": "system",
            "observedValue": round(uptime_seconds, 3),
            "observedUnit": "s",
            "status": PASS,
            "time": rfc3339(),
        }
    ]
    status = aggregate(r.status for r in results)
    document: dict[str, Any] = {
        "status": status,
        "version": version,
        "releaseId": release_id,
        "serviceId": service_id,
        "description": description,
        "checks": checks,
    }
    notes = []
    if shutting_down:
        notes.append("shutting down: not accepting new traffic")
    if notes:
        document["notes"] = notes
    if status != PASS:
        problems = [f"{r.key}: {r.output or r.status}" for r in results if r.status != PASS]
        document["output"] = "; ".join(problems)[:1000]
    return document


@dataclass
class HealthMonitor:
    """Holds a service's checks and the last evaluation, for the health endpoints."""

    service_id: str
    version: str
    release_id: str
    description: str
    timeout: float = 1.0
    checks: list[Check] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)
    shutting_down: bool = False
    on_results: Callable[[list[CheckResult]], None] | None = None
    last_results: list[CheckResult] | None = None

    def add(self, check: Check) -> None:
        self.checks.append(check)

    def uptime(self) -> float:
        return time.monotonic() - self.started_at

    async def evaluate(self) -> list[CheckResult]:
        results = await run_checks(self.checks, self.timeout)
        previous = {r.key: r.status for r in self.last_results or []}
        for result in results:
            before = previous.get(result.key)
            if before is not None and before != result.status:
                log.log(
                    logging.INFO if result.status == "pass" else logging.WARNING,
                    "health check changed",
                    extra={"check": result.key, "from": before, "to": result.status},
                )
        self.last_results = results
        if self.on_results is not None:
            self.on_results(results)
        return results

    def cached_ready(self) -> bool:
        if self.shutting_down or self.last_results is None:
            return False
        return is_ready(self.last_results)

    def document(self, results: list[CheckResult]) -> dict[str, Any]:
        return build_document(
            results,
            service_id=self.service_id,
            version=self.version,
            release_id=self.release_id,
            description=self.description,
            uptime_seconds=self.uptime(),
            shutting_down=self.shutting_down,
        )

    async def run_periodically(self, interval: float) -> None:
        while True:
            try:
                await self.evaluate()
            except asyncio.CancelledError:
                raise
            except Exception:  # a check must never kill the loop
                log.exception("health evaluation failed")
            await asyncio.sleep(interval)
