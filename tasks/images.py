"""Image tasks: base images from Debian packages (bootstrap)."""

from __future__ import annotations

from invoke import Collection

from deploysuite.cli import task
from deploysuite.config.session import session
from deploysuite.core.errors import ConfigError
from deploysuite.engines.state import engine_version
from deploysuite.images import registry
from deploysuite.images.bootstrap import execute_bootstrap, image_sizes, read_labels
from deploysuite.images.build import (
    build_services,
    git_version,
    images_file,
    read_images_file,
    record_digests,
    service_bases,
)
from deploysuite.images.recipes import (
    ROOTFS_IMAGE,
    base_images,
    host_debian_mirror,
    plan_bootstrap,
)
from deploysuite.images.services import SERVICES, ServiceImage, find_service


@task(
    help={
        "only": "Build only these base images (comma list of python, postgres, redis, nginx, "
        "rabbitmq, prometheus).",
        "force": "Rebuild even when the recipe is unchanged.",
        "parallel": "How many images to build at once (default from config: images.parallel).",
    }
)
def bootstrap(
    c, env="local", only="", force=False, parallel=0, dry_run=False, json=False, verbose=False
):
    """Build the base images from Debian packages (skipped when image and recipe are unchanged)."""
    s = session(env, dry_run=dry_run, json=json, verbose=verbose)
    root = s.config.root
    images = base_images(root / "docker")
    if only:
        wanted = {n.strip() for n in only.split(",") if n.strip()}
        unknown = wanted - {i.name for i in images}
        if unknown:
            raise ConfigError(
                f"unknown base image(s): {', '.join(sorted(unknown))}",
                "choose from " + ", ".join(i.name for i in images),
            )
        images = [i for i in images if i.name in wanted]
    labels = read_labels(s.runner, [ROOTFS_IMAGE, *(i.ref for i in images)])
    plan = plan_bootstrap(images, labels, force=force)
    if plan.nothing_to_do:
        s.events.info("nothing to do: every base image matches its recipe")
    mirror = s.config.get("DEBIAN_MIRROR") or host_debian_mirror()
    seconds = execute_bootstrap(
        s.runner, plan, root / "build", mirror, parallel=parallel or c.config.images.parallel
    )
    sizes = image_sizes(s.runner, [i.ref for i in images])
    rows = [
        {
            "image": i.ref,
            "recipe": i.recipe[:12],
            "state": ("would build" if dry_run else "built") if i in plan.build else "cached",
            "size": f"{sizes.get(i.ref, 0) / 1e6:.0f} MB" if sizes.get(i.ref) else "-",
            "seconds": f"{seconds[i.name]:.0f}" if i.name in seconds else "-",
        }
        for i in images
    ]
    s.events.result(rows, ["image", "recipe", "state", "size", "seconds"], title="base images:")


def selected_services(service: str) -> list[ServiceImage]:
    if not service:
        return list(SERVICES)
    names = [n.strip() for n in service.split(",") if n.strip()]
    unknown = [n for n in names if find_service(n) is None]
    if unknown:
        raise ConfigError(
            f"unknown service(s): {', '.join(unknown)}",
            "choose from " + ", ".join(s.name for s in SERVICES),
        )
    return [s for s in SERVICES if s.name in names]


@task(
    iterable=["set_"],
    help={
        "service": "Only these services (comma list); default: all.",
        "tag": "Image tag; default: the git SHA, with -dirty when the tree has changes.",
        "push": "Push after building (same as running images.push next).",
        "force": "Build from scratch (no layer cache, no reuse of an image of the same source).",
        "parallel": "How many images to build at once (default from config: images.parallel).",
    },
)
def build(
    c,
    env="local",
    service="",
    tag="",
    push=False,
    force=False,
    parallel=0,
    dry_run=False,
    json=False,
    verbose=False,
    set_=None,
):
    """Build the service images (only what changed), tagged with the git SHA; table of results."""
    s = session(env, dry_run=dry_run, json=json, verbose=verbose, overrides=set_ or [])
    engine_version(s.runner)
    root = s.config.root
    tag = tag or git_version(s.runner, root)
    repository = s.config.require("IMAGE_REPOSITORY")
    results = build_services(
        s.runner,
        root,
        selected_services(service),
        repository,
        tag,
        service_bases(s.config),
        parallel=parallel or c.config.images.parallel,
        force=force,
    )
    rows = [
        {
            "service": r.service,
            "image": r.ref,
            "state": r.state,
            "size": f"{r.size / 1e6:.0f} MB" if r.size else "-",
            "seconds": f"{r.seconds:.1f}",
        }
        for r in results
    ]
    built = sum(r.state == "built" for r in results)
    s.events.result(
        rows,
        ["service", "image", "state", "size", "seconds"],
        title=f"service images, tag {tag} ({built} built, {len(results) - built} reused):",
        extra={"tag": tag},
    )
    if push:
        push_images(s, [r.ref for r in results])


@task(
    iterable=["set_"],
    help={"service": "Only these services (comma list); default: every built one."},
)
def push(c, env="local", service="", dry_run=False, json=False, verbose=False, set_=None):
    """Push the built images to the registry and record their digests for the release manifest."""
    s = session(env, dry_run=dry_run, json=json, verbose=verbose, overrides=set_ or [])
    built = read_images_file(images_file(s.config.root, s.config.require("IMAGE_REPOSITORY")))
    names = [x.name for x in selected_services(service)] if service else sorted(built)
    missing = [n for n in names if n not in built]
    if missing or not names:
        raise ConfigError(
            f"no built image recorded for: {', '.join(missing) or 'any service'}",
            f"inv images.build --env={env}",
        )
    push_images(s, [str(built[n]["ref"]) for n in names])


def push_images(s, refs: list[str]) -> None:
    username = s.config.get("REGISTRY_USERNAME")
    password = s.config.get("REGISTRY_PASSWORD")
    auth = {"username": username, "password": password} if username and password else None
    if not auth:
        s.events.warn("REGISTRY_USERNAME/REGISTRY_PASSWORD not set: pushing without credentials")
    results = registry.push_all(s.runner, refs, auth)
    if s.runner.dry_run:
        return
    path = images_file(s.config.root, s.config.require("IMAGE_REPOSITORY"))
    record_digests(path, results)
    s.events.result(
        [{"image": r.ref, "digest": r.digest} for r in results],
        ["image", "digest"],
        title=f"pushed; digests recorded in {path.relative_to(s.config.root)}:",
    )


ns = Collection("images", bootstrap, build, push)
ns.configure({"images": {"parallel": 2}})
