"""The bake window after cutover: the new release is watched for a while before it is called
live, and rolled back on a regression, as on a failed health check.

What is watched is nginx's JSON access log: every public request with its status and time,
the edge's view of what users get (a crashed upstream's 502 included, which no service's own
histogram sees), with or without Prometheus in the environment. Per service (nginx's route
table), the new release's 5xx share and p99 are judged against the same figures of the last
minutes before the rollout (the previous release). Too few requests is no verdict.

Pure parts (parse, sum up, judge) are unit-tested; `watch` reads the log through the runner,
so a remote environment's log is read over SSH on its host.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from deploysuite.config.layers import Config
from deploysuite.core import commands
from deploysuite.core.errors import ChecksFailed, ConfigError
from deploysuite.core.runner import Command, Runner
from deploysuite.edge.nginx import DEFAULT_ROUTES
from deploysuite.engines.stack import Stack

LOG_LINES = 50_000  # read at most this many of nginx's newest lines per look


@dataclass(frozen=True)
class BakePolicy:
    seconds: int = 120  # DEPLOY_BAKE_SECONDS; 0: no bake
    poll_seconds: int = 5
    min_requests: int = 20  # fewer requests to a service: no verdict on it
    max_5xx_increase: float = 0.02  # the 5xx share may grow by 2 points over the baseline
    p99_factor: float = 2.0  # p99 may double ...
    p99_floor_seconds: float = 0.5  # ... and is never a regression below this
    baseline_seconds: int = 600  # the previous release's minutes before the rollout


def bake_policy(config: Config) -> BakePolicy:
    """The environment's DEPLOY_BAKE_* settings over the defaults; a bad value is refused."""
    d = BakePolicy()

    def number(key: str, raw: str | None, default: float, whole: bool = False) -> float:
        if raw is None or raw == "":
            return default
        try:
            value = int(raw) if whole else float(raw)
        except ValueError:
            value = -1
        if value < 0 or not math.isfinite(value):
            raise ConfigError(
                f"{key}={raw!r} is not a {'whole ' if whole else ''}number of at least 0",
                f"set {key} in {config.paths.env_config}, e.g. {default}",
            )
        return value

    seconds = number("DEPLOY_BAKE_SECONDS", config.get("DEPLOY_BAKE_SECONDS"), d.seconds, True)
    least = config.get("DEPLOY_BAKE_MIN_REQUESTS")
    increase = config.get("DEPLOY_BAKE_MAX_5XX_INCREASE")
    factor = config.get("DEPLOY_BAKE_P99_FACTOR")
    floor = config.get("DEPLOY_BAKE_P99_FLOOR_SECONDS")
    policy = BakePolicy(
        seconds=int(seconds),
        min_requests=int(number("DEPLOY_BAKE_MIN_REQUESTS", least, d.min_requests, True)),
        max_5xx_increase=number("DEPLOY_BAKE_MAX_5XX_INCREASE", increase, d.max_5xx_increase),
        p99_factor=number("DEPLOY_BAKE_P99_FACTOR", factor, d.p99_factor),
        p99_floor_seconds=number("DEPLOY_BAKE_P99_FLOOR_SECONDS", floor, d.p99_floor_seconds),
    )
    if policy.max_5xx_increase > 1:
        raise ConfigError(
            f"DEPLOY_BAKE_MAX_5XX_INCREASE={increase} is a share and cannot exceed 1",
            "0.02 means 2 percentage points more 5xx than before the deploy",
        )
    return policy


@dataclass(frozen=True)
class Traffic:
    """One service's requests in a window, as nginx answered them."""

    requests: int
    errors: int  # 5xx
    p99: float | None  # seconds

    @property
    def ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def service_of(uri: str) -> str | None:
    """The upstream of a public path by nginx's own route table; None for /health, static..."""
    for route in DEFAULT_ROUTES:
        if uri == route.path if route.exact else uri.startswith(route.path):
            return route.upstream
    return None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def traffic(
    lines: Iterable[str], since: float | None = None, until: float | None = None
) -> dict[str, Traffic]:
    """Service -> its traffic from nginx access-log lines (JSON, see nginx/templates), only the
    requests logged in [since, until) (epoch seconds, the host's clock). Other lines (nginx's
    own notices) are skipped."""
    statuses: dict[str, list[int]] = {}
    times: dict[str, list[float]] = {}
    for line in lines:
        start = line.find("{")
        if start < 0:
            continue
        try:
            entry = json.loads(line[start:])
            at = dt.datetime.fromisoformat(entry["time"]).timestamp()
            status, took, uri = int(entry["status"]), float(entry["request_time"]), entry["uri"]
        except (ValueError, KeyError, TypeError):
            continue
        if (since is not None and at < since) or (until is not None and at >= until):
            continue
        service = service_of(str(uri))
        if service is None:
            continue
        statuses.setdefault(service, []).append(status)
        times.setdefault(service, []).append(took)
    return {
        name: Traffic(len(codes), sum(1 for c in codes if c >= 500), percentile(times[name], 0.99))
        for name, codes in sorted(statuses.items())
    }


def judge(
    before: Mapping[str, Traffic], after: Mapping[str, Traffic], policy: BakePolicy
) -> list[str]:
    """The regressions of the new release, one sentence each; [] when none (or too few
    requests to say)."""
    found = []
    for service, now in sorted(after.items()):
        if now.requests < policy.min_requests:
            continue
        base = before.get(service)
        if base is not None and base.requests < policy.min_requests:
            base = None
        base_ratio = base.ratio if base else 0.0
        if now.ratio > base_ratio + policy.max_5xx_increase:
            found.append(
                f"{service} answered {now.errors} of {now.requests} requests with 5xx "
                f"({now.ratio:.1%}, {base_ratio:.1%} before)"
            )
        limit = policy.p99_floor_seconds
        if base is not None and base.p99 is not None:
            limit = max(limit, base.p99 * policy.p99_factor)
        if now.p99 is not None and now.p99 > limit:
            before_text = f"{base.p99:.3f} s before" if base and base.p99 is not None else "new"
            found.append(f"{service} p99 is {now.p99:.3f} s ({before_text}, limit {limit:.3f} s)")
    return found


def rows(before: Mapping[str, Traffic], after: Mapping[str, Traffic]) -> list[dict[str, str]]:
    """The closing table: each service's requests, 5xx share and p99, before and during."""

    def p99(t: Traffic | None) -> str:
        return f"{t.p99 * 1000:.0f} ms" if t and t.p99 is not None else "-"

    def share(t: Traffic | None) -> str:
        return f"{t.errors}/{t.requests} ({t.ratio:.1%})" if t else "-"

    return [
        {
            "service": name,
            "5xx before": share(before.get(name)),
            "5xx after": share(after.get(name)),
            "p99 before": p99(before.get(name)),
            "p99 after": p99(after.get(name)),
        }
        for name in sorted(set(before) | set(after))
    ]


BAKE_COLUMNS = ("service", "5xx before", "5xx after", "p99 before", "p99 after")


# --- the world ------------------------------------------------------------------------------


def host_now(runner: Runner) -> float:
    """The host's clock (epoch seconds): nginx logs in it, and a laptop's may differ."""
    result = runner.run(Command(("date", "+%s"), mutates=False, timeout=30))
    return float(result.stdout.strip())


def log_argv(stack: Stack, since: float, until: float | None = None) -> tuple[str, ...]:
    """nginx's log lines since `since` (and before `until`), at most LOG_LINES of them."""
    args = ["logs", "--no-color", "--no-log-prefix", "--tail", str(LOG_LINES),
            "--since", str(int(since))]  # fmt: skip
    if until is not None:
        args += ["--until", str(math.ceil(until))]
    return commands.compose(stack.project, stack.files, *args, "nginx", profiles=stack.profiles)


def read_traffic(
    runner: Runner, stack: Stack, env: Mapping[str, str], since: float, until: float | None = None
) -> dict[str, Traffic]:
    command = Command(log_argv(stack, since, until), env=env, mutates=False, timeout=120)
    result = runner.run(command, check=False)
    if not result.ok:
        return {}
    return traffic(result.stdout.splitlines(), since, until)


def watch(
    runner: Runner,
    stack: Stack,
    env: Mapping[str, str],
    policy: BakePolicy,
    baseline: Mapping[str, Traffic],
    env_name: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[dict[str, str]]:
    """Watch the new release for policy.seconds; raise ChecksFailed at the first regression
    (the deploy then rolls back); else the closing rows."""
    events = runner.events
    start, began = host_now(runner), clock()
    after: dict[str, Traffic] = {}
    while True:
        left = policy.seconds - (clock() - began)
        if left > 0:
            sleep(min(policy.poll_seconds, left))
        after = read_traffic(runner, stack, env, start)
        found = judge(baseline, after, policy)
        if found:
            for text in found:
                events.info(f"  regression: {text}")
            service = found[0].split()[0]
            raise ChecksFailed(f"bake window: {'; '.join(found)}",
                               f"inv logs --env={env_name} --service {service}")  # fmt: skip
        elapsed = clock() - began
        total = sum(t.requests for t in after.values())
        errors = sum(t.errors for t in after.values())
        events.info(f"  {min(elapsed, policy.seconds):.0f}/{policy.seconds} s: "
                    f"{total} requests, {errors} with 5xx")  # fmt: skip
        if elapsed >= policy.seconds:
            return rows(baseline, after)
