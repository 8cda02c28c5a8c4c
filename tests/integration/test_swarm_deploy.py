"""`inv deploy --env=swarm-loopback`: the whole stack on a real three-node Swarm on this machine
(tests/integration/swarm.py: one manager with the edge and data roles, two app workers), over
SSH, with images pushed to and pulled from the real test registry.

One cluster for the module, driven as an operator would: a dry run, a first deploy, the same
deploy again, scale, a change under load (HTTP and WebSockets), a broken release rolled back
by itself, `inv rollback` of the whole stack, a node killed. Everything is real; no webhook.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.loadgen import BackgroundLoad
from tests.integration.conftest import REPO, no_failure
from tests.integration.swarm import SwarmNodes, docker

pytestmark = pytest.mark.integration

ENV = "swarm-loopback"
APP = ("auth", "chat", "billing", "analytics", "orchestrator", "email-worker")
BASES = ("postgres", "redis", "rabbitmq", "prometheus", "nginx")


class SwarmEnv:
    def __init__(self, nodes: SwarmNodes, registry, base_images, workdir: Path) -> None:
        self.nodes = nodes
        self.project = f"sw{os.getpid()}"
        self.https = 8543
        self.root = "/home/deploy/srv"
        self.edge = nodes.node("edge")
        images = {}
        config = workdir / "docker-config"
        config.mkdir()
        login = ["docker", "--config", str(config), "login", "--username", registry.username,
                 "--password-stdin", registry.host]  # fmt: skip
        subprocess.run(login, input=registry.password, text=True, capture_output=True, check=True)
        for name in BASES:  # the base images, where every node can pull them
            ref = f"{registry.host}/base/{name}:bookworm"
            docker("tag", base_images[name], ref)
            docker("--config", str(config), "push", ref, timeout=600)
            images[f"{name.upper()}_IMAGE"] = ref
        shutil.rmtree(config)
        self.env = {
            **os.environ,
            **images,
            "DEPLOY_HOSTS_FILE": str(nodes.hosts_file),
            "DEPLOY_ROOT": self.root,
            "IMAGE_REPOSITORY": f"{registry.host}/mysaaschat",
            "REGISTRY_USERNAME": registry.username,
            "REGISTRY_PASSWORD": registry.password,
            "COMPOSE_PROJECT_NAME": self.project,
            "HTTPS_PORT": str(self.https),
            "PUBLIC_URL": f"https://localhost:{self.https}",
            # one client address carries the whole load: nginx's per-address limit must not be
            # what the test measures
            "NGINX_API_RATE": "400r/s",
            "NGINX_API_BURST": "800",
        }
        self.ca_file = REPO / "build" / ENV / self.project / "tls" / "ca.pem"

    def inv(self, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "invoke", "-r", str(REPO), *args],
            cwd=REPO, capture_output=True, text=True, env=self.env, timeout=timeout,
        )  # fmt: skip

    def deploy(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.inv("deploy", f"--env={ENV}", *args)

    def manager(self, *argv: str, check: bool = True) -> str:
        return self.nodes.manager_exec(*argv, check=check)

    def services(self) -> dict[str, str]:
        """service -> replicas as `docker service ls` says on the manager."""
        out = self.manager("docker", "service", "ls", "--format", "{{.Name}} {{.Replicas}}")
        return {
            line.split()[0][len(self.project) + 1 :]: line.split()[1]
            for line in out.splitlines()
            if line.startswith(self.project + "_")
        }

    def current(self) -> str | None:
        result = self.inv("releases", f"--env={ENV}", "--json")
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout)["current"]

    def load(self, **options) -> BackgroundLoad:
        return BackgroundLoad(f"https://localhost:{self.https}", ca_file=self.ca_file,
                              connect_host=self.edge.address, retry_closed=True,
                              **options)  # fmt: skip

    def secret_values(self) -> list[str]:
        text = (REPO / "environments" / ENV / "secrets.env").read_text()
        return [line.split("=", 1)[1] for line in text.splitlines()
                if "=" in line and not line.startswith("#") and line.split("=", 1)[1]]  # fmt: skip


@pytest.fixture(scope="module")
def swarm(base_images, registry, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("swarm-deploy")
    secrets_file = REPO / "environments" / ENV / "secrets.env"
    kept = secrets_file.read_text() if secrets_file.exists() else None
    nodes = SwarmNodes(workdir, base_images["python"], registry.port)
    try:
        env = SwarmEnv(nodes, registry, base_images, workdir)
        for step in (("env.secrets", f"--env={ENV}"), ("cluster.init", f"--env={ENV}")):
            result = env.inv(*step)
            assert result.returncode == 0, result.stderr[-3000:]
        yield env
    finally:
        nodes.stop()
        shutil.rmtree(REPO / "build" / ENV / f"sw{os.getpid()}", ignore_errors=True)
        if kept is None:  # the secrets this module generated (or rotated) go with it
            secrets_file.unlink(missing_ok=True)
        else:
            secrets_file.write_text(kept)


def test_a_dry_run_prints_the_stack_deploy_and_changes_nothing(swarm):
    result = swarm.deploy("--dry-run")
    assert result.returncode == 0, result.stderr[-4000:]
    manager = swarm.nodes.nodes[0].name
    assert f"[{manager}] $ docker --config" in result.stdout
    assert (
        "stack deploy --compose-file" in result.stdout and "--with-registry-auth" in result.stdout
    )
    assert f"[{manager}] $ docker secret create" in result.stdout
    for value in swarm.secret_values():
        assert value not in result.stdout + result.stderr
    assert swarm.services() == {}
    assert swarm.manager("docker", "secret", "ls", "--quiet").strip() == ""


def test_first_deploy_runs_every_service_on_its_nodes_and_passes_smoke(swarm):
    result = swarm.deploy("--json")
    assert result.returncode == 0, result.stderr[-5000:]
    report = json.loads(result.stdout)
    assert report["outcome"] == "deployed", report
    assert report["smoke"] and all(r["result"] == "pass" for r in report["smoke"]), report["smoke"]
    rows = {r["service"]: r for r in report["rows"]}
    workers = {n.name for n in swarm.nodes.nodes if "app" in n.roles}
    for service in APP:
        assert rows[service]["replicas"] == "1/1" and rows[service]["health"] == "ok"
        assert set(rows[service]["nodes"].split(",")) <= workers
    for service in ("postgres", "redis", "rabbitmq", "nginx"):
        assert rows[service]["nodes"] == swarm.nodes.nodes[0].name
    release = report["release"]
    assert swarm.current() == release
    # no secret value in the services' specs, in the stack file, or left as a registry login
    inspect = swarm.manager("docker", "service", "inspect",
                            *[f"{swarm.project}_{s}" for s in rows])  # fmt: skip
    stack_file = swarm.manager("cat", f"{swarm.root}/{ENV}/releases/{release}/stack.yml")
    for value in swarm.secret_values():
        assert value not in inspect and value not in stack_file
    assert "POSTGRES_PASSWORD_FILE" in inspect
    folder = f"{swarm.root}/{ENV}/releases/{release}"
    assert "docker-config" not in swarm.manager("ls", folder)
    docker_dir = swarm.manager(
        "sh", "-c", "cat /home/deploy/.docker/config.json 2>/dev/null || true"
    )
    assert "auths" not in docker_dir
    manifest = json.loads(swarm.manager("cat", f"{folder}/manifest.json"))
    assert manifest["schema_versions"].keys() == {"auth", "chat", "billing", "analytics"}
    smoke = swarm.inv("smoke", f"--env={ENV}", "--json")  # by itself, through the edge node
    assert smoke.returncode == 0, smoke.stdout[-3000:] + smoke.stderr[-2000:]
    assert json.loads(smoke.stdout)["failed"] == 0


def test_the_same_deploy_again_changes_nothing(swarm):
    current = swarm.current()
    result = swarm.deploy("--no-smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "nothing to do" in result.stderr
    assert swarm.current() == current


def test_scale_is_audited_and_kept_by_the_next_deploy(swarm):
    result = swarm.inv("scale", f"--env={ENV}", "chat=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert swarm.services()["chat"] == "2/2"
    audit = json.loads(swarm.inv("audit", f"--env={ENV}", "--json").stdout)["records"]
    assert audit[-1]["action"] == "scale" and audit[-1]["replicas"] == {"chat": 2}
    bad = swarm.inv("scale", f"--env={ENV}", "postgres=2")
    assert bad.returncode != 0 and "only the app services scale" in bad.stderr


def test_a_change_rolls_under_load_without_a_failed_request_or_lost_message(swarm):
    previous = swarm.current()
    with swarm.load() as background:
        time.sleep(2)
        result = swarm.deploy("--no-smoke", "--set", "LOG_LEVEL=WARNING")
        time.sleep(2)
    assert result.returncode == 0, result.stderr[-5000:]
    report = background.report
    assert report["requests"] > 200 and report["messages_sent"] > 50, report
    assert no_failure(report), (
        report["failures"], report["samples"],
    )  # fmt: skip
    assert swarm.current() != previous
    assert swarm.services()["chat"] == "2/2"  # the scale was kept


def test_a_broken_release_rolls_the_whole_stack_back_while_the_old_one_serves(swarm):
    previous = swarm.current()
    with swarm.load() as background:
        time.sleep(1)
        result = swarm.deploy("--no-smoke", "--wait-timeout=120",
                              "--set", "AUTH_DB_NAME=no_such_database",
                              "--set", "LOG_LEVEL=INFO")  # fmt: skip
        time.sleep(1)
    assert result.returncode != 0
    assert "rolled back" in result.stderr + result.stdout
    assert swarm.current() == previous
    report = background.report
    assert no_failure(report), (
        report["failures"], report["samples"],
    )  # fmt: skip


def test_a_rotated_secret_is_a_new_object_and_the_old_one_stays_for_a_rollback(swarm):
    def billing_secrets() -> set[str]:
        spec = swarm.manager("docker", "service", "inspect", "--format",
                             "{{json .Spec.TaskTemplate.ContainerSpec.Secrets}}",
                             f"{swarm.project}_billing")  # fmt: skip
        return {s["SecretName"] for s in json.loads(spec)}

    secrets_file = REPO / "environments" / ENV / "secrets.env"
    before = billing_secrets()
    original = secrets_file.read_text()
    rotated = os.urandom(32).hex()
    lines = [
        f"BILLING_WEBHOOK_SECRET={rotated}"
        if line.startswith("BILLING_WEBHOOK_SECRET=") else line
        for line in original.splitlines()
    ]  # fmt: skip
    secrets_file.write_text("\n".join(lines) + "\n")
    try:
        result = swarm.deploy()  # smoke signs a webhook with the new value: billing reads it
    finally:
        secrets_file.write_text(original)
    assert result.returncode == 0, result.stderr[-4000:]
    after = billing_secrets()
    assert before - after and after - before  # a new object for the new value
    existing = swarm.manager("docker", "secret", "ls", "--format", "{{.Name}}").split()
    assert set(before) <= set(existing)  # the old value is still there for a rollback
    assert rotated not in swarm.manager("docker", "service", "inspect", f"{swarm.project}_billing")


def test_rollback_returns_every_service_to_the_previous_release(swarm):
    current = swarm.current()
    result = swarm.inv("rollback", f"--env={ENV}", "--json")
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout)
    assert report["outcome"] == "rolled back to" and report["previous"] == current
    assert swarm.current() == report["release"] != current
    assert all(r["health"] == "ok" for r in report["rows"]), report["rows"]


def test_a_killed_worker_node_has_its_tasks_served_again_from_the_others(swarm):
    """The stateless services on a killed node come back on the other app node. The failed
    requests until then are counted, not hidden (nginx waits 1 s on an address that is gone)."""
    victim = swarm.nodes.nodes[2]
    with swarm.load() as background:
        time.sleep(3)
        killed = time.monotonic()
        swarm.nodes.kill(victim)
        recovered = None
        while time.monotonic() - killed < 150:
            status = swarm.inv("status", f"--env={ENV}", "--json")
            rows = json.loads(status.stdout)["rows"] if status.stdout.strip() else []
            placed = [r for r in rows if r["service"] in APP]
            if placed and all(victim.name not in r["nodes"] and r["health"] == "ok"
                              for r in placed):  # fmt: skip
                recovered = time.monotonic() - killed
                break
            time.sleep(2)
        time.sleep(5)
    report = background.report
    print(
        f"node kill: rescheduled after {recovered} s; {report['failed']} of "
        f"{report['requests']} requests failed ({report['failures']})"
    )
    assert recovered is not None, "the tasks of the killed node were not rescheduled in 150 s"
    assert report["messages_lost"] == 0
    after = swarm.deploy("--no-smoke")  # the cluster serves from the nodes that are left
    assert after.returncode == 0, after.stderr[-3000:]
    swarm.nodes.restart(victim)
