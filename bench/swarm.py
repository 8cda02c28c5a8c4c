"""Benchmark: deploys on a three-node Swarm under load, the suite against a raw `docker stack
deploy` of the same stack file, side by side in the same run.

Three node containers (tests/integration/swarm.py: Debian's dockerd and an sshd each, one
manager with the edge and data roles, two app workers), the real test registry, the
`swarm-loopback` environment. During every timed step bench/loadgen.py sends 45 GET/s through
nginx on the edge node and posts 5 chat messages/s while 5 WebSocket clients listen.

  change of every app service   LOG_LEVEL changes. Ours: `inv deploy` (render, objects, data
                                stores, migrations if any, stack deploy, converge, smoke off).
                                Raw: the live release's own stack file with LOG_LEVEL changed,
                                `docker stack deploy --with-registry-auth` on the manager, then
                                polled until every service has converged.
  change of one service         LOG_LEVEL of chat alone (services/chat/env/swarm-loopback.env,
                                the service's own override, removed afterwards). Raw: the live
                                stack file with chat's LOG_LEVEL changed, deployed the same way.
  rollback of the whole stack   `inv rollback` to the previous release (no raw counterpart: a
                                raw user would deploy the previous file again, which is what
                                the suite does; the row has no baseline).
  worker node killed            `docker kill` of an app worker's container under load: seconds
                                until `inv status` shows every app service healthy on the nodes
                                left, and the requests that failed meanwhile (no baseline: Swarm
                                reschedules the same way whoever deployed the stack). Services
                                run one replica each here: one whose only task was on that node
                                fails until Swarm notices and reschedules it. The node is started
                                again and the smoke suite passes before the next run.

The stack's nginx allows 400 requests/s per client here (NGINX_API_RATE), so that 429s from the
rate limit never count as failures of either side. The kernel has no IPVS: both sides use the
stack's dnsrr services and nginx's own balancing (docs/deployment/swarm.md); what Swarm's VIP
mode would lose cannot be measured here.

    .venv/bin/python bench/swarm.py [--runs 3]

Writes bench/results/swarm.json. Needs root, the base images (inv images.bootstrap) and the
packages of ./scripts/quickstart.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import REPO, load_rows, write

sys.path.insert(0, str(REPO))
from deploysuite.images.recipes import BASE_IMAGES, base_image_ref
from tests.integration.conftest import Registry
from tests.integration.swarm import SwarmNodes, docker
from tests.integration.test_swarm_deploy import APP, ENV, SwarmEnv

LEVELS = ("WARNING", "ERROR", "INFO", "DEBUG")
ONE = "chat"  # the service the one-service case changes
OVERRIDE = REPO / "services" / ONE / "env" / f"{ENV}.env"


class Bench:
    def __init__(self, workdir: Path) -> None:
        (workdir / "registry").mkdir()
        self.registry = Registry(workdir / "registry")
        self.registry.wait()
        base = {name: base_image_ref(name) for name in BASE_IMAGES}
        self.nodes = SwarmNodes(workdir, base["python"], self.registry.port)
        self.env = SwarmEnv(self.nodes, self.registry, base, workdir)
        for step in (("env.secrets", f"--env={ENV}"), ("cluster.init", f"--env={ENV}")):
            self.inv(*step)

    def inv(self, *args: str, check: bool = True):  # type: ignore[no-untyped-def]
        result = self.env.inv(*args, timeout=1200)
        if check and result.returncode != 0:
            raise RuntimeError(f"inv {' '.join(args)}: {result.stderr[-3000:]}")
        return result

    def deploy(self, level: str) -> None:
        self.inv("deploy", f"--env={ENV}", "--no-smoke", "--set", f"LOG_LEVEL={level}")

    def deploy_one(self, level: str) -> None:
        """LOG_LEVEL of one service, through its own override file of this environment."""
        OVERRIDE.write_text(f"LOG_LEVEL={level}\n")
        self.inv("deploy", f"--env={ENV}", "--no-smoke")

    def raw_deploy(self, level: str, only: str | None = None) -> None:
        """The live release's stack file, LOG_LEVEL changed (of every service, or of `only`),
        deployed as a person would."""
        env = self.env
        live = f"{env.root}/{ENV}/releases/{env.current()}/stack.yml"
        stack = yaml.safe_load(self.nodes.manager_exec("cat", live))
        for name, service in stack["services"].items():
            environment = service.get("environment")
            changed = only in (None, name)
            if changed and isinstance(environment, dict) and "LOG_LEVEL" in environment:
                environment["LOG_LEVEL"] = level
        with tempfile.NamedTemporaryFile("w", suffix=".yml") as edited:
            yaml.safe_dump(stack, edited, sort_keys=False)
            edited.flush()
            docker("cp", edited.name, f"{self.nodes.nodes[0].name}:/tmp/bench-stack.yml")
        self.nodes.manager_exec("chown", "deploy", "/tmp/bench-stack.yml")
        script = (
            "set -e; d=$(mktemp -d); trap 'rm -rf \"$d\" /tmp/bench-stack.yml' EXIT; "
            'mv /tmp/bench-stack.yml "$d/stack.yml"; '
            f"printf '%s' {shlex.quote(env.env['REGISTRY_PASSWORD'])} | docker --config \"$d\" "
            f"login --username {shlex.quote(env.env['REGISTRY_USERNAME'])} --password-stdin "
            f"{shlex.quote(self.registry.host)} >/dev/null; "
            f'docker --config "$d" stack deploy --with-registry-auth -c "$d/stack.yml" '
            f"{env.project} >/dev/null"
        )
        self.nodes.exec(self.nodes.nodes[0], "su", "deploy", "-c", script)
        self.wait_converged()

    def wait_converged(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        fmt = "{{.Spec.Name}} {{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}"
        while time.monotonic() < deadline:
            replicas = self.env.services()
            names = [f"{self.env.project}_{s}" for s in replicas]
            states = self.nodes.manager_exec("docker", "service", "inspect", "--format", fmt,
                                             *names).split("\n")  # fmt: skip
            updating = [line for line in states if line.strip().endswith(("updating", "_started"))]
            if (
                replicas
                and not updating
                and all(r.split("/")[0] == r.split("/")[1] for r in replicas.values())
            ):
                return
            time.sleep(0.5)
        raise RuntimeError("the raw stack deploy did not converge")

    def kill_worker(self) -> tuple[float, dict[str, object]]:
        """Kill the app worker that runs the most app tasks, under load; seconds until every
        app service is healthy on the nodes left. The node is started again afterwards."""
        env = self.env
        workers = [n for n in self.nodes.nodes if "app" in n.roles]

        def app_rows() -> list[dict[str, str]]:
            status = env.inv("status", f"--env={ENV}", "--json")
            rows = json.loads(status.stdout)["rows"] if status.stdout.strip() else []
            return [r for r in rows if r["service"] in APP]

        placed = app_rows()
        victim = max(workers, key=lambda n: sum(n.name in r["nodes"] for r in placed))
        recovered = None
        with env.load() as load:
            time.sleep(3)
            killed = time.monotonic()
            self.nodes.kill(victim)
            while time.monotonic() - killed < 180:
                rows = app_rows()
                if rows and all(victim.name not in r["nodes"] and r["health"] == "ok"
                                for r in rows):  # fmt: skip
                    recovered = time.monotonic() - killed
                    break
                time.sleep(1)
            time.sleep(3)
        self.nodes.restart(victim)
        self.wait_serving()
        if recovered is None:
            raise RuntimeError(f"the tasks of {victim.name} were not rescheduled in 180 s")
        print(f"  {victim.name} killed: {recovered:.1f} s {json.dumps(load.report)}",
              file=sys.stderr, flush=True)  # fmt: skip
        return recovered, load.report

    def wait_serving(self, timeout: float = 180) -> None:
        """Until the smoke suite passes through nginx: the next run starts on a stack that
        serves (a rejoined node's tasks and addresses settle first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.inv("smoke", f"--env={ENV}", check=False).returncode == 0:
                return
            time.sleep(3)
        raise RuntimeError(f"the stack did not serve again within {timeout:.0f} s")

    def measured(self, action) -> tuple[float, dict[str, object]]:  # type: ignore[no-untyped-def]
        with self.env.load() as load:
            time.sleep(2)
            started = time.monotonic()
            action()
            seconds = time.monotonic() - started
            time.sleep(2)
        print(f"  {seconds:.1f} s {json.dumps(load.report)}", file=sys.stderr, flush=True)
        return seconds, load.report

    def close(self) -> None:
        self.nodes.stop()
        self.registry.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    bench = Bench(Path(tempfile.mkdtemp(prefix="bench-swarm-")))
    results: dict[str, list[tuple[float, dict[str, object]]]] = {}
    try:
        bench.deploy("INFO")  # the stack, once (untimed)
        live = "INFO"
        for index in range(args.runs):
            ours, raw = LEVELS[(2 * index) % 4], LEVELS[(2 * index + 1) % 4]
            if ours == live:
                ours, raw = raw, ours
            print(f"run {index + 1}: ours LOG_LEVEL={ours}", file=sys.stderr, flush=True)
            results.setdefault("change: ours", []).append(
                bench.measured(lambda o=ours: bench.deploy(o)))  # fmt: skip
            print(f"run {index + 1}: raw LOG_LEVEL={raw}", file=sys.stderr, flush=True)
            results.setdefault("change: raw", []).append(
                bench.measured(lambda r=raw: bench.raw_deploy(r)))  # fmt: skip
            bench.deploy(raw)  # a release of what the raw deploy did (untimed)
            print(f"run {index + 1}: rollback", file=sys.stderr, flush=True)
            results.setdefault("rollback: ours", []).append(bench.measured(
                lambda: bench.inv("rollback", f"--env={ENV}", "--no-smoke")))  # fmt: skip
            live = ours
        bench.deploy(live)  # a release whose chat runs at `live` like the rest (untimed)
        for index in range(args.runs):
            ours, raw = LEVELS[(2 * index + 1) % 4], LEVELS[(2 * index + 2) % 4]
            print(f"run {index + 1}: ours {ONE} LOG_LEVEL={ours}", file=sys.stderr, flush=True)
            results.setdefault("one: ours", []).append(
                bench.measured(lambda o=ours: bench.deploy_one(o)))  # fmt: skip
            print(f"run {index + 1}: raw {ONE} LOG_LEVEL={raw}", file=sys.stderr, flush=True)
            results.setdefault("one: raw", []).append(
                bench.measured(lambda r=raw: bench.raw_deploy(r, only=ONE)))  # fmt: skip
            bench.deploy_one(raw)  # a release of what the raw deploy did (untimed)
        for index in range(args.runs):
            print(f"run {index + 1}: worker node killed", file=sys.stderr, flush=True)
            results.setdefault("kill: ours", []).append(bench.kill_worker())
    finally:
        OVERRIDE.unlink(missing_ok=True)
        bench.close()
    rows = []
    cases = (("change", "change of every app service", "docker stack deploy of the same file"),
             ("one", f"change of one service ({ONE})", "docker stack deploy of the same file"),
             ("rollback", "rollback of the whole stack", "-"),
             ("kill", "worker node killed: app services healthy again", "-"))  # fmt: skip
    for case, label, baseline in cases:
        rows += load_rows(f"swarm: {label}", baseline, results[f"{case}: ours"],
                          results.get(f"{case}: raw", []))  # fmt: skip
    print(write("swarm", rows))


if __name__ == "__main__":
    main()
