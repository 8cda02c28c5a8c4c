"""Benchmark: what the `monitoring` profile costs in memory, beside the rest of the same stack.

The local environment is deployed under its own compose project and ports (profile
`monitoring` on, as in environments/local), left to settle, then `docker stats` is read
--samples times, --interval seconds apart. Rows: the RSS of each monitoring container
(Alertmanager and the five exporters) and their total, against the total of every other
container of the same stack in the same sample (the baseline: what the stack costs without the
additions). Prometheus itself ran before the profile existed and counts in the baseline.

    .venv/bin/python bench/monitoring.py [--samples 3] [--interval 10]

Writes bench/results/monitoring.json. Needs the base images (inv images.bootstrap).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

from common import REPO, row, write

ADDITIONS = ("alertmanager", "node-exporter", "postgres-exporter", "redis-exporter",
             "nginx-exporter", "blackbox-exporter")  # fmt: skip
BASELINE = "the rest of the same stack"
UNITS = {"b": 1, "kib": 1024, "kb": 1000, "mib": 1024**2, "mb": 1000**2, "gib": 1024**3,
         "gb": 1000**3}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mib(text: str) -> float:
    """`12.5MiB` (docker stats' MemUsage, before the slash) -> MiB."""
    number = text.strip().rstrip("BbIiKkMmGg")
    unit = text.strip()[len(number) :].lower()
    return float(number) * UNITS[unit] / 1024**2


def sample(project: str) -> dict[str, float]:
    """service -> MiB of memory in use now, for every container of the project."""
    ids = subprocess.run(
        ["docker", "ps", "--filter", f"label=com.docker.compose.project={project}",
         "--format", '{{.ID}} {{.Label "com.docker.compose.service"}}'],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")  # fmt: skip
    names = dict(line.split() for line in ids if line.strip())
    out = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{json .}}", *names],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    used = {}
    for line in out.splitlines():
        stat = json.loads(line)
        service = names.get(stat["ID"][:12]) or names.get(stat["ID"])
        used[service] = mib(stat["MemUsage"].split("/")[0])
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--interval", type=float, default=10)
    args = parser.parse_args()
    project = f"benchmon{os.getpid()}"
    https = free_port()
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": project,
        "HTTP_PORT": str(free_port()),
        "HTTPS_PORT": str(https),
        "PROMETHEUS_PORT": str(free_port()),
        "ALERTMANAGER_PORT": str(free_port()),
        "PUBLIC_URL": f"https://localhost:{https}",
    }
    inv = [sys.executable, "-m", "invoke", "-r", str(REPO)]
    samples: list[dict[str, float]] = []
    try:
        subprocess.run([*inv, "env.secrets", "--env=local"], env=env, check=True,
                       capture_output=True)  # fmt: skip
        deploy = subprocess.run([*inv, "deploy", "--env=local", "--no-smoke"], env=env,
                                capture_output=True, text=True)  # fmt: skip
        if deploy.returncode != 0:
            raise SystemExit(f"deploy failed: {deploy.stderr[-2000:]}")
        time.sleep(30)  # past every healthcheck's first runs and a few scrapes
        for index in range(args.samples):
            if index:
                time.sleep(args.interval)
            samples.append(sample(project))
            print(f"sample {index + 1}: {json.dumps(samples[-1])}", file=sys.stderr)
    finally:
        subprocess.run([*inv, "down", "--env=local", "--volumes", "--yes"], env=env,
                       capture_output=True)  # fmt: skip
    missing = [name for name in ADDITIONS if name not in samples[0]]
    if missing:
        raise SystemExit(f"not running: {', '.join(missing)}")
    added = [sum(s[n] for n in ADDITIONS) for s in samples]
    rest = [sum(v for k, v in s.items() if k not in ADDITIONS) for s in samples]
    rows = []
    entry = row("monitoring profile: total RSS", "memory", statistics.median(added), "MiB",
                BASELINE, statistics.median(rest), len(samples))  # fmt: skip
    entry["value_runs"] = {"min": min(added), "median": statistics.median(added), "max": max(added)}
    entry["baseline_runs"] = {"min": min(rest), "median": statistics.median(rest),
                              "max": max(rest)}  # fmt: skip
    rows.append(entry)
    for name in ADDITIONS:
        median = statistics.median(s[name] for s in samples)
        baseline = statistics.median(rest)
        case = f"monitoring profile: {name}"
        rows.append(row(case, "memory", median, "MiB", BASELINE, baseline, len(samples)))
    for entry in rows:
        print(f"{entry['case']:45} {entry['value']:8.1f} MiB")
    print(write("monitoring", rows))


if __name__ == "__main__":
    main()
