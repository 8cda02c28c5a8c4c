"""Build the service images: wheels once, then each image built or, when an image of the same
source exists, only tagged. Results go to build/images/<repository>.json, for push and release
manifests."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from deploysuite.config.layers import Config
from deploysuite.core.errors import SuiteError
from deploysuite.core.runner import Command, Runner
from deploysuite.images.registry import PushResult
from deploysuite.images.services import (
    WHEELS_DIR,
    ServiceImage,
    build_argv,
    image_ref,
    source_hash,
    version_tag,
    wheels_argv,
    wheels_stamp,
)


def images_file(root: Path, repository: str) -> Path:
    """Where the images built for a repository are recorded (one file per repository, so a push
    to a test registry never changes what the local stack runs)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", repository.strip("/"))
    return root / "build" / "images" / f"{safe}.json"


@dataclass(frozen=True)
class BuiltImage:
    service: str
    ref: str
    image_id: str
    source: str
    state: str  # built, reused (tagged from an image of the same source), would build
    size: int
    seconds: float
    content_ref: str = ""  # repository/service:src-<source>: the same for the same content

    @property
    def deploy_ref(self) -> str:
        """What a stack runs: the content tag, so a new commit that leaves a service's image
        unchanged does not recreate its containers."""
        return self.content_ref or self.ref


def git_version(runner: Runner, root: Path) -> str:
    sha = runner.run(
        Command(("git", "-C", str(root), "rev-parse", "HEAD"), mutates=False),
        fix="run inside the repository's git checkout",
    ).stdout.strip()
    status = runner.run(
        Command(("git", "-C", str(root), "status", "--porcelain"), mutates=False)
    ).stdout
    return version_tag(sha, bool(status.strip()))


@dataclass(frozen=True)
class LocalImage:
    image_id: str
    size: int


SIZE_UNITS = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}


def parse_size(text: str) -> int:
    """docker's human sizes (`196MB`, `1.2GB`, `512kB`) to bytes."""
    match = re.fullmatch(r"([0-9.]+)\s*([kKMGT]?B)", text.strip())
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2)]) if match else 0


def parse_image_listing(text: str) -> dict[str, LocalImage]:
    """`docker images --format '{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}'` -> ref -> image."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and not parts[0].endswith(":<none>"):
            out[parts[0]] = LocalImage(parts[1], parse_size(parts[2]))
    return out


def with_tag(ref: str) -> str:
    """`name` -> `name:latest`, as the engine lists it; a registry port is not a tag."""
    return ref if ":" in ref.rsplit("/", 1)[-1] else f"{ref}:latest"


def list_images(runner: Runner, reference: str | None = None) -> dict[str, LocalImage]:
    """Every tagged image (of `reference`, a glob like repo/*:*) with one engine call."""
    argv = [
        "docker",
        "images",
        "--no-trunc",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}",
    ]
    if reference:
        argv += ["--filter", f"reference={reference}"]
    return parse_image_listing(runner.run(Command(tuple(argv), mutates=False)).stdout)


def ensure_wheels(runner: Runner, root: Path) -> bool:
    """Wheels of services/requirements.txt in build/wheels; False when they were up to date."""
    stamp = root / WHEELS_DIR / ".requirements-sha256"
    want = wheels_stamp(root)
    if stamp.exists() and stamp.read_text().strip() == want:
        return False
    with runner.events.step("wheels for services/requirements.txt"):
        runner.run(
            # a package built from source runs its own code: none of the deploy's secrets
            Command(wheels_argv(root, sys.executable), timeout=1200, inherit_env=False),
            fix="check services/requirements.txt and that the package index is reachable",
        )
        if not runner.dry_run:
            stamp.write_text(want + "\n")
    return True


def build_one(
    runner: Runner,
    root: Path,
    service: ServiceImage,
    ref: str,
    base_image: str,
    source: str,
    existing: dict[str, LocalImage],
    force: bool = False,
) -> tuple[str, float]:
    """Build the image, or tag the one of the same source; returns (state, seconds)."""
    content_ref = content_tag(ref, source)
    started = time.monotonic()
    if not force and content_ref in existing:
        if existing.get(ref) != existing[content_ref]:
            runner.run(Command(("docker", "tag", content_ref, ref)))
        return "reused", time.monotonic() - started

    runner.run(
        Command(
            build_argv(root, service, [ref, content_ref], base_image, source, no_cache=force),
            timeout=1800,
        ),
        on_line=runner.events.build_progress(service.name),
        fix=f"see the build output above ({service.dockerfile}, services/{service.name})",
    )
    return ("would build" if runner.dry_run else "built"), time.monotonic() - started


def content_tag(ref: str, source: str) -> str:
    return ref.rsplit(":", 1)[0] + ":src-" + source[:16]


def build_services(
    runner: Runner,
    root: Path,
    services: Sequence[ServiceImage],
    repository: str,
    tag: str,
    bases: Mapping[str, str],
    parallel: int = 2,
    force: bool = False,
) -> list[BuiltImage]:
    """`bases`: base image variable (PYTHON_IMAGE, POSTGRES_IMAGE) -> its reference."""
    base_ids = {var: base_image_id(runner, var, bases[var]) for var in {s.base for s in services}}
    ensure_wheels(runner, root)
    pattern = f"{repository.rstrip('/')}/*:*"
    existing = list_images(runner, pattern)
    refs = {service.name: image_ref(repository, service.name, tag) for service in services}
    sources = {s.name: source_hash(root, s, base_ids[s.base]) for s in services}
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = {
            service.name: pool.submit(
                build_one,
                runner,
                root,
                service,
                refs[service.name],
                bases[service.base],
                sources[service.name],
                existing,
                force,
            )
            for service in services
        }
        outcomes = {name: future.result() for name, future in futures.items()}
    after = list_images(runner, pattern)
    results = []
    for service in services:
        state, seconds = outcomes[service.name]
        ref = refs[service.name]
        image = after.get(ref, LocalImage("", 0))
        results.append(
            BuiltImage(
                service=service.name,
                ref=ref,
                image_id=image.image_id,
                source=sources[service.name],
                state=state,
                size=image.size,
                seconds=seconds,
                content_ref=content_tag(ref, sources[service.name]),
            )
        )
    if not runner.dry_run:
        write_images_file(images_file(root, repository), results)
    return results


def base_image_id(runner: Runner, var: str, ref: str) -> str:
    base = list_images(runner).get(with_tag(ref))
    if base is None and not ref.startswith("mysaaschat/"):
        # not one of the bootstrapped images: a registry may have it (python:3.11-slim-bookworm)
        runner.run(Command(("docker", "pull", ref), timeout=600), check=False)
        base = list_images(runner).get(with_tag(ref))
    if base is None:
        raise SuiteError(
            f"base image {ref} is not on this engine",
            f"inv images.bootstrap (or set {var} to an image the engine can pull)",
        )
    return base.image_id


def service_bases(config: Config) -> dict[str, str]:
    """The base images of the service images (the backup service's is PostgreSQL's)."""
    return {
        "PYTHON_IMAGE": config.require("PYTHON_IMAGE"),
        "POSTGRES_IMAGE": config.require("POSTGRES_IMAGE"),
    }


def write_images_file(path: Path, results: Sequence[BuiltImage]) -> None:
    current = read_images_file(path)
    current.update({r.service: asdict(r) for r in results})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")


def read_images_file(path: Path) -> dict[str, dict[str, object]]:
    return json.loads(path.read_text()) if path.exists() else {}


def record_digests(path: Path, results: Sequence[PushResult]) -> None:
    """Add each pushed image's digest (and repository@digest) to the images file."""
    built = read_images_file(path)
    by_ref = {r.ref: r for r in results}
    for entry in built.values():
        pushed = by_ref.get(str(entry["ref"]))
        if pushed:
            entry["digest"] = pushed.digest
            entry["pinned"] = pushed.pinned
    path.write_text(json.dumps(built, indent=2, sort_keys=True) + "\n")
