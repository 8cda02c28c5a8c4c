"""Benchmark: `inv deploy --env=local` against a raw `docker compose up -d --wait` doing the same
work, side by side in the same run, on a stack of its own (own project, own ports):

  unchanged            nothing to do: ours detects it, compose re-checks every container
  one service changed  AUTH_TOKEN_TTL_SECONDS alternates, so auth is recreated every run

Smoke tests are left out of ours (--no-smoke) because compose does not run them.

    .venv/bin/python bench/deploy.py [--runs 3]

Writes bench/results/deploy.json. Needs the base images (inv images.bootstrap).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time

from common import REPO, median, row, write

sys.path.insert(0, str(REPO))
from deploysuite import commands
from deploysuite.compose import stack_for
from deploysuite.config import load_config
from deploysuite.events import Events
from deploysuite.localdeploy import current_env
from deploysuite.localstack import remove_project
from deploysuite.runner import Runner


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


def ours(ttl: str) -> list[str]:
    return [sys.executable, "-m", "invoke", "-r", str(REPO), "deploy", "--env=local",
            "--no-smoke", "--set", f"AUTH_TOKEN_TTL_SECONDS={ttl}"]  # fmt: skip


def raw(ttl: str) -> tuple[list[str], dict[str, str]]:
    config = load_config("local", cli={"AUTH_TOKEN_TTL_SECONDS": ttl}, process_env=ENV)
    stack = stack_for(config)
    argv = commands.compose_up(stack.project, stack.files, profiles=stack.profiles)
    return list(argv), {**ENV, **current_env(config)}


def timed_once(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    try:
        timed_once(ours("3600"), ENV)  # the stack, once, healthy
        results: dict[str, tuple[list[float], list[float]]] = {}
        for case in ("unchanged", "one service changed"):
            mine, theirs = [], []
            for index in range(args.runs):
                if case == "unchanged":
                    ttl_a = ttl_b = "3600"
                else:  # each run is a real change for both, taking turns
                    ttl_a, ttl_b = str(3601 + 2 * index), str(3602 + 2 * index)
                mine.append(timed_once(ours(ttl_a), ENV))
                argv, env = raw(ttl_b)
                theirs.append(timed_once(argv, env))
            timed_once(ours("3600"), ENV)
            results[case] = (mine, theirs)
            ratio = median(mine) / median(theirs)
            print(f"{case:20} inv deploy {median(mine):6.2f} s   raw compose up --wait "
                  f"{median(theirs):6.2f} s   ratio {ratio:.2f}")  # fmt: skip
        rows = [
            row(case, "deploy wall time", median(m), "s",
                "docker compose up -d --wait (same stack, same change)", median(t), args.runs)
            for case, (m, t) in results.items()
        ]  # fmt: skip
        print(write("deploy", rows))
    finally:
        remove_project(Runner(Events()), PROJECT)
        shutil.rmtree(REPO / "build" / "local" / PROJECT, ignore_errors=True)


if __name__ == "__main__":
    main()
