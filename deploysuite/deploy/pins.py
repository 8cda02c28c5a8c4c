"""Third-party images (PostgreSQL, Redis, RabbitMQ, nginx, ...) pinned by digest at release time.

The suite's own images are pinned when they are pushed; the others are named by tags that move
(`postgres:15-bookworm` is rebuilt upstream for every point release). A release resolves each
tag its compose services use to the digest the registry serves now, records it in the release
manifest and the release's .env, and the hosts pull by that digest: a rollback a month later
runs the very same bytes, and two hosts can never resolve one tag to two images.

Staging and production refuse a tag that cannot be resolved; other environments (local images
that no registry holds) keep it and say so.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml

from deploysuite.config.layers import Config, Setting
from deploysuite.config.session import Session
from deploysuite.core.errors import ConfigError
from deploysuite.engines.stack import COMPOSE_FILE, SERVICE_IMAGE_VARS, compose_profiles
from deploysuite.images.registry import registry_host

STRICT_ENVIRONMENTS = ("staging", "production")
IMAGE_VAR_RE = re.compile(r"^\$\{([A-Z0-9_]+)")

Resolver = Callable[[str, Mapping[str, str] | None], str]


def third_party_vars(compose_text: str, profiles: Sequence[str]) -> dict[str, str]:
    """Image variable -> the first compose service that uses it, for every service that runs
    under `profiles` (no profile, or one of them) and is not one of the suite's own images."""
    services = (yaml.safe_load(compose_text) or {}).get("services") or {}
    own = set(SERVICE_IMAGE_VARS.values())
    found: dict[str, str] = {}
    for name, service in services.items():
        wanted = service.get("profiles") or []
        if wanted and not set(wanted) & set(profiles):
            continue
        match = IMAGE_VAR_RE.match(str(service.get("image", "")))
        if match and match.group(1) not in own:
            found.setdefault(match.group(1), name)
    return found


def repository(ref: str) -> str:
    """`host:5000/a/b:tag` -> `host:5000/a/b` (a port is not a tag)."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[0] if ":" in last else name


def pinned_ref(ref: str, digest: str) -> str:
    return f"{repository(ref)}@{digest}"


def registry_digest(ref: str, auth: Mapping[str, str] | None) -> str:
    """The digest the registry serves for `ref` now (the engine asks it; nothing is pulled)."""
    import docker  # the engine's distribution endpoint: no CLI command reads a remote digest

    client = docker.from_env()
    try:
        data = client.images.get_registry_data(ref, auth_config=dict(auth) if auth else None)
        return str(data.id)
    finally:
        client.close()


def resolve(
    config: Config, compose_text: str, resolver: Resolver = registry_digest
) -> tuple[dict[str, str], dict[str, str]]:
    """(pinned: variable -> repo@sha256:..., kept: variable -> why its tag stays)."""
    user, password = config.get("REGISTRY_USERNAME"), config.get("REGISTRY_PASSWORD")
    own_host = registry_host(config.get("IMAGE_REPOSITORY") or "")
    pinned: dict[str, str] = {}
    kept: dict[str, str] = {}
    for var in sorted(third_party_vars(compose_text, compose_profiles(config))):
        ref = config.get(var)
        if not ref:
            continue
        if "@sha256:" in ref:
            pinned[var] = ref
            continue
        ours = bool(own_host) and ref.startswith(f"{own_host}/")  # the suite's registry login
        auth = {"username": user, "password": password} if ours and user and password else None
        try:
            pinned[var] = pinned_ref(ref, resolver(ref, auth))
        except Exception as exc:  # any failure to ask the registry: a clear line, never a trace
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            if config.env in STRICT_ENVIRONMENTS:
                raise ConfigError(
                    f"{var}={ref} could not be resolved to a digest: {reason}",
                    f"check that this machine's Docker engine reaches the registry of {ref}, "
                    f"or set {var}=REPOSITORY@sha256:DIGEST",
                ) from None
            kept[var] = reason
    return pinned, kept


def with_pins(config: Config, pinned: Mapping[str, str]) -> Config:
    """The same configuration with the pinned references in place of the tags."""
    settings: dict[str, Any] = dict(config.settings)
    for var, ref in pinned.items():
        settings[var] = Setting(var, ref, "pinned", "resolved at release time", False)
    return dataclasses.replace(config, settings=settings)


def pin_third_party(s: Session) -> tuple[Session, dict[str, str]]:
    """The session with every third-party image pinned by digest, and the pins; a tag that stays
    (local images no registry holds, outside staging and production) is one warning."""
    compose_text = (s.config.root / COMPOSE_FILE).read_text(encoding="utf-8")
    with s.events.step("pin third-party images by digest"):
        pinned, kept = resolve(s.config, compose_text)
        for var, ref in pinned.items():
            s.events.info(f"  {var}: {ref}")
        if kept:
            s.events.warn(
                f"kept by tag (no registry answered; {', '.join(STRICT_ENVIRONMENTS)} refuse "
                f"this): {', '.join(f'{v}={s.config.get(v)}' for v in kept)}"
            )
    return dataclasses.replace(s, config=with_pins(s.config, pinned)), pinned
