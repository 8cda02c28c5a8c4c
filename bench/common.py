"""Shared helpers of the benchmarks: timing runs and writing bench/results/<name>.json rows."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


Measured = tuple[float, dict[str, Any]]  # (seconds, bench.loadgen report) of one run

LOAD_METRICS: tuple[tuple[str, str, Callable[[Measured], float]], ...] = (
    ("wall time", "s", lambda r: r[0]),
    ("failed requests", "requests", lambda r: r[1]["failed"]),
    ("p99 latency", "ms", lambda r: r[1]["p99_ms"]),
    ("WebSocket messages lost", "messages", lambda r: r[1]["messages_lost"]),
)


def stats(values: Sequence[float]) -> dict[str, float]:
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2),
            "max": round(max(values), 2)}  # fmt: skip


def load_rows(
    case: str, baseline: str, ours: Sequence[Measured], raw: Sequence[Measured]
) -> list[dict[str, object]]:
    """One row per metric of a case measured under load: the medians, min/median/max of each
    side, and every run's request total, failures and client retries."""
    rows = []
    for metric, unit, pick in LOAD_METRICS:
        values, base = [float(pick(r)) for r in ours], [float(pick(r)) for r in raw]
        entry = row(case, metric, statistics.median(values), unit, baseline,
                    statistics.median(base) if base else 0.0, len(values))  # fmt: skip
        entry["value_runs"] = stats(values)
        for prefix, runs in (("", ours), ("baseline_", raw)):
            if not runs:
                continue
            if prefix:
                entry["baseline_runs"] = stats(base)
            entry[f"{prefix}requests"] = [r[1]["requests"] for r in runs]
            entry[f"{prefix}failed"] = [r[1]["failed"] for r in runs]
            entry[f"{prefix}retried"] = [r[1].get("retried", 0) for r in runs]
            if metric == "wall time" and any(r[1].get("phases") for r in runs):
                entry[f"{prefix}phases"] = [r[1].get("phases", {}) for r in runs]
            entry[f"{prefix}client_retries"] = "on (GETs, once)" if any(
                r[1].get("retry_closed") for r in runs) else "off"  # fmt: skip
        rows.append(entry)
        print(f"{case:45} {metric:24} ours {entry['value_runs']}  baseline "
              f"{entry.get('baseline_runs', '-')} {unit}")  # fmt: skip
    return rows


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def write(name: str, rows: list[dict[str, object]]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(rows, indent=2) + "\n")
    return path
