"""Service images: what to build, how it is tagged, and whether an image for the same source
already exists (then it is tagged, not rebuilt)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from deploysuite.core import commands
from deploysuite.images.recipes import hash_tree

SOURCE_LABEL = "org.mysaaschat.source"
DOCKERFILE = Path("docker/service/Dockerfile")
BACKUP_DOCKERFILE = Path("docker/backup/Dockerfile")
WHEELS_DIR = Path("build/wheels")
REQUIREMENTS = (Path("services/requirements.txt"), Path("docker/backup/requirements.txt"))


@dataclass(frozen=True)
class ServiceImage:
    name: str  # folder under services/ (or the suite's own image: backup)
    package: str  # python -m <package>
    port: int
    dockerfile: Path = DOCKERFILE
    base: str = "PYTHON_IMAGE"  # the variable (and build argument) naming the base image


SERVICES = (
    ServiceImage("auth", "auth_service", 8000),
    ServiceImage("chat", "chat_service", 8000),
    ServiceImage("billing", "billing_service", 8000),
    ServiceImage("analytics", "analytics_service", 8000),
    ServiceImage("orchestrator", "orchestrator_service", 8000),
    ServiceImage("email-worker", "email_worker", 8000),
    ServiceImage("mailsink", "mailsink", 8025),
    # the backup service: the suite's own agent on the stack's PostgreSQL image (its pg_dump)
    ServiceImage("backup", "deploysuite.backup.agent", 0, BACKUP_DOCKERFILE, "POSTGRES_IMAGE"),
)


def find_service(name: str) -> ServiceImage | None:
    return next((s for s in SERVICES if s.name == name), None)


def image_ref(repository: str, service: str, tag: str) -> str:
    return f"{repository.rstrip('/')}/{service}:{tag}"


def version_tag(sha: str, dirty: bool) -> str:
    """The git SHA (12 characters), marked when the tree has uncommitted changes."""
    return sha[:12] + ("-dirty" if dirty else "")


def source_hash(root: Path, service: ServiceImage, base_image_id: str) -> str:
    """Everything that goes into the image: code, library, pinned requirements, recipe, base."""
    if service.dockerfile == BACKUP_DOCKERFILE:
        parts = [
            f"service={service.name}:{service.package}",
            f"base={base_image_id}",
            "code=" + hash_tree(root / "deploysuite", not_in_image),
            "schema=" + hashlib.sha256((root / ".env.example").read_bytes()).hexdigest(),
            "recipe=" + hash_tree(root / "docker" / "backup"),
        ]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()
    parts = [
        f"service={service.name}:{service.package}:{service.port}",
        f"base={base_image_id}",
        "code=" + hash_tree(root / "services" / service.name, not_in_image),
        "lib=" + hash_tree(root / "services" / "lib" / "saaschat", not_in_image),
        "req=" + hashlib.sha256((root / "services" / "requirements.txt").read_bytes()).hexdigest(),
        "dockerfile=" + hash_tree(root / "docker" / "service"),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def not_in_image(rel: Path) -> bool:
    """Files of a service folder that the image never contains (see .dockerignore)."""
    return (
        rel.parts[0] in ("tests", "env")
        or "__pycache__" in rel.parts
        or rel.suffix in (".pyc", ".env")
        or rel.name.startswith(".env")
    )


def build_argv(
    root: Path,
    service: ServiceImage,
    tags: list[str],
    base_image: str,
    source: str,
    no_cache: bool = False,
) -> commands.Argv:
    args = {service.base: base_image}
    if service.dockerfile == DOCKERFILE:
        args.update(SERVICE=service.name, PACKAGE=service.package, PORT=str(service.port))
    return commands.docker_build(
        root,
        tags,
        dockerfile=root / service.dockerfile,
        target="runner",
        build_args=args,
        labels={SOURCE_LABEL: source},
        no_cache=no_cache,
    )


def wheels_argv(root: Path, python: str) -> commands.Argv:
    return (
        python,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--wheel-dir",
        str(root / WHEELS_DIR),
        *(arg for req in REQUIREMENTS for arg in ("--requirement", str(root / req))),
    )


def wheels_stamp(root: Path) -> str:
    return hashlib.sha256(b"".join((root / req).read_bytes() for req in REQUIREMENTS)).hexdigest()
