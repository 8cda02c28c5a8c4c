"""Image tasks: base images from Debian packages (bootstrap)."""

from __future__ import annotations

from invoke import Collection

from deploysuite.bootstrap import execute_bootstrap, image_sizes, read_labels
from deploysuite.cli import session, task
from deploysuite.errors import ConfigError
from deploysuite.images import ROOTFS_IMAGE, base_images, host_debian_mirror, plan_bootstrap


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


ns = Collection("images", bootstrap)
ns.configure({"images": {"parallel": 2}})
