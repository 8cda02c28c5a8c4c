"""Execute a base-image bootstrap plan: root filesystem, then the images, two builds at a time."""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from deploysuite.core import commands
from deploysuite.core.errors import ResourceError, SuiteError
from deploysuite.core.runner import Command, Pipeline, Runner
from deploysuite.images.recipes import (
    MIN_FREE_BYTES,
    RECIPE_LABEL,
    ROOTFS_IMAGE,
    BaseImage,
    BootstrapPlan,
    free_bytes,
    rootfs_recipe,
)


def read_labels(runner: Runner, refs: list[str]) -> dict[str, str | None]:
    """Each image's recipe label; None when the image does not exist."""
    labels: dict[str, str | None] = {}
    for ref in refs:
        result = runner.run(
            Command(commands.docker_image_label(ref, RECIPE_LABEL), mutates=False), check=False
        )
        labels[ref] = result.stdout.strip() if result.ok else None
    return labels


def image_sizes(runner: Runner, refs: list[str]) -> dict[str, int]:
    sizes = {}
    for ref in refs:
        argv = ("docker", "image", "inspect", "--format", "{{.Size}}", ref)
        result = runner.run(Command(argv, mutates=False), check=False)
        sizes[ref] = int(result.stdout.strip()) if result.ok and result.stdout.strip() else 0
    return sizes


def ensure_disk_space(paths: list[Path], needed: int = MIN_FREE_BYTES) -> None:
    for path in paths:
        free = free_bytes(path)
        if free < needed:
            raise ResourceError(
                f"only {free / 1024**3:.1f} GiB free under {path}; the bootstrap needs "
                f"{needed / 1024**3:.0f} GiB",
                "free space (docker system prune) and rerun inv images.bootstrap",
            )


def make_rootfs(runner: Runner, workdir: Path, mirror: str) -> None:
    target = workdir / "rootfs-bookworm"
    mutating = Command(("rm", "-rf", str(target)))
    runner.run(mutating)  # a half-written rootfs from an interrupted run is never reused
    runner.run(
        Command(commands.debootstrap("bookworm", target, mirror), timeout=1800),
        fix="check the mirror (DEBIAN_MIRROR) and free space, then rerun inv images.bootstrap",
    )
    # debootstrap leaves ~80 MB of package lists and archives; no image needs them (each recipe
    # runs apt-get update first).
    runner.run(Command(commands.clean_rootfs_caches(target)))
    runner.run_pipeline(
        Pipeline(
            (
                Command(commands.tar_directory(target)),
                Command(commands.docker_import(ROOTFS_IMAGE, {RECIPE_LABEL: rootfs_recipe()})),
            )
        )
    )
    runner.run(Command(("rm", "-rf", str(target))))


def build_image(runner: Runner, image: BaseImage) -> float:
    started = time.monotonic()
    argv = commands.docker_build(
        image.context,
        [image.ref],
        build_args={"DEBIAN_IMAGE": ROOTFS_IMAGE},
        labels={RECIPE_LABEL: image.recipe},
    )
    runner.run(
        Command(argv, timeout=1800),
        on_line=runner.events.build_progress(image.name),
        fix=f"see the build output above, fix docker/base/{image.name}/Dockerfile",
    )
    return time.monotonic() - started


def execute_bootstrap(
    runner: Runner, plan: BootstrapPlan, workdir: Path, mirror: str | None, parallel: int = 2
) -> Mapping[str, float]:
    """Run the plan; returns seconds per built image name."""
    if plan.make_rootfs:
        if not mirror:
            raise SuiteError(
                "no Debian mirror found in /etc/apt sources",
                "set DEBIAN_MIRROR in .env (a Debian mirror URL)",
            )
        if not runner.dry_run:
            ensure_disk_space([workdir, Path("/var/lib/docker")])
            if shutil.which("debootstrap") is None:
                raise SuiteError("debootstrap is not installed", "apt-get install debootstrap")
        with runner.events.step(f"root filesystem {ROOTFS_IMAGE} (debootstrap)"):
            make_rootfs(runner, workdir, mirror)
    seconds: dict[str, float] = {}
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = {pool.submit(build_image, runner, image): image for image in plan.build}
        for image in plan.build:
            runner.events.info(f"▸ build {image.ref}")
        for future, image in futures.items():
            seconds[image.name] = future.result()
            runner.events.info(f"✓ build {image.ref} ({seconds[image.name]:.0f}s)")
    if plan.build:
        # The tags moved: drop the replaced versions no container uses any more.
        runner.run(Command(commands.prune_dangling_images(RECIPE_LABEL)), check=False)
    return seconds
