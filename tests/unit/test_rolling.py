"""The rolling replacement's pure parts: the batch's commands, the containers' states read back,
the healthcheck command the suite runs itself, and the batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploysuite.config.layers import load_config
from deploysuite.core.errors import ConfigError
from deploysuite.engines.compose import batch_size, batches
from deploysuite.engines.rolling import FAILED, parse_health, parse_states, probe_argv, scale_argv
from deploysuite.engines.stack import Stack

REPO = Path(__file__).resolve().parents[2]
STACK = Stack("p", (Path("/r/docker-compose.prod.yml"), Path("/r/services.env.yml")), ("mon",))


def test_one_compose_command_doubles_every_service_of_the_batch():
    argv = scale_argv(STACK, {"auth": 2, "chat": 4})
    tail = argv[argv.index("up") :]
    assert tail == ("up", "--detach", "--no-deps", "--no-recreate", "--scale", "auth=2",
                    "--scale", "chat=4", "auth", "chat")  # fmt: skip
    assert "--profile" in argv and "mon" in argv


CHECK = json.dumps({"Test": ["CMD", "python3", "-c", "print(1)"], "Interval": 5000000000})


def test_states_name_a_dead_container_by_its_state_and_a_running_one_by_its_health():
    text = "\n".join([
        f"/p-auth-2\trunning\tstarting\t{CHECK}",
        f"/p-chat-2\texited\tunhealthy\t{CHECK}",
        "/p-mailsink-1\trunning\tnone\tnull",
        f"/p-billing-2\trestarting\tstarting\t{CHECK}",
    ])  # fmt: skip
    assert parse_health(text) == {"p-auth-2": "starting", "p-chat-2": "exited",
                                  "p-mailsink-1": "none", "p-billing-2": "restarting"}  # fmt: skip
    assert parse_states(text)["p-auth-2"][1] == ("python3", "-c", "print(1)")
    assert {"exited", "restarting", "unhealthy"} <= set(FAILED)


def test_the_healthcheck_becomes_an_argv_to_run_in_the_container():
    assert probe_argv(json.dumps({"Test": ["CMD-SHELL", "curl -f x"]})) == ("sh", "-c", "curl -f x")
    assert probe_argv(json.dumps({"Test": ["NONE"]})) == ()
    assert probe_argv("null") == () and probe_argv("") == ()


def test_batches_keep_the_order_and_zero_means_all_together():
    services = ["auth", "chat", "billing", "analytics", "orchestrator"]
    assert batches(services, 0) == [services]
    assert batches(services, 2) == [["auth", "chat"], ["billing", "analytics"], ["orchestrator"]]
    assert batches([], 0) == []


def config_with(tmp_path: Path, **values: str):
    import shutil

    shutil.copy(REPO / ".env.example", tmp_path / ".env.example")
    (tmp_path / "environments" / "test").mkdir(parents=True)
    (tmp_path / "environments" / "test" / "config.env").write_text("")
    return load_config("test", root=tmp_path, process_env={}, cli=values)


def test_the_batch_size_comes_from_the_environment(tmp_path):
    assert batch_size(config_with(tmp_path, DEPLOY_ROLL_BATCH_SIZE="2")) == 2


def test_a_bad_batch_size_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="DEPLOY_ROLL_BATCH_SIZE='two'"):
        batch_size(config_with(tmp_path, DEPLOY_ROLL_BATCH_SIZE="two"))
