"""The bake window's pure parts: nginx's access log summed up per service, and the verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploysuite.core.errors import ChecksFailed, ConfigError
from deploysuite.core.events import Events
from deploysuite.core.runner import Result, Runner
from deploysuite.deploy import bake
from deploysuite.deploy.bake import BakePolicy, Traffic, judge, traffic
from deploysuite.engines.stack import Stack
from tests.unit.envtree import config_in

REPO = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000  # 2027-01-15T08:00:00Z


def line(uri: str, status: int, took: float = 0.01, at: float = T0) -> str:
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
    return json.dumps({"time": when, "uri": uri, "status": status, "request_time": took})


def test_requests_are_counted_per_service_by_nginx_routes():
    lines = [
        line("/api/chat/messages", 201, 0.02),
        line("/api/chat/messages", 502, 0.5),
        line("/ws", 101, 30.0),
        line("/api/analytics/counts", 500),
        line("/health", 200),  # not a service route: left out
        "2027/01/15 08:00:00 [notice] 1#1: signal process started",  # nginx's own notice
        "{not json",
    ]
    got = traffic(lines)
    assert set(got) == {"chat", "analytics"}
    assert got["chat"] == Traffic(3, 1, 30.0)
    assert got["analytics"].errors == 1 and got["analytics"].ratio == 1.0


def test_only_the_window_is_counted():
    lines = [line("/api/auth/me", 500, at=T0 - 1), line("/api/auth/me", 200, at=T0),
             line("/api/auth/me", 200, at=T0 + 10)]  # fmt: skip
    assert traffic(lines, since=T0, until=T0 + 10) == {"auth": Traffic(1, 0, 0.01)}


def test_p99_is_the_nearest_rank():
    assert bake.percentile([float(i) for i in range(1, 101)], 0.99) == 99.0
    assert bake.percentile([0.3], 0.99) == 0.3
    assert bake.percentile([], 0.99) is None


POLICY = BakePolicy(min_requests=20, max_5xx_increase=0.02, p99_factor=2.0, p99_floor_seconds=0.5)


def test_a_route_that_fails_after_the_deploy_is_a_regression():
    before = {"analytics": Traffic(100, 0, 0.01)}
    after = {"analytics": Traffic(40, 20, 0.01)}
    found = judge(before, after, POLICY)
    assert found == ["analytics answered 20 of 40 requests with 5xx (50.0%, 0.0% before)"]


def test_errors_as_before_are_not_a_regression():
    before = {"chat": Traffic(200, 20, 0.05)}  # 10% before: the release did not do that
    assert judge(before, {"chat": Traffic(100, 11, 0.05)}, POLICY) == []
    assert judge(before, {"chat": Traffic(100, 13, 0.05)}, POLICY) != []


def test_too_few_requests_give_no_verdict():
    assert judge({}, {"billing": Traffic(19, 19, 9.0)}, POLICY) == []
    # a thin baseline counts as none: then the new release is judged on its own
    assert judge({"billing": Traffic(3, 3, 0.01)}, {"billing": Traffic(20, 3, 0.01)}, POLICY)


def test_p99_regression_needs_the_factor_and_the_floor():
    before = {"auth": Traffic(100, 0, 0.4)}
    assert judge(before, {"auth": Traffic(100, 0, 0.79)}, POLICY) == []
    assert judge(before, {"auth": Traffic(100, 0, 0.81)}, POLICY) == [
        "auth p99 is 0.810 s (0.400 s before, limit 0.800 s)"
    ]
    fast = {"auth": Traffic(100, 0, 0.01)}
    assert judge(fast, {"auth": Traffic(100, 0, 0.4)}, POLICY) == []  # below the floor


def test_policy_from_the_environment(tmp_path):
    policy = bake.bake_policy(config_in(tmp_path, DEPLOY_BAKE_SECONDS="30",
                                          DEPLOY_BAKE_MAX_5XX_INCREASE="0.1"))  # fmt: skip
    assert policy.seconds == 30 and policy.max_5xx_increase == 0.1
    assert policy.min_requests == BakePolicy().min_requests


@pytest.mark.parametrize(
    "key,value",
    [("DEPLOY_BAKE_SECONDS", "2m"), ("DEPLOY_BAKE_SECONDS", "-5"),
     ("DEPLOY_BAKE_MAX_5XX_INCREASE", "5"), ("DEPLOY_BAKE_P99_FACTOR", "nan")],
)  # fmt: skip
def test_a_bad_setting_is_refused_with_its_name(tmp_path, key, value):
    with pytest.raises(ConfigError) as err:
        bake.bake_policy(config_in(tmp_path, **{key: value}))
    assert key in err.value.what


class LogRunner(Runner):
    """Answers `date` with a fixed clock and nginx's log with the lines given per look (the
    commands are real data; only their execution is replaced)."""

    def __init__(self, looks: list[list[str]]) -> None:
        super().__init__(Events(json_mode=True))
        self.looks = looks
        self.argvs: list[tuple[str, ...]] = []

    def run(self, command, *, check=True, on_line=None, fix=None):  # type: ignore[override]
        self.argvs.append(tuple(command.argv))
        if command.argv[0] == "date":
            return Result(tuple(command.argv), 0, f"{T0}\n", "")
        return Result(tuple(command.argv), 0, "\n".join(self.looks.pop(0)), "")


def test_watch_raises_at_the_first_regression_and_reads_only_since_the_cutover():
    healthy = [line("/api/analytics/counts", 200, at=T0 + 1)] * 25
    broken = healthy + [line("/api/analytics/counts", 500, at=T0 + 6)] * 25
    runner = LogRunner([healthy, broken, broken])
    stack = Stack("p", (Path("/r/docker-compose.prod.yml"),), ())
    clock = iter(range(0, 1000, 5))
    with pytest.raises(ChecksFailed) as err:
        bake.watch(runner, stack, {}, BakePolicy(seconds=60), {}, "staging",
                   sleep=lambda _s: None, clock=lambda: next(clock))  # fmt: skip
    assert "analytics answered 25 of 50 requests with 5xx" in err.value.what
    assert err.value.fix == "inv logs --env=staging --service analytics"
    logs = [a for a in runner.argvs if "logs" in a]
    assert len(logs) == 2 and logs[0][-3:] == ("--since", str(T0), "nginx")


def test_watch_ends_after_the_window_with_the_table():
    fine = [line("/api/chat/messages", 201, at=T0 + 1)] * 30
    runner = LogRunner([fine] * 10)
    stack = Stack("p", (Path("/r/docker-compose.prod.yml"),), ())
    clock = iter(range(0, 1000, 5))
    rows = bake.watch(runner, stack, {}, BakePolicy(seconds=20), {}, "staging",
                      sleep=lambda _s: None, clock=lambda: next(clock))  # fmt: skip
    assert rows == [{"service": "chat", "5xx before": "-", "5xx after": "0/30 (0.0%)",
                     "p99 before": "-", "p99 after": "10 ms"}]  # fmt: skip
