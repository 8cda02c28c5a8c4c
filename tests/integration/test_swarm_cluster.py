"""`inv cluster.*` on a real three-node Swarm on this machine (tests/integration/swarm.py): the
suite forms the swarm over SSH, labels the nodes by role, shows them, drains and activates one.
One set of nodes for the module; the tests run in order, as an operator would."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.integration.conftest import REPO
from tests.integration.swarm import SwarmNodes

pytestmark = pytest.mark.integration

ENV = "swarm-loopback"


@pytest.fixture(scope="module")
def nodes(base_images, registry, tmp_path_factory):
    cluster = SwarmNodes(tmp_path_factory.mktemp("swarm"), base_images["python"], registry.port)
    try:
        yield cluster
    finally:
        cluster.stop()


def inv(nodes: SwarmNodes, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(REPO), *args],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "DEPLOY_HOSTS_FILE": str(nodes.hosts_file), **env},
    )  # fmt: skip


def swarm_state(nodes: SwarmNodes) -> list[str]:
    return [
        nodes.exec(n, "docker", "info", "--format", "{{.Swarm.LocalNodeState}}").strip()
        for n in nodes.nodes
    ]


def test_status_before_init_says_there_is_no_swarm_yet(nodes):
    result = inv(nodes, "cluster.status", f"--env={ENV}")
    assert result.returncode != 0
    assert "is not a swarm manager" in result.stderr
    assert "inv cluster.init --env=swarm-loopback" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_dry_run_prints_the_commands_per_node_and_forms_nothing(nodes):
    result = inv(nodes, "cluster.init", f"--env={ENV}", "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    manager, worker = nodes.nodes[0], nodes.nodes[1]
    init = f"[{manager.name}] $ docker swarm init --advertise-addr {manager.address}"
    assert init in result.stdout
    assert f"[{worker.name}] $ docker swarm join --token" in result.stdout
    assert "dry run: nothing changed" in result.stdout
    assert swarm_state(nodes) == ["inactive"] * 3


def test_init_forms_the_swarm_with_role_labels_and_keeps_the_join_token_secret(nodes):
    result = inv(nodes, "cluster.init", f"--env={ENV}", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads(result.stdout)
    assert len(doc["changes"]) >= 3  # init, two joins (and labels)
    assert swarm_state(nodes) == ["active"] * 3
    rows = {r["host"]: r for r in doc["rows"]}
    assert set(rows) == {n.name for n in nodes.nodes}
    for node in nodes.nodes:
        row = rows[node.name]
        assert row["state"] == "ready" and row["availability"] == "active"
        assert row["labels"] == ",".join(sorted(node.roles))
        assert row["role"] == ("manager" if node.manager else "worker")
        assert row["engine"].startswith("20.10")
    token = nodes.manager_exec("docker", "swarm", "join-token", "--quiet", "worker").strip()
    assert token and token not in result.stdout + result.stderr
    assert "SWMTKN" not in result.stdout + result.stderr


def test_a_second_init_has_nothing_to_do(nodes):
    result = inv(nodes, "cluster.init", f"--env={ENV}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "nothing to do" in result.stdout
    assert "docker swarm" not in result.stderr and "docker node update" not in result.stderr


def test_a_label_changed_by_hand_is_put_back(nodes):
    worker = nodes.nodes[2]
    nodes.manager_exec("docker", "node", "update", "--label-add", "mysaaschat.role.data=true",
                       worker.name)  # fmt: skip
    result = inv(nodes, "cluster.init", f"--env={ENV}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{worker.name}: labels -mysaaschat.role.data" in result.stdout + result.stderr
    labels = json.loads(nodes.manager_exec("docker", "node", "inspect", "--format",
                                           "{{json .Spec.Labels}}", worker.name))  # fmt: skip
    assert labels == {"mysaaschat.role.app": "true"}


def test_drain_moves_the_tasks_away_and_activate_takes_the_node_back(nodes):
    worker = nodes.nodes[1]
    nodes.manager_exec("docker", "service", "create", "--detach", "--name", "probe",
                       "--replicas", "2", "--constraint", "node.labels.mysaaschat.role.app == true",
                       "--endpoint-mode", "dnsrr", "mysaaschat/python:bookworm",
                       "sleep", "600")  # fmt: skip
    try:
        drained = inv(nodes, "cluster.drain", f"--env={ENV}", worker.name, "--yes")
        assert drained.returncode == 0, drained.stderr[-3000:]
        status = json.loads(inv(nodes, "cluster.status", f"--env={ENV}", "--json").stdout)
        row = next(r for r in status["rows"] if r["host"] == worker.name)
        assert row["availability"] == "drain"
        assert row["tasks"] == 0
        again = inv(nodes, "cluster.drain", f"--env={ENV}", worker.name, "--yes")
        assert "already: nothing to do" in again.stderr
        active = inv(nodes, "cluster.activate", f"--env={ENV}", worker.name)
        assert active.returncode == 0, active.stderr[-3000:]
        status = json.loads(inv(nodes, "cluster.status", f"--env={ENV}", "--json").stdout)
        row = next(r for r in status["rows"] if r["host"] == worker.name)
        assert row["availability"] == "active"
    finally:
        nodes.manager_exec("docker", "service", "rm", "probe", check=False)


def test_an_unknown_node_is_one_line_naming_the_known_ones(nodes):
    result = inv(nodes, "cluster.drain", f"--env={ENV}", "nosuchnode", "--yes")
    assert result.returncode != 0
    assert "no node 'nosuchnode'" in result.stderr
    assert nodes.nodes[0].name in result.stderr
    assert "Traceback" not in result.stderr


def test_status_of_a_node_that_is_gone_exits_non_zero_and_names_it(nodes):
    worker = nodes.nodes[2]
    subprocess.run(["docker", "kill", worker.name], capture_output=True, check=True)
    deadline = 60
    import time

    started = time.monotonic()
    while time.monotonic() - started < deadline:
        state = nodes.manager_exec("docker", "node", "inspect", "--format", "{{.Status.State}}",
                                   worker.name).strip()  # fmt: skip
        if state == "down":
            break
        time.sleep(1)
    # the killed node's SSH is gone too: status asks the manager, not every node
    result = inv(nodes, "cluster.status", f"--env={ENV}")
    assert result.returncode != 0
    assert f"DOWN: {worker.name}" in result.stdout
    assert "data store pinned to a down node" in result.stderr
