"""Releases on a host: the folder layout, the manifest, which releases to keep, the audit log.

Pure functions only; deploysuite.deploy.remote moves the bytes.

    $DEPLOY_ROOT/<env>/
        releases/<id>/            one folder per release (manifest.json, compose files, .env,
                                  nginx/, prometheus/); env files 0600
        current -> releases/<id>  the live release (replaced atomically)
        live/nginx, live/prometheus
                                  the configuration the running nginx and Prometheus mount,
                                  copied from the release that goes live
        tls/                      certificate, key and DH group of the edge
        audit.log                 one JSON line per deploy, rollback and failure
        deploy.lock/              the deploy lock (deploysuite.deploy.lock)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

RELEASE_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-z-]+$")
# ${X} is compose's; $${X} is the container shell's own, which no value of ours reaches
COMPOSE_VARIABLE_RE = re.compile(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)")
SECRET_FILES = (".env", "services.env.yml", "notify_webhook_url", "smtp_password")
SECRETS_FOLDER = "secrets/"  # the services' secret files (mode 0400, handed to their readers)


@dataclass(frozen=True)
class Layout:
    root: str  # $DEPLOY_ROOT/<env>

    @property
    def releases(self) -> str:
        return f"{self.root}/releases"

    def release(self, release_id: str) -> str:
        return f"{self.releases}/{release_id}"

    @property
    def current(self) -> str:
        return f"{self.root}/current"

    @property
    def live(self) -> str:
        return f"{self.root}/live"

    @property
    def tls(self) -> str:
        return f"{self.root}/tls"

    @property
    def audit_log(self) -> str:
        return f"{self.root}/audit.log"

    @property
    def metrics(self) -> str:
        """The suite's own metrics for node-exporter's textfile collector."""
        return f"{self.root}/metrics"


def layout(deploy_root: str, env: str) -> Layout:
    return Layout(f"{deploy_root.rstrip('/')}/{env}")


def new_release_id(now: dt.datetime, version: str) -> str:
    """Sortable by time, readable by commit: 20261125T201502Z-1666917."""
    return f"{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{version[:7].lower()}" + (
        "-dirty" if version.endswith("-dirty") else ""
    )


def compose_variables(compose_text: str) -> set[str]:
    """The variables the compose file interpolates: the only ones its .env needs."""
    return set(COMPOSE_VARIABLE_RE.findall(compose_text))


def dotenv(values: Mapping[str, str]) -> str:
    """A compose .env: single-quoted values are taken literally (no interpolation)."""
    lines = []
    for key, value in sorted(values.items()):
        if "'" in value or "\n" in value:
            raise ValueError(f"{key}: a value with a quote or newline cannot go into .env")
        lines.append(f"{key}='{value}'")
    return "\n".join(lines) + "\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_key(images: Mapping[str, str], files: Mapping[str, str]) -> str:
    """What a release consists of (images by digest, file hashes), not when or by whom: two
    releases with the same key deploy the same thing."""
    text = json.dumps({"images": dict(images), "files": dict(files)}, sort_keys=True)
    return sha256(text.encode())


def manifest(
    *,
    release_id: str,
    env: str,
    git_sha: str,
    images: Mapping[str, str],
    files: Mapping[str, bytes],
    deployed_by: str,
    ci_run_url: str,
    previous: str | None,
    started: dt.datetime,
    third_party: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """`images`: the suite's services pinned by digest; `third_party`: image variable -> the
    digest its tag resolved to when the release was made (deploy/pins.py)."""
    hashes = {name: sha256(data) for name, data in sorted(files.items())
              if not name.startswith(SECRETS_FOLDER)}  # fmt: skip
    secret = sorted((n, d) for n, d in files.items() if n.startswith(SECRETS_FOLDER))
    if secret:  # one digest of them all: no single secret's hash is written down
        hashes[SECRETS_FOLDER] = sha256(b"".join(n.encode() + b"\0" + d + b"\0" for n, d in secret))
    return {
        "release": release_id,
        "env": env,
        "git_sha": git_sha,
        "images": dict(sorted(images.items())),
        "third_party_images": dict(sorted((third_party or {}).items())),
        "files": hashes,
        "content": content_key(images, hashes),
        "schema_versions": {},
        "deployed_by": deployed_by,
        "ci_run_url": ci_run_url,
        "previous": previous,
        "started": started.astimezone(dt.UTC).isoformat(timespec="seconds"),
        "finished": None,
        "outcome": "uploaded",
    }


def finished(
    record: Mapping[str, object], outcome: str, now: dt.datetime, **extra: object
) -> dict[str, object]:
    return {
        **record,
        **extra,
        "outcome": outcome,
        "finished": now.astimezone(dt.UTC).isoformat(timespec="seconds"),
    }


def encode(record: Mapping[str, object]) -> bytes:
    """One line of JSON: manifests and audit records are read back line by line."""
    return (json.dumps(record, sort_keys=True) + "\n").encode()


def parse_lines(text: str) -> list[dict[str, object]]:
    """JSON objects, one per line; a torn or foreign line is skipped, not fatal."""
    out = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


def to_prune(release_ids: Iterable[str], keep: int, protected: Iterable[str | None]) -> list[str]:
    """The releases beyond the newest `keep`, never one in `protected` (current, rollback
    target)."""
    ordered = sorted((r for r in release_ids if RELEASE_ID_RE.match(r)), reverse=True)
    safe = {p for p in protected if p}
    return sorted(r for r in ordered[max(keep, 1) :] if r not in safe)


def deployable(releases: Sequence[Mapping[str, object]]) -> list[Mapping[str, object]]:
    """Releases that once went live, newest first: the ones a rollback may return to."""
    ok = [r for r in releases if r.get("outcome") == "deployed"]
    return sorted(ok, key=lambda r: str(r.get("release")), reverse=True)


def previous_release(
    releases: Sequence[Mapping[str, object]], current: str | None
) -> Mapping[str, object] | None:
    """The newest release that went live before the current one."""
    for item in deployable(releases):
        if current is None or str(item.get("release")) < current:
            return item
    return None


def resolve(releases: Sequence[Mapping[str, object]], wanted: str) -> Mapping[str, object]:
    """A release by id, unique id prefix, or git SHA prefix (at least 4 characters): no one
    should need to type a full hash at 3 a.m."""
    candidates = deployable(releases)
    exact = [r for r in candidates if r.get("release") == wanted]
    if exact:
        return exact[0]
    if len(wanted) < 4:
        raise LookupError(f"'{wanted}' is too short: give at least 4 characters")
    found = [
        r
        for r in candidates
        if str(r.get("release", "")).startswith(wanted)
        or str(r.get("git_sha", "")).startswith(wanted)
    ]
    if not found:
        known = ", ".join(str(r.get("release")) for r in candidates[:5]) or "none"
        raise LookupError(f"no deployable release matches '{wanted}' (newest: {known})")
    if len(found) > 1:
        names = ", ".join(str(r.get("release")) for r in found)
        raise LookupError(f"'{wanted}' matches {len(found)} releases: {names}")
    return found[0]
