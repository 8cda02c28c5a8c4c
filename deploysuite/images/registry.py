"""Pushing to an image registry with the Docker SDK.

Credentials travel only in the API request's auth header: never on a command line, never in
~/.docker/config.json, never in a log line (the runner's masker also knows the password).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deploysuite.core.errors import EngineUnavailable, SuiteError
from deploysuite.core.runner import Runner


class RegistryError(SuiteError):
    exit_code = 6


def registry_host(repository: str) -> str | None:
    """The registry part of a repository (`127.0.0.1:5000/x` -> `127.0.0.1:5000`), or None for
    Docker Hub style names (`mysaaschat`)."""
    first, sep, _ = repository.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


@dataclass(frozen=True)
class PushResult:
    ref: str
    digest: str
    size: int

    @property
    def pinned(self) -> str:
        """repository@digest: what a release manifest deploys."""
        return self.ref.rsplit(":", 1)[0] + "@" + self.digest


def parse_push_stream(
    ref: str, events: Iterable[Mapping[str, Any]], on_progress: Callable[[str], None]
) -> PushResult:
    """Read the engine's push progress; an `error` event or a missing digest is a failure."""
    digest, size = "", 0
    for event in events:
        if "error" in event:
            raise push_error(ref, str(event.get("error")))
        aux = event.get("aux")
        if isinstance(aux, Mapping) and aux.get("Digest"):
            digest, size = str(aux["Digest"]), int(aux.get("Size") or 0)
        status = event.get("status")
        if status and event.get("id") and status in ("Pushed", "Layer already exists"):
            on_progress(f"{event['id']}: {status}")
    if not digest:
        raise RegistryError(f"push of {ref} ended without a digest", "rerun inv images.push")
    return PushResult(ref, digest, size)


def push_error(ref: str, message: str) -> RegistryError:
    host = registry_host(ref) or "docker.io"
    lowered = message.lower()
    if "unauthorized" in lowered or "authentication required" in lowered or "denied" in lowered:
        return RegistryError(
            f"registry {host} refused the credentials while pushing {ref}",
            "check REGISTRY_USERNAME and REGISTRY_PASSWORD (inv env.check), then inv images.push",
        )
    if "connection refused" in lowered or "no such host" in lowered or "timeout" in lowered:
        return RegistryError(
            f"registry {host} is not reachable: {message}", f"check that {host} is up and reachable"
        )
    return RegistryError(f"push of {ref} failed: {message}", "rerun with --verbose")


def push(
    client: Any,
    ref: str,
    auth: Mapping[str, str] | None,
    on_progress: Callable[[str], None],
) -> PushResult:
    repository, _, tag = ref.rpartition(":")
    try:
        stream = client.api.push(
            repository, tag=tag, stream=True, decode=True, auth_config=dict(auth) if auth else None
        )
        return parse_push_stream(ref, stream, on_progress)
    except RegistryError:
        raise
    except Exception as exc:  # the SDK raises requests and docker errors alike
        raise push_error(ref, str(exc)) from None


def docker_client() -> Any:
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception:
        raise EngineUnavailable(
            "the Docker engine does not answer", "start it: ./scripts/quickstart"
        ) from None
    return client


def push_all(
    runner: Runner, refs: Sequence[str], auth: Mapping[str, str] | None
) -> list[PushResult]:
    """Push each image; under --dry-run only say what would be pushed."""
    if runner.dry_run:
        for ref in refs:
            runner.events.command(f"[local] push {ref} (Docker API; auth in the header)", run=False)
        return []
    if auth and auth.get("password"):
        runner.masker.add(auth["password"])
    client = docker_client()
    results = []
    for ref in refs:
        with runner.events.step(f"push {ref}"):
            results.append(push(client, ref, auth, runner.events.detail))
    return results


def login_argv(docker_config: str, user: str, host: str) -> tuple[str, ...]:
    """The password comes on stdin; the login lands in `docker_config`, not in ~/.docker."""
    return ("docker", "--config", docker_config, "login", "--username", user,
            "--password-stdin", host)  # fmt: skip
