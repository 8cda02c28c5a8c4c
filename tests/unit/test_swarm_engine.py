"""The Swarm engine's commands and its reading of `docker service` output."""

from __future__ import annotations

import json

from deploysuite.engines import swarm
from deploysuite.images.registry import login_argv


def test_service_state_from_inspect_and_ls():
    def spec(name: str, image: str) -> dict:
        return {"Name": name, "TaskTemplate": {"ContainerSpec": {"Image": image}}}

    inspect = json.dumps([
        {"Spec": spec("p_auth", "r/auth@sha256:1"),
         "UpdateStatus": {"State": "rollback_completed", "Message": "update rolled back"}},
        {"Spec": spec("p_chat", "r/chat@sha256:2")},
    ])  # fmt: skip
    ls = '{"Name": "p_auth", "Replicas": "1/1"}\n{"Name": "p_chat", "Replicas": "1/2"}\n'
    auth, chat = swarm.parse_services("p", inspect, ls)
    assert (auth.name, auth.failed, auth.converged) == ("auth", True, False)
    assert (chat.name, chat.running, chat.desired, chat.converged) == ("chat", 1, 2, False)
    job = swarm.parse_services(
        "p", inspect[:0] or "[]", '{"Name": "x", "Replicas": "0/1 (1/1 completed)"}'
    )
    assert job == []


def test_a_migration_job_carries_files_not_secret_values():
    service = {
        "image": "r/auth@sha256:1", "user": "1001:1001",
        "environment": {"POSTGRES_PASSWORD_FILE": "/run/secrets/postgres_password", "A": "x$$y"},
        "secrets": [{"source": "p-postgres_password-abc", "target": "postgres_password",
                     "uid": "1001", "gid": "1001", "mode": 0o400}],
    }  # fmt: skip
    argv = swarm.job_argv("/rel/docker-config", "p_migrate-auth", "p", service, ("migrate",))
    assert argv[:3] == ("docker", "--config", "/rel/docker-config")
    assert "--mode" in argv and argv[argv.index("--mode") + 1] == "replicated-job"
    assert "--network" in argv and argv[argv.index("--network") + 1] == "p_backend"
    secret_file = (
        "POSTGRES_PASSWORD_FILE=/run/secrets/postgres_password"  # pragma: allowlist secret
    )
    assert secret_file in argv
    assert "A=x$y" in argv  # compose's $$ is one $ on the command line
    assert (
        "source=p-postgres_password-abc,target=postgres_password,uid=1001,gid=1001,mode=256" in argv
    )
    assert argv[-2:] == ("r/auth@sha256:1", "migrate")


def test_stack_deploy_login_and_objects_keep_credentials_off_the_command_line():
    assert swarm.stack_deploy_argv("/c", "/r/stack.yml", "p", prune=True) == (
        "docker", "--config", "/c", "stack", "deploy", "--compose-file", "/r/stack.yml",
        "--with-registry-auth", "--prune", "p",
    )  # fmt: skip
    assert login_argv("/c", "u", "reg:5000") == (
        "docker", "--config", "/c", "login", "--username", "u", "--password-stdin", "reg:5000",
    )  # fmt: skip
    assert swarm.object_create_argv("secret", "p-x-1", "p")[-1] == "-"  # content on stdin
    assert swarm.digest_of("r/a:1@sha256:9") == "sha256:9"
