"""Benchmark: `inv deploy --env=local` against a raw `docker compose up -d --wait` applying the
same change, side by side in the same run, on a stack of its own (own project, own ports),
with ~20 requests a second to auth through nginx during every run:

  unchanged            nothing to do: ours detects it, compose re-checks every container
  one service changed  AUTH_TOKEN_TTL_SECONDS alternates, so auth changes every run: ours rolls
                       it beside the old container, compose recreates it in place

Smoke tests are left out of ours (--no-smoke) because compose does not run them.

    .venv/bin/python bench/deploy.py [--runs 3]

Writes bench/results/deploy.json. Needs the base images (inv images.bootstrap).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from common import REPO, median, row, stats, write

sys.path.insert(0, str(REPO))
from deploysuite.config.layers import load_config
from deploysuite.core import commands
from deploysuite.core.events import Events
from deploysuite.core.runner import Runner
from deploysuite.deploy.local import current_env, write_service_envs
from deploysuite.engines.stack import stack_for
from deploysuite.engines.state import remove_project

# (metric, unit, index in a run's (seconds, requests sent, requests failed))
METRICS = (("deploy wall time", "s", 0), ("failed requests under load", "requests", 2))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PROJECT = f"benchdeploy{os.getpid()}"
HTTPS = free_port()
ENV = {
    **os.environ,
    "COMPOSE_PROJECT_NAME": PROJECT,
    "HTTP_PORT": str(free_port()),
    "HTTPS_PORT": str(HTTPS),
    "PROMETHEUS_PORT": str(free_port()),
    "PUBLIC_URL": f"https://localhost:{HTTPS}",
}


TLS_CA = REPO / "build" / "local" / PROJECT / "tls" / "ca.pem"


def ours(ttl: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "invoke", "-r", str(REPO), "deploy", "--env=local",
            "--no-smoke", "--set", f"AUTH_TOKEN_TTL_SECONDS={ttl}", *extra]  # fmt: skip


def raw(ttl: str) -> tuple[list[str], dict[str, str]]:
    """The same change for compose: the services' environment file rewritten, then `up`."""
    config = load_config("local", cli={"AUTH_TOKEN_TTL_SECONDS": ttl}, process_env=ENV)
    write_service_envs(Runner(Events()), config, Path("/nonexistent"))
    stack = stack_for(config)
    argv = commands.compose_up(stack.project, stack.files, profiles=stack.profiles)
    return list(argv), {**ENV, **current_env(config)}


class Load:
    """~20 requests a second to auth through nginx, counting every answer that is not 200."""

    def __init__(self) -> None:
        self.context = ssl.create_default_context(cafile=str(TLS_CA))
        self.stop = threading.Event()
        self.sent = 0
        self.failed = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            self.sent += 1
            try:
                with urllib.request.urlopen(
                    f"https://localhost:{HTTPS}/health/auth", context=self.context, timeout=10
                ) as response:
                    self.failed += response.status != 200
            except OSError:  # HTTPError included
                self.failed += 1
            time.sleep(0.05)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def timed_once(argv: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """Wall seconds, requests sent and requests failed while the command ran."""
    with Load() as load:
        started = time.perf_counter()
        result = subprocess.run(argv, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return seconds, load.sent, load.failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    try:
        subprocess.run([sys.executable, "-m", "invoke", "-r", str(REPO), "env.secrets",
                        "--env=local"], env=ENV, check=True, capture_output=True)  # fmt: skip
        subprocess.run(ours("3600"), env=ENV, check=True, capture_output=True)  # the stack, once
        rows = []
        baseline = "docker compose up -d --wait (same stack, same change)"
        for case in ("unchanged", "one service changed"):
            runs: dict[str, list[tuple[float, int, int]]] = {"roll": [], "no-roll": [], "raw": []}
            for index in range(args.runs):
                # each run is a real change for all three, taking turns
                ttl = (
                    ["3600"] * 3
                    if case == "unchanged"
                    else [str(3601 + 3 * index + k) for k in range(3)]
                )
                runs["roll"].append(timed_once(ours(ttl[0]), ENV))
                runs["no-roll"].append(timed_once(ours(ttl[1], "--no-roll"), ENV))
                argv, env = raw(ttl[2])
                runs["raw"].append(timed_once(argv, env))
                # compose recreated auth under a new address and never tells nginx: reload it
                # (untimed) so the next run starts from a consistent stack, as an operator would
                subprocess.run(["docker", "exec", f"{PROJECT}-nginx-1", "nginx", "-s", "reload"],
                               check=True, capture_output=True)  # fmt: skip
                time.sleep(3)
            subprocess.run(ours("3600"), env=ENV, check=True, capture_output=True)
            raw_runs = runs["raw"]
            for name, label in (("roll", "inv deploy"), ("no-roll", "inv deploy --no-roll"),
                                ("raw", "raw compose up --wait")):  # fmt: skip
                wall = median([r[0] for r in runs[name]])
                failed, sent = sum(r[2] for r in runs[name]), sum(r[1] for r in runs[name])
                print(f"{case:20} {label:22} {wall:6.2f} s   {failed}/{sent} requests failed")
                if name == "raw":
                    continue
                for metric, unit, pick in METRICS:
                    values = [float(r[pick]) for r in runs[name]]
                    base = [float(r[pick]) for r in raw_runs]
                    entry = row(f"{case}: {label}", metric, median(values), unit, baseline,
                                median(base), args.runs)  # fmt: skip
                    entry["value_runs"], entry["baseline_runs"] = stats(values), stats(base)
                    entry["requests"] = [r[1] for r in runs[name]]
                    entry["failed"] = [r[2] for r in runs[name]]
                    entry["baseline_requests"] = [r[1] for r in raw_runs]
                    entry["baseline_failed"] = [r[2] for r in raw_runs]
                    entry["retried"] = entry["baseline_retried"] = [0] * args.runs
                    entry["client_retries"] = "off (a new connection per request)"
                    rows.append(entry)
        print(write("deploy", rows))
    finally:
        remove_project(Runner(Events()), PROJECT)
        shutil.rmtree(REPO / "build" / "local" / PROJECT, ignore_errors=True)


if __name__ == "__main__":
    main()
