"""The rolling replacement's pure parts: the batch's commands, the containers' states read back,
the healthcheck command the suite runs itself, and the batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploysuite.core.errors import ConfigError
from deploysuite.engines.compose import batch_size, batches
from deploysuite.engines.rolling import FAILED, parse_health, parse_states, probe_argv, scale_argv
from deploysuite.engines.stack import Stack
from tests.unit.envtree import config_in

REPO = Path(__file__).resolve().parents[2]
STACK = Stack("p", (Path("/r/docker-compose.prod.yml"), Path("/r/services.env.yml")), ("mon",))


def test_one_compose_command_doubles_every_service_of_the_batch():
    argv = scale_argv(STACK, {"auth": 2, "chat": 4})
    tail = argv[argv.index("up") :]
    assert tail == ("up", "--detach", "--no-deps", "--no-recreate", "--scale", "auth=2",
                    "--scale", "chat=4", "auth", "chat")  # fmt: skip
    assert "--profile" in argv and "mon" in argv


CHECK = json.dumps(
    {
        "Test": ["CMD", "python3", "-c", "print(1)"],
        "Interval": 5000000000,
        "StartPeriod": 15000000000,
    }
)


def test_states_name_a_dead_container_by_its_state_and_a_running_one_by_its_health():
    text = "\n".join([
        f"/p-auth-2\trunning\tstarting\t{CHECK}",
        f"/p-chat-2\texited\tunhealthy\t{CHECK}",
        "/p-mailsink-1\trunning\tnone\tnull",
        f"/p-billing-2\trestarting\tstarting\t{CHECK}",
    ])  # fmt: skip
    assert parse_health(text) == {"p-auth-2": "starting", "p-chat-2": "exited",
                                  "p-mailsink-1": "none", "p-billing-2": "restarting"}  # fmt: skip
    assert parse_states(text)["p-auth-2"].probe == ("python3", "-c", "print(1)")
    assert parse_states(text)["p-mailsink-1"].probe == ()
    assert {"exited", "restarting", "unhealthy"} <= set(FAILED)
    assert parse_states(text)["p-auth-2"].start_period == 15.0


def test_the_healthcheck_becomes_an_argv_to_run_in_the_container():
    assert probe_argv(json.dumps({"Test": ["CMD-SHELL", "curl -f x"]})) == ("sh", "-c", "curl -f x")
    assert probe_argv(json.dumps({"Test": ["NONE"]})) == ()
    assert probe_argv("null") == () and probe_argv("") == ()


def test_batches_keep_the_order_and_zero_means_all_together():
    services = ["auth", "chat", "billing", "analytics", "orchestrator"]
    assert batches(services, 0) == [services]
    assert batches(services, 2) == [["auth", "chat"], ["billing", "analytics"], ["orchestrator"]]
    assert batches([], 0) == []


def test_the_batch_size_comes_from_the_environment(tmp_path):
    assert batch_size(config_in(tmp_path, DEPLOY_ROLL_BATCH_SIZE="2")) == 2


def test_a_bad_batch_size_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="DEPLOY_ROLL_BATCH_SIZE='two'"):
        batch_size(config_in(tmp_path, DEPLOY_ROLL_BATCH_SIZE="two"))


class ScriptedRunner:
    """Answers `docker inspect` with the given line and `docker exec` with the given exit
    code (the commands themselves are the real ones; only their execution is scripted)."""

    def __init__(self, inspect_line: str, probe_code: int) -> None:
        from deploysuite.core.events import Events

        self.events = Events(json_mode=True)
        self.line, self.code, self.probes = inspect_line, probe_code, 0

    def run(self, command, *, check=True, on_line=None, fix=None):
        from deploysuite.core.runner import Result

        if command.argv[:2] == ("docker", "exec"):
            self.probes += 1
            return Result(tuple(command.argv), self.code, "", "")
        return Result(tuple(command.argv), 0, self.line, "")


def test_a_passing_probe_makes_a_starting_container_ready_at_once(monkeypatch):
    from deploysuite.engines import rolling

    monkeypatch.setattr(rolling.time, "sleep", lambda _s: None)
    runner = ScriptedRunner(f"/p-auth-2\trunning\tstarting\t{CHECK}", 0)
    assert rolling.wait_healthy(runner, ["p-auth-2"], 60, probe=True) == {"p-auth-2": "healthy"}
    assert runner.probes == 1


def test_a_probe_failing_past_the_start_period_is_unhealthy_without_dockers_retries(monkeypatch):
    from deploysuite.engines import rolling

    monkeypatch.setattr(rolling.time, "sleep", lambda _s: None)
    no_grace = json.dumps({"Test": ["CMD", "false"], "StartPeriod": 0})
    runner = ScriptedRunner(f"/p-auth-2\trunning\tstarting\t{no_grace}", 1)
    assert rolling.wait_healthy(runner, ["p-auth-2"], 60, probe=True) == {"p-auth-2": "unhealthy"}
    assert runner.probes == rolling.PROBE_FAILURES
    # within its start period it is not judged: Docker's own verdict or the timeout decide
    runner = ScriptedRunner(f"/p-auth-2\trunning\tstarting\t{CHECK}", 1)
    assert rolling.wait_healthy(runner, ["p-auth-2"], 0.5, probe=True) == {"p-auth-2": "starting"}


def test_the_cause_of_a_failed_healthcheck_is_its_own_words():
    from deploysuite.engines import rolling
    from deploysuite.engines.state import health_cause

    said = "ready 503: rabbitmq:amqp: ProbableAuthenticationError: ACCESS_REFUSED"
    assert health_cause(said) == said
    document = '{"status": "fail", "output": "postgres:db: password authentication failed"}'
    assert health_cause(document) == "postgres:db: password authentication failed"
    lines = ["  healthcheck of p-chat-2 (now): exit 1: " + said, "  | a log line"]
    assert rolling.cause_of(lines) == said
    assert rolling.cause_of(["  | only logs"]) == ""
