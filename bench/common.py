"""Shared helpers of the benchmarks: timing runs and writing bench/results/<name>.json rows."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def machine() -> str:
    cpus = len(__import__("os").sched_getaffinity(0))
    mem = Path("/proc/meminfo").read_text().split()[1]
    return f"{platform.machine()} {cpus} cpu {int(mem) // 1024 // 1024} GiB {platform.system()}"


def timed(argv: Sequence[str], runs: int, env: dict[str, str] | None = None) -> list[float]:
    """Wall seconds of each run of argv (one warm-up first, not counted); fails loudly."""
    out = []
    for index in range(runs + 1):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env)
        if index:
            out.append(time.perf_counter() - started)
    return out


def row(
    case: str,
    metric: str,
    value: float,
    unit: str,
    baseline: str,
    baseline_value: float,
    runs: int,
) -> dict[str, object]:
    return {
        "case": case,
        "metric": metric,
        "value": round(value, 4),
        "unit": unit,
        "baseline": baseline,
        "baseline_value": round(baseline_value, 4),
        "ratio": round(value / baseline_value, 4) if baseline_value else None,
        "runs": runs,
        "machine": machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def write(name: str, rows: list[dict[str, object]]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(rows, indent=2) + "\n")
    return path
