"""Env files and the variable schema.

`.env.example` is the schema: every variable the suite or the services read is documented there,
with a meta line that machines read::

    # The PostgreSQL superuser's password, used by the services, migrations and backups.
    # secret: generated | required: all | default: none
    POSTGRES_PASSWORD=

`secret` is `no`, `generated` (the suite can create it: at least 32 random bytes) or `external`
(issued by a third party: must be set and not a placeholder, strength is not ours to judge).
`required` is `all`, `-` or a comma list of environments. `default` is the code default, or `none`.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dotenv.parser import parse_stream

from deploysuite.core.errors import ConfigError

SecretKind = Literal["no", "generated", "external"]
KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
META_RE = re.compile(
    r"^#\s*secret:\s*(?P<secret>no|generated|external)\s*\|\s*required:\s*(?P<required>[^|]+?)"
    r"\s*\|\s*default:\s*(?P<default>.*?)\s*$"
)


@dataclass(frozen=True)
class VarSpec:
    """One documented variable."""

    name: str
    description: str
    secret: SecretKind
    required_in: frozenset[str] | Literal["all"]
    default: str | None
    line: int

    @property
    def is_secret(self) -> bool:
        return self.secret != "no"

    def required_for(self, env: str) -> bool:
        return self.required_in == "all" or env in self.required_in


@dataclass(frozen=True)
class Entry:
    """One assignment read from an env file, with where it came from."""

    key: str
    value: str
    path: Path
    line: int

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Malformed:
    path: Path
    line: int
    text: str
    reason: str

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class EnvFile:
    path: Path
    entries: tuple[Entry, ...]
    malformed: tuple[Malformed, ...]

    def as_dict(self) -> dict[str, Entry]:
        return {e.key: e for e in self.entries}


def parse_env_text(text: str, path: Path) -> EnvFile:
    """Parse dotenv text; bad lines are collected (with file:line), never raised."""
    entries: list[Entry] = []
    malformed: list[Malformed] = []
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        raw = binding.original.string.strip()
        if binding.error:
            malformed.append(Malformed(path, line, raw, "not KEY=VALUE"))
        elif binding.key is None:
            continue  # blank line or comment
        elif binding.value is None:
            malformed.append(Malformed(path, line, raw, "no '=' after the key"))
        elif not KEY_RE.match(binding.key):
            malformed.append(
                Malformed(path, line, raw, "keys are UPPER_SNAKE_CASE ([A-Z][A-Z0-9_]*)")
            )
        else:
            entries.append(Entry(binding.key, binding.value, path, line))
    return EnvFile(path, tuple(entries), tuple(malformed))


def read_env_file(path: Path, *, required: bool = False) -> EnvFile:
    """Read an env file; a missing optional file is empty, an unreadable one is a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError(
                f"env file {path} does not exist", f"git checkout -- {path}"
            ) from None
        return EnvFile(path, (), ())
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(
            f"cannot read env file {path}: {reason}", f"check its permissions: ls -l {path}"
        ) from None
    return parse_env_text(text, path)


def parse_schema(text: str, path: Path = Path(".env.example")) -> dict[str, VarSpec]:
    """Read the documented variables out of `.env.example`. A variable without a meta line is an
    error in the schema itself, reported with file:line."""
    specs: dict[str, VarSpec] = {}
    comments: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            comments = []
            continue
        if line.startswith("#"):
            comments.append(line)
            continue
        key = line.split("=", 1)[0].removeprefix("export ").strip()
        if "=" not in line or not KEY_RE.match(key):
            raise ConfigError(f"{path}:{number}: not a KEY=VALUE line", f"edit {path}")
        meta = next((m for m in map(META_RE.match, reversed(comments)) if m), None)
        if meta is None:
            raise ConfigError(
                f"{path}:{number}: {key} has no "
                "'# secret: ... | required: ... | default: ...' line",
                f"document {key} in {path}",
            )
        description = " ".join(
            c.lstrip("# ").strip()
            for c in comments
            if not META_RE.match(c) and not c.startswith("# ==")
        )
        required = meta["required"].strip()
        required_in: frozenset[str] | Literal["all"] = (
            "all"
            if required == "all"
            else frozenset()
            if required == "-"
            else frozenset(p.strip() for p in required.split(","))
        )
        default = meta["default"]
        if key in specs:
            raise ConfigError(f"{path}:{number}: {key} is documented twice", f"edit {path}")
        specs[key] = VarSpec(
            name=key,
            description=description,
            secret=meta["secret"],  # type: ignore[arg-type]
            required_in=required_in,
            default=None if default == "none" else default,
            line=number,
        )
        comments = []
    return specs
