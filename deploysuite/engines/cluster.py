"""A swarm environment's nodes: forming the Swarm, its role labels, status, drain and activate.

Every node is reached over SSH as a host is (hosts.yml: address, port, user, key, known_hosts)
and says itself whether and where it belongs (`docker info`); the manager says the rest (`docker
node ls/inspect/ps`). What to do is decided by pure functions (plan_init, label_changes) from
what the nodes said, so a second `inv cluster.init` finds nothing to do and --dry-run prints the
exact commands per node.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from deploysuite.config.layers import Config
from deploysuite.core.errors import ConfigError, SuiteError
from deploysuite.core.events import Events
from deploysuite.core.runner import Command, Runner
from deploysuite.core.ssh import NODE_ROLES, Host, SshConnection
from deploysuite.engines.hosts import hosts_for

# A node's roles as labels: placement constraints say `node.labels.mysaaschat.role.data == true`.
LABEL_PREFIX = "mysaaschat.role."
SWARM_PORT = 2377


def role_label(role: str) -> str:
    return f"{LABEL_PREFIX}{role}"


def placement_constraint(role: str) -> str:
    return f"node.labels.{role_label(role)} == true"


class ClusterError(SuiteError):
    exit_code = 11


@dataclass(frozen=True)
class NodeSwarm:
    """What one node's engine says of its Swarm membership (`docker info` .Swarm)."""

    state: str  # inactive, pending, active, error, locked
    node_id: str = ""
    cluster_id: str = ""
    is_manager: bool = False
    engine: str = ""
    managers: tuple[str, ...] = ()  # node ids of the managers it knows (workers see no cluster id)

    @property
    def member(self) -> bool:
        return self.state == "active"


def info_argv() -> tuple[str, ...]:
    return (
        "docker",
        "info",
        "--format",
        '{"swarm": {{json .Swarm}}, "engine": {{json .ServerVersion}}}',
    )


def parse_info(text: str) -> NodeSwarm:
    doc = json.loads(text)
    swarm = doc.get("swarm") or {}
    cluster = swarm.get("Cluster") or {}
    return NodeSwarm(
        state=str(swarm.get("LocalNodeState") or "inactive"),
        node_id=str(swarm.get("NodeID") or ""),
        cluster_id=str(cluster.get("ID") or ""),
        is_manager=bool(swarm.get("ControlAvailable")),
        engine=str(doc.get("engine") or ""),
        managers=tuple(str(m.get("NodeID")) for m in swarm.get("RemoteManagers") or ()),
    )


def init_argv(advertise: str) -> tuple[str, ...]:
    return ("docker", "swarm", "init", "--advertise-addr", advertise, "--listen-addr",
            f"{advertise}:{SWARM_PORT}")  # fmt: skip


def join_token_argv(kind: str) -> tuple[str, ...]:
    return ("docker", "swarm", "join-token", "--quiet", kind)


def join_argv(token: str, advertise: str, manager: str) -> tuple[str, ...]:
    return ("docker", "swarm", "join", "--token", token, "--advertise-addr", advertise,
            f"{manager}:{SWARM_PORT}")  # fmt: skip


def label_argv(node_id: str, add: Sequence[str], remove: Sequence[str]) -> tuple[str, ...]:
    argv = ["docker", "node", "update"]
    for label in add:
        argv += ["--label-add", f"{label}=true"]
    for label in remove:
        argv += ["--label-rm", label]
    return (*argv, node_id)


def availability_argv(node_id: str, availability: str) -> tuple[str, ...]:
    return ("docker", "node", "update", "--availability", availability, node_id)


def wanted_labels(host: Host) -> set[str]:
    return {role_label(r) for r in host.roles}


def label_changes(host: Host, labels: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(labels to add, labels to remove): only the suite's own role labels are touched."""
    have = {k for k, v in labels.items() if k.startswith(LABEL_PREFIX) and v == "true"}
    stray = {k for k in labels if k.startswith(LABEL_PREFIX)} - have
    want = wanted_labels(host)
    return sorted(want - have), sorted((have - want) | stray)


@dataclass(frozen=True)
class Action:
    host: str  # the node the command runs on
    what: str  # for people: "init the swarm", "join as worker", "label ..."
    kind: str  # init, join-worker, join-manager


def plan_init(hosts: Sequence[Host], infos: Mapping[str, NodeSwarm]) -> list[Action]:
    """Pure: which nodes init or join. Refuses a node of another Swarm, and a cluster whose
    first manager is not a manager of it."""
    first = first_manager(hosts)
    lead = infos[first.name]
    if lead.member and not lead.is_manager:
        raise ClusterError(
            f"{first.name} is in a swarm but not a manager of it",
            "promote it (docker node promote on a manager) or list a manager first in hosts.yml",
        )
    actions = [] if lead.member else [Action(first.name, "init the swarm", "init")]
    for host in hosts:
        if host is first:
            continue
        info = infos[host.name]
        ours = info.cluster_id == lead.cluster_id or lead.node_id in info.managers
        if info.member and lead.member and not ours:
            raise ClusterError(
                f"{host.name} belongs to another swarm, not {first.name}'s "
                f"({lead.cluster_id[:12]})",
                f"run `docker swarm leave` on {host.name} if it is no longer needed there",
            )
        if info.member and not lead.member:
            raise ClusterError(
                f"{host.name} is in a swarm already but {first.name}, the first manager, is not",
                f"run `docker swarm leave` on {host.name}, or list its manager first in hosts.yml",
            )
        if not info.member:
            kind = "join-manager" if host.manager else "join-worker"
            actions.append(Action(host.name, f"join as {kind.split('-')[1]}", kind))
    return actions


def first_manager(hosts: Sequence[Host]) -> Host:
    managers = [h for h in hosts if h.manager]
    if not managers:
        raise ConfigError("a swarm environment needs a manager", "set `manager: true` on a host")
    return managers[0]


def validate_roles(hosts: Sequence[Host]) -> None:
    missing = [r for r in NODE_ROLES if not any(r in h.roles for h in hosts)]
    if missing:
        raise ConfigError(
            f"no node has the role(s) {', '.join(missing)}: their services could not be placed",
            "add `roles: [...]` to the nodes in hosts.yml",
        )


# --- talking to the nodes -------------------------------------------------------------------


@dataclass
class Cluster:
    """The environment's nodes. A node is connected to when a command first needs it, so that
    a down worker does not keep `status` (which asks the manager) from answering."""

    config: Config
    hosts: list[Host]
    base: Runner
    conns: dict[str, SshConnection] = field(default_factory=dict)

    @property
    def events(self) -> Events:
        return self.base.events

    @property
    def manager(self) -> Host:
        return first_manager(self.hosts)

    def runner(self, name: str) -> Runner:
        if name not in self.conns:
            host = self.host(name)
            self.conns[name] = SshConnection(host)
        return self.base.on(self.conns[name])

    @property
    def manager_runner(self) -> Runner:
        return self.runner(self.manager.name)

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise ConfigError(
            f"no node '{name}' in environment '{self.config.env}'",
            f"one of: {', '.join(h.name for h in self.hosts)}",
        )

    def info(self, name: str) -> NodeSwarm:
        result = self.runner(name).run(Command(info_argv(), mutates=False, timeout=30))
        return parse_info(result.stdout)

    def infos(self) -> dict[str, NodeSwarm]:
        return {h.name: self.info(h.name) for h in self.hosts}

    def node_labels(self, node_id: str) -> dict[str, str]:
        argv = ("docker", "node", "inspect", "--format", "{{json .Spec.Labels}}", node_id)
        out = self.manager_runner.run(Command(argv, mutates=False, timeout=30)).stdout
        return json.loads(out or "null") or {}

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()


@contextmanager
def open_cluster(config: Config, events: Events, runner: Runner) -> Iterator[Cluster]:
    """The environment's nodes (connected to on first use), closed on the way out."""
    hosts = hosts_for(config)
    validate_roles(hosts)
    cluster = Cluster(config, hosts, runner)
    try:
        yield cluster
    finally:
        cluster.close()


def init(cluster: Cluster) -> list[str]:
    """Form the swarm and label its nodes; returns what was done ([] when nothing was)."""
    events = cluster.events
    infos = cluster.infos()
    done = []
    manager = cluster.manager
    actions = plan_init(cluster.hosts, infos)
    # a dry run does not init: there is no token to read yet
    no_token = cluster.manager_runner.dry_run and any(a.kind == "init" for a in actions)
    for action in actions:
        runner = cluster.runner(action.host)
        host = cluster.host(action.host)
        with events.step(f"{action.host}: {action.what}"):
            if action.kind == "init":
                runner.run(Command(init_argv(manager.cluster_address), timeout=60))
            else:
                token = "<join token from the manager>"
                if not no_token:
                    kind = action.kind.split("-")[1]
                    read = Command(join_token_argv(kind), mutates=False, timeout=30)
                    token = cluster.manager_runner.run(read).stdout.strip()
                    runner.masker.add(token)  # a join token is a credential: never printed
                join = join_argv(token, host.cluster_address, manager.cluster_address)
                runner.run(Command(join, timeout=120))
        done.append(f"{action.host}: {action.what}")
    if cluster.manager_runner.dry_run and done:
        return done  # node ids exist only once the swarm does
    infos = cluster.infos()
    for host in cluster.hosts:
        node_id = infos[host.name].node_id
        add, remove = label_changes(host, cluster.node_labels(node_id))
        if add or remove:
            with events.step(f"{host.name}: labels {', '.join(add + [f'-{r}' for r in remove])}"):
                cluster.manager_runner.run(Command(label_argv(node_id, add, remove), timeout=30))
            done.append(f"{host.name}: labels " + ", ".join(add + [f"-{r}" for r in remove]))
    return done


def set_availability(cluster: Cluster, name: str, availability: str) -> bool:
    """drain / active one node; False when it already was."""
    node_id = cluster.info(cluster.host(name).name).node_id
    if not node_id:
        raise ClusterError(
            f"{name} is not in the swarm", f"inv cluster.init --env={cluster.config.env}"
        )
    argv = ("docker", "node", "inspect", "--format", "{{.Spec.Availability}}", node_id)
    now = cluster.manager_runner.run(Command(argv, mutates=False, timeout=30)).stdout.strip()
    if now == availability:
        return False
    cluster.manager_runner.run(Command(availability_argv(node_id, availability), timeout=30))
    return True


# --- status ---------------------------------------------------------------------------------


def parse_nodes(text: str) -> list[dict[str, object]]:
    """`docker node inspect` of every node: one JSON array."""
    rows = []
    for node in json.loads(text or "[]"):
        spec, status = node.get("Spec") or {}, node.get("Status") or {}
        labels = spec.get("Labels") or {}
        rows.append({
            "id": node.get("ID", ""),
            "node": (node.get("Description") or {}).get("Hostname", ""),
            "role": spec.get("Role", ""),
            "availability": spec.get("Availability", ""),
            "state": status.get("State", ""),
            "address": status.get("Addr", ""),
            "labels": ",".join(sorted(k[len(LABEL_PREFIX):] for k, v in labels.items()
                                      if k.startswith(LABEL_PREFIX) and v == "true")),
            "engine": ((node.get("Description") or {}).get("Engine") or {})
                      .get("EngineVersion", ""),
        })  # fmt: skip
    return sorted(rows, key=lambda r: str(r["node"]))


def parse_tasks(text: str) -> dict[str, list[str]]:
    """`docker node ps --format '{{.Node}} {{.Name}}'` lines: node -> its running tasks."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out.setdefault(parts[0], []).append(parts[1])
    return out


def status(cluster: Cluster) -> list[dict[str, object]]:
    """One row per node, as the manager sees it, with the tasks that run on it."""
    runner = cluster.manager_runner
    lead = cluster.info(cluster.manager.name)
    if not (lead.member and lead.is_manager):
        raise ClusterError(
            f"{cluster.manager.name} is not a swarm manager (swarm state: {lead.state})",
            f"inv cluster.init --env={cluster.config.env}",
        )
    ids = runner.run(Command(("docker", "node", "ls", "--quiet"), mutates=False, timeout=30))
    node_ids = ids.stdout.split()
    if not node_ids:
        return []
    nodes = parse_nodes(runner.run(Command(("docker", "node", "inspect", *node_ids),
                                           mutates=False, timeout=30)).stdout)  # fmt: skip
    ps_argv = ("docker", "node", "ps", *node_ids, "--filter", "desired-state=running",
               "--format", "{{.Node}} {{.Name}}")  # fmt: skip
    ps = runner.run(Command(ps_argv, mutates=False, timeout=60))
    tasks = parse_tasks(ps.stdout)
    for row in nodes:
        running = tasks.get(str(row["node"]), [])
        row["tasks"] = len(running)
    names = {h.cluster_address: h.name for h in cluster.hosts}
    for row in nodes:
        row["host"] = names.get(str(row["address"]), "")
    return nodes
