"""Build the service images: wheels once, then each image built or, when an image of the same
source exists, only tagged. Results go to build/images/<repository>.json, for push and release
manifests."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from deploysuite.errors import SuiteError
from deploysuite.registry import PushResult
from deploysuite.runner import Command, Runner
from deploysuite.service_images import (
    SOURCE_LABEL,
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


def image_id(runner: Runner, ref: str) -> str | None:
    result = runner.run(
        Command(("docker", "image", "inspect", "--format", "{{.Id}}", ref), mutates=False),
        check=False,
    )
    return result.stdout.strip() if result.ok else None


def image_size(runner: Runner, ref: str) -> int:
    result = runner.run(
        Command(("docker", "image", "inspect", "--format", "{{.Size}}", ref), mutates=False),
        check=False,
    )
    return int(result.stdout.strip()) if result.ok and result.stdout.strip().isdigit() else 0


def image_with_source(runner: Runner, source: str, repository: str, service: str) -> str | None:
    """An image of this service's own repository built from the same source. Filtering on the
    reference too matters: images derived FROM ours inherit the label."""
    argv = (
        "docker",
        "images",
        "--quiet",
        "--no-trunc",
        "--filter",
        f"label={SOURCE_LABEL}={source}",
        "--filter",
        f"reference={repository.rstrip('/')}/{service}:*",
    )
    ids = runner.run(Command(argv, mutates=False)).stdout.split()
    return ids[0] if ids else None


def ensure_wheels(runner: Runner, root: Path) -> bool:
    """Wheels of services/requirements.txt in build/wheels; False when they were up to date."""
    stamp = root / WHEELS_DIR / ".requirements-sha256"
    want = wheels_stamp(root)
    if stamp.exists() and stamp.read_text().strip() == want:
        return False
    with runner.events.step("wheels for services/requirements.txt"):
        runner.run(
            Command(wheels_argv(root, sys.executable), timeout=1200),
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
    python_image: str,
    base_id: str,
    force: bool = False,
) -> BuiltImage:
    source = source_hash(root, service, base_id)
    repository = ref.rsplit("/", 1)[0]
    existing = None if force else image_with_source(runner, source, repository, service.name)
    started = time.monotonic()
    content_ref = content_tag(ref, source)
    if existing:
        runner.run(Command(("docker", "tag", existing, ref)))
        runner.run(Command(("docker", "tag", existing, content_ref)))
        state = "reused"
    else:

        def progress(line: str) -> None:
            if line.startswith("Step "):
                runner.events.info(f"  [{service.name}] {line[:100]}")
            else:
                runner.events.detail(f"[{service.name}] {line}")

        runner.run(
            Command(
                build_argv(root, service, [ref, content_ref], python_image, source, no_cache=force),
                timeout=1800,
            ),
            on_line=progress,
            fix=f"see the build output above (docker/service/Dockerfile, services/{service.name})",
        )
        state = "would build" if runner.dry_run else "built"
    return BuiltImage(
        service=service.name,
        ref=ref,
        image_id=image_id(runner, ref) or "",
        source=source,
        state=state,
        size=image_size(runner, ref),
        seconds=time.monotonic() - started,
        content_ref=content_ref,
    )


def content_tag(ref: str, source: str) -> str:
    return ref.rsplit(":", 1)[0] + ":src-" + source[:16]


def build_services(
    runner: Runner,
    root: Path,
    services: Sequence[ServiceImage],
    repository: str,
    tag: str,
    python_image: str,
    parallel: int = 2,
    force: bool = False,
) -> list[BuiltImage]:
    base_id = image_id(runner, python_image)
    if base_id is None:
        raise SuiteError(
            f"base image {python_image} is not on this engine",
            "inv images.bootstrap (or set PYTHON_IMAGE to an image the engine can pull)",
        )
    ensure_wheels(runner, root)
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = [
            pool.submit(
                build_one,
                runner,
                root,
                service,
                image_ref(repository, service.name, tag),
                python_image,
                base_id,
                force,
            )
            for service in services
        ]
        results = [f.result() for f in futures]
    if not runner.dry_run:
        write_images_file(images_file(root, repository), results)
    return results


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
