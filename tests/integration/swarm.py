"""A real multi-node Docker Swarm on one machine, for the tests and the benchmarks.

Each node is a container of docker/swarm-node (Debian's dockerd and an sshd, built from the
suite's own python base image, no image from a registry) on one bridge network the harness
creates. The suite reaches the nodes over SSH at their addresses on that network, as it reaches
real hosts: their host keys go into a known_hosts file read from the nodes themselves.

Images reach the nodes through the test registry: it listens on 127.0.0.1 (the machine's engine
pushes there without TLS), a forwarder on the network's gateway address carries it to the
nodes, and inside each node 127.0.0.1:PORT forwards to the gateway, so an image reference
`127.0.0.1:PORT/...` means the same registry on this machine and on every node.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from deploysuite.images.recipes import hash_tree

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / "docker" / "swarm-node"
NODE_RUN_FLAGS = (
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
)  # fmt: skip


def docker(*args: str, check: bool = True, timeout: float = 300, **kw) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False, **kw
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} failed: {result.stderr.strip()[-800:]}")
    return result.stdout


def node_image(python_image: str) -> str:
    """docker/swarm-node built on the suite's python base image, tagged by recipe and base."""
    base_id = docker("image", "inspect", "--format", "{{.Id}}", python_image).strip()
    digest = hashlib.sha256(f"{hash_tree(NODE_DIR)} {base_id}".encode()).hexdigest()[:12]
    ref = f"mysaaschat/swarm-node:{digest}"
    if docker("image", "inspect", ref, check=False).strip() in ("", "[]"):
        docker("build", "--quiet", "--build-arg", f"PYTHON_IMAGE={python_image}", "-t", ref,
               str(NODE_DIR), timeout=900)  # fmt: skip
    return ref


class Forwarder:
    """TCP from (listen address, port) to 127.0.0.1:port, in this process, until stop()."""

    def __init__(self, address: str, port: int) -> None:
        self.server = socket.create_server((address, port), reuse_port=False)
        self.port = port
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self.stopped = True
        self.server.close()


@dataclass
class Node:
    name: str  # container name, its hostname, and its name in hosts.yml
    address: str
    roles: tuple[str, ...]
    manager: bool


class SwarmNodes:
    """Three node containers (one manager: edge and data; two workers: app) and their SSH
    access. Nothing joins a swarm here: forming it is the suite's job (`inv cluster.init`)."""

    LAYOUT = (
        ("edge", "data"),
        ("app",),
        ("app",),
    )

    def __init__(self, workdir: Path, python_image: str, registry_port: int) -> None:
        self.workdir = workdir
        self.prefix = f"swn{os.getpid()}"
        self.network = f"{self.prefix}-net"
        self.image = node_image(python_image)
        self.key_file = workdir / "id_deploy"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key_file)],
                       check=True)  # fmt: skip
        # A subnet the engine picks, then made explicit: a restarted node keeps its address
        # (its swarm advertise address), which only a user-defined subnet guarantees.
        docker("network", "create", self.network)
        subnet, self.gateway = docker(
            "network", "inspect", "--format",
            "{{(index .IPAM.Config 0).Subnet}} {{(index .IPAM.Config 0).Gateway}}", self.network,
        ).split()  # fmt: skip
        docker("network", "rm", self.network)
        docker("network", "create", "--subnet", subnet, "--gateway", self.gateway, self.network)
        self.addresses = iter(
            str(a) for a in ipaddress.ip_network(subnet).hosts() if str(a) != self.gateway
        )
        self.forwarder = Forwarder(self.gateway, registry_port)
        self.registry_port = registry_port
        self.nodes: list[Node] = []
        for index, roles in enumerate(self.LAYOUT, start=1):
            self.nodes.append(self._start(f"{self.prefix}-{index}", roles, manager=index == 1))
        self.known_hosts = workdir / "known_hosts"
        self.hosts_file = workdir / "hosts.yml"
        self._wait_ready()
        self.write_files()

    def _start(self, name: str, roles: tuple[str, ...], manager: bool) -> Node:
        docker(
            "run", "--detach", "--name", name, "--hostname", name, "--network", self.network,
            "--ip", next(self.addresses),
            *NODE_RUN_FLAGS, "-v", f"{name}:/var/lib/docker",
            "--label", f"org.mysaaschat.test={self.prefix}",
            "-e", f"AUTHORIZED_KEY={self.key_file.with_suffix('.pub').read_text().strip()}",
            "-e", f"REGISTRY_FORWARD={self.registry_port}:{self.gateway}",
            self.image,
        )  # fmt: skip
        address = docker(
            "inspect", "--format", f"{{{{(index .NetworkSettings.Networks \"{self.network}\")"
            ".IPAddress}}", name,
        ).strip()  # fmt: skip
        return Node(name, address, roles, manager)

    def _wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while True:
                probe = subprocess.run(
                    ["docker", "exec", node.name, "docker", "info", "--format", "{{.ID}}"],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                if probe.returncode == 0 and probe.stdout.strip():
                    break
                if time.monotonic() > deadline:
                    logs = docker("logs", "--tail", "30", node.name, check=False)
                    raise RuntimeError(f"node {node.name} did not start its engine:\n{logs}")
                time.sleep(0.5)

    def write_files(self) -> None:
        lines = []
        for node in self.nodes:
            key = docker("exec", node.name, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").split()
            lines.append(f"{node.address} {key[0]} {key[1]}\n")
        self.known_hosts.write_text("".join(lines))
        text = f"known_hosts: {self.known_hosts}\nhosts:\n"
        for node in self.nodes:
            text += (
                f"  - name: {node.name}\n    address: {node.address}\n    user: deploy\n"
                f"    key: {self.key_file}\n    roles: [{', '.join(node.roles)}]\n"
                f"    manager: {'true' if node.manager else 'false'}\n"
            )
        self.hosts_file.write_text(text)

    def node(self, role: str) -> Node:
        return next(n for n in self.nodes if role in n.roles)

    def exec(self, node: Node, *argv: str, check: bool = True) -> str:
        return docker("exec", node.name, *argv, check=check)

    def manager_exec(self, *argv: str, check: bool = True) -> str:
        return self.exec(self.nodes[0], *argv, check=check)

    def kill(self, node: Node) -> None:
        docker("kill", node.name)

    def restart(self, node: Node, timeout: float = 90) -> None:
        """Start a killed node again: same address, same volume; its engine rejoins."""
        docker("start", node.name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            argv = ("docker", "node", "inspect", "--format", "{{.Status.State}}", node.name)
            state = self.manager_exec(*argv, check=False).strip()
            if state == "ready":
                return
            time.sleep(1)
        logs = docker("logs", "--tail", "20", node.name, check=False)
        raise RuntimeError(f"node {node.name} did not come back:\n{logs}")

    def stop(self) -> None:
        names = [n.name for n in self.nodes]
        if names:
            docker("rm", "--force", "--volumes", *names, check=False, timeout=120)
            docker("volume", "rm", *names, check=False)
        self.forwarder.stop()
        docker("network", "rm", self.network, check=False)
