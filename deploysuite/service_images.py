"""Service images: what to build, how it is tagged, and whether an image for the same source
already exists (then it is tagged, not rebuilt)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from deploysuite import commands
from deploysuite.images import hash_tree

SOURCE_LABEL = "org.mysaaschat.source"
DOCKERFILE = Path("docker/service/Dockerfile")
WHEELS_DIR = Path("build/wheels")


@dataclass(frozen=True)
class ServiceImage:
    name: str  # folder under services/
    package: str  # python -m <package>
    port: int


SERVICES = (
    ServiceImage("auth", "auth_service", 8000),
    ServiceImage("chat", "chat_service", 8000),
    ServiceImage("billing", "billing_service", 8000),
    ServiceImage("analytics", "analytics_service", 8000),
    ServiceImage("orchestrator", "orchestrator_service", 8000),
    ServiceImage("email-worker", "email_worker", 8000),
    ServiceImage("mailsink", "mailsink", 8025),
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
    python_image: str,
    source: str,
    no_cache: bool = False,
) -> commands.Argv:
    return commands.docker_build(
        root,
        tags,
        dockerfile=root / DOCKERFILE,
        target="runner",
        build_args={
            "PYTHON_IMAGE": python_image,
            "SERVICE": service.name,
            "PACKAGE": service.package,
            "PORT": str(service.port),
        },
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
        "--requirement",
        str(root / "services" / "requirements.txt"),
    )


def wheels_stamp(root: Path) -> str:
    return hashlib.sha256((root / "services" / "requirements.txt").read_bytes()).hexdigest()
