"""Configuration: loaded once, layered, validated, frozen, with secrets marked.

Precedence, lowest first:
    1. code default            (the `default:` of each variable in .env.example)
    2. root .env               (a person's own values; git-ignored)
    3. environment files       (environments/<env>/config.env, then environments/<env>/secrets.env)
    4. service override        (services/<service>/env/<env>.env; only when a service is asked for)
    5. process environment     (only documented names are taken)
    6. CLI flag                (--set KEY=VALUE and task flags)
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from deploysuite import PROJECT_ROOT
from deploysuite.config.envfile import EnvFile, VarSpec, parse_schema, read_env_file
from deploysuite.core.errors import ConfigError
from deploysuite.core.masking import Masker

# A database name goes into SQL: a plain lowercase identifier, short enough that a restore's
# names beside it (<db>_pre_restore_YYYYMMDDHHMMSS, 27 more) fit PostgreSQL's 63 bytes.
DB_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,35}$")
DB_NAME_RULE = "lowercase letters, digits and _, starting with a letter or _, at most 36"


def is_db_name_key(key: str) -> bool:
    return key.endswith("_DB_NAME")


def bad_db_names(settings: Mapping[str, Setting]) -> list[Setting]:
    """The *_DB_NAME settings that are no plain database name."""
    return [
        s for key, s in sorted(settings.items())
        if is_db_name_key(key) and not DB_NAME_RE.match(s.value)
    ]  # fmt: skip


@dataclass(frozen=True)
class Setting:
    key: str
    value: str
    layer: str
    location: str
    secret: bool


@dataclass(frozen=True)
class Paths:
    """Where the configuration of one environment lives under a suite root."""

    root: Path
    env: str

    @property
    def schema(self) -> Path:
        return self.root / ".env.example"

    @property
    def root_env(self) -> Path:
        return self.root / ".env"

    @property
    def env_dir(self) -> Path:
        return self.root / "environments" / self.env

    @property
    def env_config(self) -> Path:
        return self.env_dir / "config.env"

    @property
    def env_secrets(self) -> Path:
        return self.env_dir / "secrets.env"

    def service_override(self, service: str) -> Path:
        return self.root / "services" / service / "env" / f"{self.env}.env"


@dataclass(frozen=True)
class Config:
    env: str
    root: Path
    service: str | None
    schema: Mapping[str, VarSpec]
    settings: Mapping[str, Setting]
    files: tuple[EnvFile, ...] = field(default=())

    def get(self, key: str, default: str | None = None) -> str | None:
        self._known(key)
        setting = self.settings.get(key)
        return setting.value if setting is not None and setting.value != "" else default

    def require(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            fix = (
                f"inv env.secrets --env={self.env}"
                if self.schema[key].secret == "generated"
                else f"set {key} in {Paths(self.root, self.env).env_config}"
            )
            raise ConfigError(f"{key} is not set for environment '{self.env}'", fix)
        return value

    def __getitem__(self, key: str) -> str:
        return self.require(key)

    def secret_values(self) -> list[str]:
        return [s.value for s in self.settings.values() if s.secret and s.value]

    def masker(self) -> Masker:
        return Masker(self.secret_values())

    def as_env(self) -> dict[str, str]:
        """Every resolved non-empty value, for a child process's environment."""
        return {k: s.value for k, s in self.settings.items() if s.value != ""}

    @property
    def paths(self) -> Paths:
        return Paths(self.root, self.env)

    def _known(self, key: str) -> None:
        if key not in self.schema:
            raise ConfigError(f"{key} is not documented in .env.example", f"add {key} there")


def for_service(
    config: Config, service: str, process_env: Mapping[str, str] | None = None
) -> Config:
    """The same environment, CLI overrides and root, with `service`'s override file applied."""
    cli = {k: s.value for k, s in config.settings.items() if s.layer == "cli"}
    return load_config(
        config.env, root=config.root, service=service, process_env=process_env, cli=cli
    )


def suite_root() -> Path:
    """The tree that holds .env.example and environments/ (SUITE_ROOT points tests elsewhere)."""
    return Path(os.environ.get("SUITE_ROOT") or PROJECT_ROOT)


def known_environments(root: Path) -> list[str]:
    base = root / "environments"
    return sorted(p.parent.name for p in base.glob("*/config.env")) if base.is_dir() else []


def closest(name: str, options: Iterable[str]) -> str | None:
    """The option a typo most likely meant: a unique prefix match ("prod"), else the nearest."""
    options = list(options)
    prefixed = [o for o in options if o.startswith(name)] if name else []
    if len(prefixed) == 1:
        return prefixed[0]
    matches = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return matches[0] if matches else None


def check_env_name(env: str, root: Path) -> None:
    envs = known_environments(root)
    if env not in envs:
        guess = closest(env, envs)
        fix = f"use --env={guess}" if guess else f"use one of: {', '.join(envs) or 'none found'}"
        raise ConfigError(
            f"unknown environment '{env}' (known: {', '.join(envs) or 'none'})",
            fix + f" or create environments/{env}/config.env",
        )


def load_schema(root: Path) -> dict[str, VarSpec]:
    path = root / ".env.example"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror}", "git checkout -- .env.example"
        ) from None
    return parse_schema(text, path)


def parse_cli_overrides(items: Iterable[str]) -> dict[str, str]:
    """`--set KEY=VALUE` flags to a dict."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r} is not KEY=VALUE", "write --set NAME=value")
        out[key.strip()] = value
    return out


def env_files(paths: Paths, service: str | None) -> list[tuple[str, EnvFile]]:
    """The env files of layers 2-4, in precedence order, each with its layer name."""
    files = [
        ("root .env", read_env_file(paths.root_env)),
        ("environment", read_env_file(paths.env_config, required=True)),
        ("environment", read_env_file(paths.env_secrets)),
    ]
    if service is not None:
        files.append(("service", read_env_file(paths.service_override(service))))
    return files


def load_config(
    env: str,
    *,
    root: Path | None = None,
    service: str | None = None,
    process_env: Mapping[str, str] | None = None,
    cli: Mapping[str, str] | None = None,
    strict: bool = True,
    with_files: bool = True,
) -> Config:
    """Resolve every documented variable for `env` (and `service`) through the six layers.

    strict: a malformed line or an unknown CLI key raises ConfigError (tasks); `env.check` loads
    with strict=False to list every problem at once. with_files=False keeps only the defaults and
    the process environment: a container (the backup service) gets its values from compose.
    """
    root = root or suite_root()
    if with_files:
        check_env_name(env, root)
    schema = load_schema(root)
    paths = Paths(root, env)
    process_env = os.environ if process_env is None else process_env
    cli = dict(cli or {})

    resolved: dict[str, Setting] = {}

    def put(key: str, value: str, layer: str, location: str) -> None:
        spec = schema.get(key)
        if spec is not None:
            resolved[key] = Setting(key, value, layer, location, spec.is_secret)

    for spec in schema.values():
        if spec.default is not None:
            put(spec.name, spec.default, "default", f".env.example:{spec.line}")

    files = env_files(paths, service) if with_files else []
    for layer, env_file in files:
        if strict and env_file.malformed:
            bad = env_file.malformed[0]
            raise ConfigError(
                f"{bad.location}: malformed line ({bad.reason})",
                f"fix that line, then run inv env.check --env={env}",
            )
        for entry in env_file.entries:
            put(entry.key, entry.value, layer, entry.location)

    for key in schema:
        if key in process_env:
            put(key, process_env[key], "process", "process environment")

    for key, value in cli.items():
        if key not in schema:
            guess = closest(key, schema)
            raise ConfigError(
                f"--set {key}: not a documented variable",
                f"did you mean {guess}?" if guess else "see .env.example",
            )
        put(key, value, "cli", "--set")

    bad = bad_db_names(resolved) if strict else []
    if bad:
        raise ConfigError(
            f"{bad[0].key}={bad[0].value!r} ({bad[0].location}) is not a database name: "
            f"{DB_NAME_RULE}",
            f"set {bad[0].key}, e.g. {schema[bad[0].key].default or 'app'}",
        )
    return Config(
        env=env,
        root=root,
        service=service,
        schema=MappingProxyType(schema),
        settings=MappingProxyType(resolved),
        files=tuple(f for _, f in files),
    )
