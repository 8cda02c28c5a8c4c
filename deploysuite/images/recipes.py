"""Base images built from Debian packages, for machines that can reach no image registry.

A recipe hash (the Dockerfile folder's bytes plus the root filesystem's recipe) is stamped on each
image as a label; an image whose label matches its recipe is not built again.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

BASE_IMAGES = (
    "python", "postgres", "redis", "nginx", "rabbitmq", "prometheus", "alertmanager", "exporters",
)  # fmt: skip
RECIPE_LABEL = "org.mysaaschat.recipe"
DEBIAN_SUITE = "bookworm"
DEBOOTSTRAP_VARIANT = "minbase"
ROOTFS_IMAGE = f"mysaaschat/debian:{DEBIAN_SUITE}"
# debootstrap writes about 200 MB, the import doubles it for a moment, the seven images take
# ~1.7 GB.
MIN_FREE_BYTES = 3 * 1024**3


def base_image_ref(name: str) -> str:
    return f"mysaaschat/{name}:{DEBIAN_SUITE}"


def hash_tree(path: Path, skip: Callable[[Path], bool] = lambda rel: False) -> str:
    """sha256 over every file's relative path, executable bit and bytes, in sorted order.

    skip(relative_path) leaves a file out (tests, caches: what never reaches an image).
    """
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path)
        if skip(rel):
            continue
        digest.update(rel.as_posix().encode() + b"\0")
        digest.update(b"x" if file.stat().st_mode & 0o111 else b"-")
        digest.update(file.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def rootfs_recipe() -> str:
    # The mirror is not part of the recipe: any mirror of the suite yields the same packages.
    return hashlib.sha256(f"debootstrap:{DEBIAN_SUITE}:{DEBOOTSTRAP_VARIANT}".encode()).hexdigest()


@dataclass(frozen=True)
class BaseImage:
    name: str
    ref: str
    context: Path
    recipe: str


def base_images(docker_dir: Path, names: tuple[str, ...] = BASE_IMAGES) -> list[BaseImage]:
    rootfs = rootfs_recipe()
    out = []
    for name in names:
        context = docker_dir / "base" / name
        recipe = hashlib.sha256(f"{rootfs}:{hash_tree(context)}".encode()).hexdigest()
        out.append(BaseImage(name, base_image_ref(name), context, recipe))
    return out


@dataclass(frozen=True)
class BootstrapPlan:
    make_rootfs: bool
    build: tuple[BaseImage, ...]
    cached: tuple[BaseImage, ...]

    @property
    def nothing_to_do(self) -> bool:
        return not self.make_rootfs and not self.build


def plan_bootstrap(
    images: list[BaseImage], labels: Mapping[str, str | None], *, force: bool = False
) -> BootstrapPlan:
    """Pure: which images to build, given each existing image's recipe label (None: absent)."""
    build = tuple(i for i in images if force or labels.get(i.ref) != i.recipe)
    cached = tuple(i for i in images if i not in build)
    make_rootfs = bool(build) and (force or labels.get(ROOTFS_IMAGE) != rootfs_recipe())
    return BootstrapPlan(make_rootfs, build, cached)


def mirror_from_apt_sources(text: str, suite: str = DEBIAN_SUITE) -> str | None:
    """The main Debian mirror named in apt's sources (deb822 or one-line format)."""
    for block in re.split(r"\n\s*\n", text):
        fields = dict(
            (k.strip().lower(), v.strip())
            for k, _, v in (line.partition(":") for line in block.splitlines())
            if not k.strip().startswith("#") and v
        )
        if suite in fields.get("suites", "").split() and "deb" in fields.get("types", "").split():
            uri = fields.get("uris", "").split()
            if uri and "security" not in uri[0]:
                return uri[0]
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "deb":
            uri_index = 2 if parts[1].startswith("[") else 1
            if len(parts) > uri_index + 1 and parts[uri_index + 1] == suite:
                return parts[uri_index]
    return None


def host_debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str | None:
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.sources"))]
    files += sorted((apt_dir / "sources.list.d").glob("*.list"))
    for file in files:
        try:
            mirror = mirror_from_apt_sources(file.read_text(encoding="utf-8"))
        except OSError:
            continue
        if mirror:
            return mirror
    return None


def free_bytes(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free
