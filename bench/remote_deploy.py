"""Benchmark: the remote deploy over SSH under load, against a raw `docker compose up -d` of the
same change, side by side in the same run.

A real sshd on 127.0.0.1 (own host key, a deploy user), a real registry, the real engine: the
`loopback` environment. During every run, bench/loadgen.py sends 45 GET/s through nginx to auth
and posts 5 chat messages/s (50 requests/s) while 5 WebSocket clients listen; a closed socket
reconnects with since=<last id>. The load runs until the stack is healthy again.

  all HTTP services    LOG_LEVEL changes: every service is replaced. Ours starts each new
                       container beside its old one (three at a time, DEPLOY_ROLL_BATCH_SIZE's
                       default), two nginx reloads per batch; compose recreates them in place.
  broken release       LOG_LEVEL changes and analytics can never become ready: ours starts the
                       batch, finds analytics unhealthy, removes the batch's new containers and
                       converges back; compose recreates everything in place and leaves
                       analytics down. Also measured: seconds from the new analytics
                       container's first failed health check (Docker's health log) until the
                       deploy ended with the old release alone.

The loopback environment has no bake window (DEPLOY_BAKE_SECONDS=0): these are rollout times.
The load generator does not retry (each row says so and carries the retry count).
The stack's nginx allows 400 requests/s per client here (NGINX_API_RATE), so that 429s from the
rate limit never count as failures of either side.

    .venv/bin/python bench/remote_deploy.py [--runs 3] [--batch-size N]

Writes bench/results/remote_deploy.json. Needs root (it creates the deploy user), the base images
(inv images.bootstrap) and the packages of ./scripts/quickstart.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import REPO, load_rows, row, stats, write

sys.path.insert(0, str(REPO))
from bench.loadgen import BackgroundLoad
from deploysuite.config.layers import load_config
from deploysuite.core.events import Events
from deploysuite.core.runner import Runner
from deploysuite.deploy import release as rel
from deploysuite.deploy.shipment import release_files
from deploysuite.engines.state import remove_project
from tests.integration.conftest import Registry, SshHost, free_port

LEVELS = ("WARNING", "ERROR", "INFO", "DEBUG")
BROKEN = "ANALYTICS_DB_NAME=no_such_database"
SETTLE = 60  # seconds the load keeps running after a raw compose up, at most, for health


def top_phases(json_out: str) -> dict[str, float]:
    """The deploy's own steps and their sub-steps (its --json `phases`, sub-steps indented),
    release ids and image tags made generic."""
    try:
        phases = json.loads(json_out[json_out.index("{") :]).get("phases", [])
    except ValueError:
        return {}
    out: dict[str, float] = {}
    for phase in phases:
        if phase.get("depth", 0) <= 1:  # the steps and their first level (the rollout's)
            name = re.sub(r"\d{8}T\d{6}Z-\S+", "<release>", str(phase["phase"]))
            name = re.sub(r"^push \S+/([\w-]+):\S+$", r"push \1", name)
            name = "  " * int(phase.get("depth", 0)) + name
            out[name] = round(out.get(name, 0.0) + float(phase.get("seconds", 0)), 2)
    return out


class FirstFailedCheck:
    """Watches a service's new containers during a deploy (every 0.5 s, in a thread): the wall
    time of the first health check that failed, from Docker's own health log."""

    def __init__(self, project: str, service: str) -> None:
        self.filters = ["--filter", f"label=com.docker.compose.project={project}",
                        "--filter", f"label=com.docker.compose.service={service}"]  # fmt: skip
        self.old = set(self.names())
        self.first: float | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def names(self) -> list[str]:
        out = subprocess.run(["docker", "ps", "-a", *self.filters, "--format", "{{.Names}}"],
                             capture_output=True, text=True, check=False).stdout  # fmt: skip
        return out.split()

    def run(self) -> None:
        deadline = time.monotonic() + 900
        while not self.stop.is_set() and time.monotonic() < deadline:
            for name in set(self.names()) - self.old:
                out = subprocess.run(
                    ["docker", "inspect", "--format", "{{json .State}}", name],
                    capture_output=True, text=True, check=False,
                ).stdout.strip()  # fmt: skip
                state = json.loads(out) if out.startswith("{") else {}
                failed = [e["Start"] for e in (state.get("Health") or {}).get("Log") or []
                          if e.get("ExitCode")]  # fmt: skip
                if state.get("Status") in ("exited", "dead", "restarting"):
                    failed.append(state.get("FinishedAt") or "")  # it died: a failure too
                for stamp in filter(None, failed):
                    at = dt.datetime.fromisoformat(stamp[:26].rstrip("Z") + "+00:00").timestamp()
                    self.first = at if self.first is None else min(self.first, at)
            self.stop.wait(0.5)

    def __enter__(self) -> FirstFailedCheck:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


class Bench:
    def __init__(self, workdir: Path) -> None:
        (workdir / "ssh").mkdir()
        (workdir / "registry").mkdir()
        self.ssh = SshHost(workdir / "ssh")
        self.registry = Registry(workdir / "registry")
        self.ssh.wait()
        self.registry.wait()
        self.project = f"benchremote{os.getpid()}"
        self.https = free_port()
        self.root = f"{self.ssh.home}/srv-bench-{os.getpid()}"
        hosts = workdir / "hosts.yml"
        hosts.write_text(
            f"known_hosts: {self.ssh.known_hosts}\nhosts:\n  - name: app1\n"
            f"    address: 127.0.0.1\n    port: {self.ssh.port}\n    user: {self.ssh.user}\n"
            f"    key: {self.ssh.key_file}\n"
        )
        self.env = {
            **os.environ,
            "DEPLOY_HOSTS_FILE": str(hosts), "DEPLOY_ROOT": self.root,
            "IMAGE_REPOSITORY": f"{self.registry.host}/mysaaschat",
            "REGISTRY_USERNAME": self.registry.username,
            "REGISTRY_PASSWORD": self.registry.password,
            "COMPOSE_PROJECT_NAME": self.project, "HTTP_PORT": str(free_port()),
            "HTTPS_PORT": str(self.https), "PROMETHEUS_PORT": str(free_port()),
            "PUBLIC_URL": f"https://localhost:{self.https}",
            "NGINX_API_RATE": "400r/s", "NGINX_API_BURST": "800",
        }  # fmt: skip
        self.ca = REPO / "build" / "loopback" / self.project / "tls" / "ca.pem"
        self.from_first_failure: list[float] = []
        self.phases: dict[str, float] = {}  # the last deploy's top-level steps, seconds
        self.last_error = ""

    def inv(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "invoke", "-r", str(REPO), *args],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise SystemExit(f"inv {' '.join(args)} failed:\n{result.stderr[-3000:]}")
        return result

    def deploy(self, level: str, *extra: str, check: bool = True) -> None:
        result = self.inv("deploy", "--env=loopback", "--no-smoke", "--wait-timeout", "60",
                          "--json", "--set", f"LOG_LEVEL={level}", *extra, check=check)  # fmt: skip
        self.phases = top_phases(result.stdout)
        self.last_error = (result.stderr.strip().splitlines() or [""])[-1][:300]

    def raw_up(self, level: str, *extra: str) -> None:
        """`docker compose up -d` of the same release files a deploy of this change would
        ship (built by the suite's own function), then wait for health, untimed."""
        live = Path(self.root) / "loopback" / "current" / "manifest.json"
        images = json.loads(live.read_text())["images"]
        overrides = dict(kv.split("=", 1) for kv in (f"LOG_LEVEL={level}", *extra))
        os.environ.update(self.env)
        config = load_config("loopback", cli=overrides)
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            layout = rel.layout(self.root, "loopback")
            for name, data in release_files(config, images, layout, "app1").items():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(data)
            subprocess.run(
                [
                    "docker",
                    "compose",
                    "--project-name",
                    self.project,
                    "--file",
                    str(folder / "docker-compose.prod.yml"),
                    "--file",
                    str(folder / "services.env.yml"),
                    "--profile",
                    "local-mail",
                    "up",
                    "--detach",
                ],
                check=False,
                capture_output=True,
                env=self.env,
            )  # fmt: skip (a broken release fails compose too: the load goes on regardless)

    def wait_healthy(self, services: tuple[str, ...], timeout: float = SETTLE) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["docker", "ps", "--filter", f"label=com.docker.compose.project={self.project}",
                 "--format", '{{.Label "com.docker.compose.service"}} {{.Status}}'],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            healthy = {line.split()[0] for line in out.splitlines() if "(healthy)" in line}
            if set(services) <= healthy:
                return
            time.sleep(1)

    def reload_nginx(self) -> None:
        """compose recreated the upstreams under new addresses and never tells nginx."""
        subprocess.run(["docker", "exec", f"{self.project}-nginx-1", "nginx", "-s", "reload"],
                       check=False, capture_output=True)  # fmt: skip
        time.sleep(3)

    def broken_deploy(self, level: str) -> None:
        """The broken release, and how long from its first failed health check until the
        deploy ended with the old release alone."""
        with FirstFailedCheck(self.project, "analytics") as watch:
            self.deploy(level, "--set", BROKEN, check=False)
        ended = time.time()
        print(f"  broken: {self.last_error}; first failure seen: {watch.first}", file=sys.stderr)
        if watch.first is not None:
            self.from_first_failure.append(ended - watch.first)

    def measured(self, action) -> tuple[float, dict[str, object]]:
        with BackgroundLoad(
            f"https://localhost:{self.https}", ca_file=self.ca, rate=45, ws_clients=5,
            connect_host="127.0.0.1", retry_closed=True,
        ) as load:  # fmt: skip
            time.sleep(2)
            started = time.perf_counter()
            action()
            seconds = time.perf_counter() - started
            time.sleep(2)
        report = {**load.report, "phases": self.phases}
        self.phases = {}
        print(f"  {seconds:.1f} s {json.dumps(report)}", file=sys.stderr, flush=True)
        return seconds, report

    def close(self) -> None:
        remove_project(Runner(Events()), self.project)
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(REPO / "build" / "loopback" / self.project, ignore_errors=True)
        self.ssh.stop()
        self.registry.stop()


SERVING = ("nginx", "auth", "chat", "billing", "orchestrator")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="DEPLOY_ROLL_BATCH_SIZE for ours (0: all at once); results go to "
                             "remote_deploy_batch<N>.json")  # fmt: skip
    args = parser.parse_args()
    bench = Bench(Path(tempfile.mkdtemp(prefix="bench-remote-")))
    suffix = ""
    if args.batch_size is not None:
        bench.env["DEPLOY_ROLL_BATCH_SIZE"] = str(args.batch_size)
        suffix = f" (DEPLOY_ROLL_BATCH_SIZE={args.batch_size})"
    results: dict[str, list[tuple[float, dict[str, object]]]] = {}
    try:
        bench.inv("env.secrets", "--env=loopback")
        bench.deploy("INFO")  # the stack, once
        live = "INFO"
        for index in range(args.runs):
            ours, raw = LEVELS[(2 * index) % 4], LEVELS[(2 * index + 1) % 4]
            if ours == live:
                ours, raw = raw, ours
            results.setdefault("all: ours", []).append(
                bench.measured(lambda o=ours: bench.deploy(o))
            )
            results.setdefault("all: raw", []).append(bench.measured(
                lambda r=raw: (bench.raw_up(r), bench.wait_healthy(SERVING), bench.reload_nginx())
            ))  # fmt: skip
            bench.deploy(raw)  # a release of what compose did: consistent again (untimed)
            live = raw
            broken = LEVELS[(LEVELS.index(live) + 1) % 4]
            results.setdefault("broken: ours", []).append(bench.measured(
                lambda b=broken: bench.broken_deploy(b)))  # fmt: skip
            results.setdefault("broken: raw", []).append(bench.measured(
                lambda b=broken: (bench.raw_up(b, BROKEN), bench.wait_healthy(SERVING),
                                  bench.reload_nginx())))  # fmt: skip
            bench.deploy(live)  # back to the live release (untimed)
    finally:
        bench.close()
    rows = []
    baseline = "docker compose up -d of the same change (same load)"
    for case, label in (("all", "deploy of all HTTP services"),
                        ("broken", "broken release, rolled back")):  # fmt: skip
        rows += load_rows(f"{label}: inv deploy{suffix}", baseline, results[f"{case}: ours"],
                          results[f"{case}: raw"])  # fmt: skip
    if bench.from_first_failure:
        seconds = bench.from_first_failure
        entry = row(f"broken release, rolled back: inv deploy{suffix}",
                    "from the first failed health check to the old release alone",
                    statistics.median(seconds), "s", "-", 0.0, len(seconds))  # fmt: skip
        entry["value_runs"] = stats(seconds)
        rows.append(entry)
    name = "remote_deploy" if args.batch_size is None else f"remote_deploy_batch{args.batch_size}"
    print(write(name, rows))


if __name__ == "__main__":
    main()
