"""The suite's own metrics: when each environment was last deployed (per outcome) and last
rolled back, as a file for node-exporter's textfile collector. The DeployRolledBack alert reads
them; a deploy tells Prometheus what it did without a push gateway.

`deploy_metrics` is pure: the file's new text from its previous text and one deploy's outcome.
"""

from __future__ import annotations

import re

METRICS_FILE = "deploysuite.prom"
ROLLBACK_OUTCOMES = ("rolled back", "rolled back to")
_SAMPLE = re.compile(r"^(deploysuite_last_\w+)\{([^}]*)\}\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
HELP = {
    "deploysuite_last_deploy_timestamp_seconds": "When the environment's last deploy or "
    "rollback of each outcome ended (unix seconds).",
    "deploysuite_last_rollback_timestamp_seconds": "When the environment was last rolled back, "
    "by the suite after a failed deploy or by inv rollback (unix seconds).",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape(value: str) -> str:
    return value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def deploy_metrics(previous: str, env: str, outcome: str, now: float) -> str:
    """The textfile after one deploy or rollback of `env` ended with `outcome` at `now`; the
    other environments' and outcomes' samples are kept (a malformed line is dropped)."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
    for line in previous.splitlines():
        match = _SAMPLE.match(line.strip())
        if match and match.group(1) in HELP:
            labels = tuple(sorted((k, _unescape(v)) for k, v in _LABEL.findall(match.group(2))))
            samples[(match.group(1), labels)] = match.group(3)
    stamp = f"{now:.3f}"
    samples[("deploysuite_last_deploy_timestamp_seconds",
             (("env", env), ("outcome", outcome)))] = stamp  # fmt: skip
    if outcome in ROLLBACK_OUTCOMES:
        samples[("deploysuite_last_rollback_timestamp_seconds", (("env", env),))] = stamp
    lines = []
    for name, text in HELP.items():
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
        for (metric, labels), value in sorted(samples.items()):
            if metric == name:
                inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{name}{{{inner}}} {value}")
    return "\n".join(lines) + "\n"


def write_deploy_metrics_script(folder: str) -> tuple[str, ...]:
    """argv that replaces folder/deploysuite.prom with stdin through a rename (the collector
    never reads half a file), readable by node-exporter's user."""
    script = ('set -e; mkdir -p -m 0755 "$1"; t=$(mktemp "$1/.deploysuite.XXXXXX"); '
              'cat > "$t"; chmod 0644 "$t"; mv "$t" "$1/' + METRICS_FILE + '"')  # fmt: skip
    return ("sh", "-c", script, "sh", folder)


def read_deploy_metrics_argv(folder: str) -> tuple[str, ...]:
    return ("sh", "-c", 'cat "$1/' + METRICS_FILE + '" 2>/dev/null || true', "sh", folder)
