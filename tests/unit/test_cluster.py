"""Swarm cluster planning: hosts.yml roles, what init does, labels, and what the nodes say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploysuite.config.layers import load_config
from deploysuite.core.errors import ConfigError
from deploysuite.core.ssh import parse_hosts
from deploysuite.engines import cluster
from deploysuite.engines.hosts import deploy_engine

HOSTS = """known_hosts: known_hosts
hosts:
  - {name: m1, address: 10.0.0.1, roles: [edge, data]}
  - {name: w1, address: 10.0.0.2, roles: [app], advertise: 192.168.0.2}
  - {name: w2, address: 10.0.0.3, roles: [app]}
"""


def hosts(text: str = HOSTS):
    return parse_hosts(text, Path("/env"))


def test_roles_manager_and_advertise_come_from_hosts_yml():
    m1, w1, w2 = hosts()
    assert (m1.roles, m1.manager, m1.cluster_address) == (("edge", "data"), True, "10.0.0.1")
    assert (w1.roles, w1.manager, w1.cluster_address) == (("app",), False, "192.168.0.2")
    assert not w2.manager


def test_an_unknown_role_is_refused_naming_the_known_ones():
    with pytest.raises(ConfigError) as err:
        hosts("hosts:\n  - {address: 10.0.0.1, roles: [edge, db]}\n")
    assert "unknown roles ['db']" in err.value.what and "edge, app, data" in err.value.fix


def test_every_role_needs_a_node():
    with pytest.raises(ConfigError) as err:
        cluster.validate_roles(hosts("hosts:\n  - {address: 10.0.0.1, roles: [edge, app]}\n"))
    assert "data" in err.value.what


def member(node_id: str, cluster_id: str = "", manager: bool = False, managers=()):
    return cluster.NodeSwarm("active", node_id, cluster_id, manager, "20.10", tuple(managers))


INACTIVE = cluster.NodeSwarm("inactive")


def test_a_fresh_cluster_inits_on_the_manager_and_joins_the_others():
    actions = cluster.plan_init(hosts(), {"m1": INACTIVE, "w1": INACTIVE, "w2": INACTIVE})
    assert [(a.host, a.kind) for a in actions] == [
        ("m1", "init"), ("w1", "join-worker"), ("w2", "join-worker"),
    ]  # fmt: skip


def test_a_formed_cluster_plans_nothing():
    infos = {
        "m1": member("N1", "C1", manager=True),
        "w1": member("N2", managers=["N1"]),
        "w2": member("N3", managers=["N1"]),
    }
    assert cluster.plan_init(hosts(), infos) == []


def test_only_the_missing_node_joins():
    infos = {"m1": member("N1", "C1", manager=True), "w1": member("N2", managers=["N1"]),
             "w2": INACTIVE}  # fmt: skip
    assert [(a.host, a.kind) for a in cluster.plan_init(hosts(), infos)] == [("w2", "join-worker")]


def test_a_node_of_another_swarm_is_refused_before_anything_changes():
    infos = {"m1": member("N1", "C1", manager=True), "w1": member("X9", managers=["X1"]),
             "w2": INACTIVE}  # fmt: skip
    with pytest.raises(cluster.ClusterError) as err:
        cluster.plan_init(hosts(), infos)
    assert "w1 belongs to another swarm" in err.value.what
    assert "docker swarm leave" in err.value.fix


def test_a_worker_in_a_swarm_while_the_manager_is_not_is_refused():
    infos = {"m1": INACTIVE, "w1": member("N2", managers=["X1"]), "w2": INACTIVE}
    with pytest.raises(cluster.ClusterError):
        cluster.plan_init(hosts(), infos)


def test_labels_touch_only_the_suites_own_role_labels():
    m1 = hosts()[0]
    have = {"mysaaschat.role.app": "true", "mysaaschat.role.edge": "true", "zone": "a"}
    add, remove = cluster.label_changes(m1, have)
    assert add == ["mysaaschat.role.data"]
    assert remove == ["mysaaschat.role.app"]
    assert cluster.label_argv("N1", add, remove) == (
        "docker", "node", "update", "--label-add", "mysaaschat.role.data=true",
        "--label-rm", "mysaaschat.role.app", "N1",
    )  # fmt: skip
    assert cluster.label_changes(m1, {"mysaaschat.role.edge": "true",
                                      "mysaaschat.role.data": "true"}) == ([], [])  # fmt: skip


def test_join_takes_the_token_and_the_managers_cluster_address():
    assert cluster.join_argv("T", "10.0.0.2", "10.0.0.1") == (
        "docker", "swarm", "join", "--token", "T", "--advertise-addr", "10.0.0.2", "10.0.0.1:2377",
    )  # fmt: skip
    assert cluster.placement_constraint("data") == "node.labels.mysaaschat.role.data == true"


def test_docker_info_of_a_worker_and_of_an_inactive_node():
    worker = cluster.parse_info(json.dumps({
        "swarm": {"LocalNodeState": "active", "NodeID": "N2", "ControlAvailable": False,
                  "RemoteManagers": [{"NodeID": "N1", "Addr": "10.0.0.1:2377"}]},
        "engine": "20.10.24",
    }))  # fmt: skip
    assert worker.member and not worker.is_manager and worker.managers == ("N1",)
    idle = cluster.parse_info(
        '{"swarm": {"LocalNodeState": "inactive", "NodeID": ""}, "engine": "x"}'
    )
    assert not idle.member


def test_node_rows_show_role_labels_and_engine():
    rows = cluster.parse_nodes(json.dumps([{
        "ID": "N1",
        "Description": {"Hostname": "m1", "Engine": {"EngineVersion": "20.10.24"}},
        "Spec": {"Role": "manager", "Availability": "active",
                 "Labels": {"mysaaschat.role.edge": "true", "mysaaschat.role.data": "true",
                            "zone": "a"}},
        "Status": {"State": "ready", "Addr": "10.0.0.1"},
    }]))  # fmt: skip
    assert rows == [{"id": "N1", "node": "m1", "role": "manager", "availability": "active",
                     "state": "ready", "address": "10.0.0.1", "labels": "data,edge",
                     "engine": "20.10.24"}]  # fmt: skip
    assert cluster.parse_tasks("m1 web.1\nm1 web.2\nw1 db.1\n") == {
        "m1": ["web.1", "web.2"], "w1": ["db.1"],
    }  # fmt: skip


def test_an_unknown_engine_is_one_clear_error(suite_tree):
    (suite_tree / "environments" / "staging" / "config.env").write_text("DEPLOY_ENGINE=nomad\n")
    config = load_config("staging", root=suite_tree, process_env={})
    with pytest.raises(ConfigError) as err:
        deploy_engine(config)
    assert "nomad" in err.value.what and "compose, swarm" in err.value.fix
    swarm_cfg = suite_tree / "environments" / "swarm-loopback" / "config.env"
    assert deploy_engine(load_config(swarm_cfg.parent.name, root=suite_tree,
                                     process_env={})) == "swarm"  # fmt: skip
