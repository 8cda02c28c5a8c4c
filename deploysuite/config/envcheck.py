"""`env.check` and `env.secrets`: find every configuration problem at once; fill missing secrets.

Nothing here prints or returns a secret's value: problems name the variable and where it is set.
"""

from __future__ import annotations

import math
import re
import secrets
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from deploysuite.config.envfile import read_env_file
from deploysuite.config.layers import DB_NAME_RULE, Config, bad_db_names, closest
from deploysuite.core.files import write_private

Severity = Literal["error", "warning"]
MIN_SECRET_BITS = 256  # 32 random bytes
PLACEHOLDER_RE = re.compile(
    r"^(?:changeme|change[-_ ]?me|change[-_ ]?this|replace[-_ ]?me|todo|tbd|fixme|xxx+|"
    r"secret|password|example|your[-_].*|<.*>|\$\{.*\}|dummy|test|default)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Problem:
    severity: Severity
    key: str
    message: str
    location: str
    fix: str

    def as_row(self) -> dict[str, str]:
        return {
            "severity": self.severity,
            "variable": self.key,
            "where": self.location,
            "problem": self.message,
            "fix": self.fix,
        }


def is_placeholder(value: str) -> bool:
    return bool(PLACEHOLDER_RE.match(value.strip())) or "changeme" in value.lower()


def alphabet_size(value: str) -> int:
    """The smallest usual alphabet the value is drawn from (hex, base64url, printable)."""
    if re.fullmatch(r"[0-9a-f]+", value) or re.fullmatch(r"[0-9A-F]+", value):
        return 16
    if re.fullmatch(r"[A-Za-z0-9_\-+/=]+", value):
        return 64
    return 95


def shannon_bits_per_char(value: str) -> float:
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def estimated_bits(value: str) -> float:
    """Strength estimate: length x alphabet, cut down when the value repeats itself."""
    if not value:
        return 0.0
    per_char = math.log2(alphabet_size(value))
    # A random string's observed entropy per character is close to log2(alphabet) (a little
    # under for short strings); a low figure means repetition such as "aaaa..." or "abab...".
    if shannon_bits_per_char(value) < 0.75 * min(per_char, math.log2(len(value))):
        per_char = shannon_bits_per_char(value)
    return len(value) * per_char


def is_weak_secret(value: str) -> bool:
    return estimated_bits(value) < MIN_SECRET_BITS


def committed_files(config: Config) -> list[Path]:
    """Env files that live in git and must therefore hold no secret."""
    paths = config.paths
    files = [paths.env_config]
    if config.service:
        files.append(paths.service_override(config.service))
    return files


def check_config(config: Config) -> list[Problem]:
    """Every problem in one list: malformed lines, unknown keys, secrets in committed files,
    missing required values, placeholders, weak generated secrets."""
    problems: list[Problem] = []
    schema = config.schema
    env = config.env
    committed = set(committed_files(config))
    for env_file in config.files:
        for bad in env_file.malformed:
            problems.append(
                Problem(
                    "error",
                    "-",
                    f"malformed line ({bad.reason})",
                    bad.location,
                    "write it as KEY=value",
                )
            )
        for entry in env_file.entries:
            if entry.key not in schema:
                guess = closest(entry.key, schema)
                problems.append(
                    Problem(
                        "error",
                        entry.key,
                        "unknown variable" + (f"; did you mean {guess}?" if guess else ""),
                        entry.location,
                        f"rename it to {guess}"
                        if guess
                        else "remove it or document it in .env.example",
                    )
                )
            elif schema[entry.key].is_secret and entry.value and entry.path in committed:
                problems.append(
                    Problem(
                        "error",
                        entry.key,
                        "secret set in a file that is committed to git",
                        entry.location,
                        f"move it to {config.paths.env_secrets} (git-ignored)",
                    )
                )
    for setting in bad_db_names(config.settings):
        problems.append(
            Problem(
                "error",
                setting.key,
                f"not a database name ({DB_NAME_RULE})",
                setting.location,
                f"set {setting.key}, e.g. {schema[setting.key].default or 'app'}",
            )
        )
    for spec in schema.values():
        setting = config.settings.get(spec.name)
        value = setting.value if setting else ""
        where = setting.location if setting else "not set"
        if not value:
            if spec.required_for(env):
                home = config.paths.env_secrets if spec.is_secret else config.paths.env_config
                fix = (
                    f"inv env.secrets --env={env}"
                    if spec.secret == "generated"
                    else f"set it in {home}"
                )
                problems.append(Problem("error", spec.name, "required but not set", where, fix))
            continue
        if is_placeholder(value):
            problems.append(
                Problem(
                    "error",
                    spec.name,
                    "holds a placeholder value",
                    where,
                    f"inv env.secrets --env={env}"
                    if spec.secret == "generated"
                    else "set the real value",
                )
            )
        elif spec.secret == "generated" and is_weak_secret(value):
            problems.append(
                Problem(
                    "error",
                    spec.name,
                    f"weak secret (about {estimated_bits(value):.0f} bits; needs {MIN_SECRET_BITS}"
                    " = 32 random bytes)",
                    where,
                    f"delete the line, then inv env.secrets --env={env}",
                )
            )
    return problems


def missing_generated_secrets(config: Config) -> list[str]:
    return [
        spec.name
        for spec in config.schema.values()
        if spec.secret == "generated" and not config.get(spec.name)
    ]


def new_secret() -> str:
    """32 random bytes, URL-safe base64 (43 characters): safe in URLs, DSNs and env files."""
    return secrets.token_urlsafe(32)


def write_secrets(path: Path, names: list[str]) -> list[str]:
    """Append a fresh value for each name not already in `path`; never overwrite; mode 0600.

    Written through a temporary file and a rename, so a crash leaves the old file intact.
    Returns the names that were written.
    """
    existing = read_env_file(path)
    filled = {e.key for e in existing.entries if e.value}
    todo = [n for n in names if n not in filled]
    if not todo:
        return []
    values = {name: new_secret() for name in todo}
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    # An empty `NAME=` line holds no value: fill it in place rather than adding a second line.
    for entry in existing.entries:
        if not entry.value and entry.key in values:
            lines[entry.line - 1] = f"{entry.key}={values.pop(entry.key)}"
    if not lines:
        lines.append("# Secrets of this environment. Git-ignored; written by inv env.secrets.")
    lines += [f"{name}={value}" for name, value in values.items()]
    write_private(path, "\n".join(lines) + "\n")
    return todo
