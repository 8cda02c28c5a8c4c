"""Command builders: pure functions that return argv tuples and do nothing else.

Tested by exact value in tests/unit/test_commands.py; executed only by deploysuite.core.runner.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

Argv = tuple[str, ...]


def docker_server_version() -> Argv:
    return ("docker", "version", "--format", "{{.Server.Version}}")


def docker_image_label(image: str, label: str) -> Argv:
    """Prints the label's value, or fails when the image does not exist."""
    return (
        "docker",
        "image",
        "inspect",
        "--format",
        f'{{{{index .Config.Labels "{label}"}}}}',
        image,
    )


def debootstrap(suite: str, target: Path, mirror: str, variant: str = "minbase") -> Argv:
    return ("debootstrap", f"--variant={variant}", suite, str(target), mirror)


def clean_rootfs_caches(root: Path) -> Argv:
    return (
        "find",
        str(root / "var/lib/apt/lists"),
        str(root / "var/cache/apt"),
        "-mindepth",
        "1",
        "-delete",
    )


def tar_directory(path: Path) -> Argv:
    """A tar stream of the directory's contents on stdout (numeric owners keep uids as they are)."""
    return ("tar", "--numeric-owner", "-C", str(path), "-c", ".")


def labels_args(labels: Mapping[str, str], flag: str = "--label") -> list[str]:
    out: list[str] = []
    for key, value in sorted(labels.items()):
        out += [flag, f"{key}={value}"]
    return out


def prune_dangling_images(label: str) -> Argv:
    """Untagged images that carry the label and that no container uses."""
    return ("docker", "image", "prune", "--force", "--filter", f"label={label}")


def docker_import(image: str, labels: Mapping[str, str]) -> Argv:
    """Reads a root filesystem tar on stdin and makes it an image."""
    changes: list[str] = []
    for key, value in sorted(labels.items()):
        changes += ["--change", f"LABEL {key}={value}"]
    return ("docker", "import", *changes, "-", image)


def docker_build(
    context: Path,
    tags: Sequence[str],
    *,
    build_args: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    dockerfile: Path | None = None,
    target: str | None = None,
    no_cache: bool = False,
) -> Argv:
    argv: list[str] = ["docker", "build"]
    if no_cache:
        argv.append("--no-cache")
    for tag in tags:
        argv += ["--tag", tag]
    if dockerfile is not None:
        argv += ["--file", str(dockerfile)]
    if target is not None:
        argv += ["--target", target]
    for key, value in sorted((build_args or {}).items()):
        argv += ["--build-arg", f"{key}={value}"]
    argv += labels_args(labels or {})
    argv.append(str(context))
    return tuple(argv)


def compose(project: str, files: Sequence[Path], *args: str, profiles: Sequence[str] = ()) -> Argv:
    argv: list[str] = ["docker", "compose", "--project-name", project]
    for file in files:
        argv += ["--file", str(file)]
    for profile in profiles:
        argv += ["--profile", profile]
    return (*argv, *args)


def compose_up(
    project: str,
    files: Sequence[Path],
    *,
    services: Sequence[str] = (),
    wait_timeout: int = 300,
    profiles: Sequence[str] = (),
    no_deps: bool = False,
) -> Argv:
    return compose(
        project,
        files,
        "up",
        "--detach",
        "--wait",
        "--wait-timeout",
        str(wait_timeout),
        "--remove-orphans",
        *(["--no-deps"] if no_deps else []),
        *services,
        profiles=profiles,
    )


def compose_ps(project: str, files: Sequence[Path], profiles: Sequence[str] = ()) -> Argv:
    return compose(project, files, "ps", "--all", "--format", "json", profiles=profiles)


def compose_config_hashes(
    project: str, files: Sequence[Path], profiles: Sequence[str] = ()
) -> Argv:
    """`service hash` lines: the hash compose stamps on a container it creates from that config."""
    return compose(project, files, "config", "--hash", "*", profiles=profiles)


def compose_logs(
    project: str,
    files: Sequence[Path],
    services: Sequence[str] = (),
    *,
    follow: bool = False,
    tail: int = 100,
) -> Argv:
    args = ["logs", "--no-color", "--tail", str(tail)]
    if follow:
        args.append("--follow")
    return compose(project, files, *args, *services)


def chown_secrets(image: str, folder: str, owners: Mapping[str, str]) -> Argv:
    """Hand secret files (relative path -> "uid:gid") to the users that read them, from a
    throwaway container of `image`: the engine's root does what a deploy user without root
    cannot. No network, two capabilities (CHOWN, and DAC_READ_SEARCH to enter the deploy user's
    0700 folder), nothing else mounted."""
    script = " && ".join(f"chown {o} /s/{shlex.quote(p)}" for p, o in sorted(owners.items()))
    return (
        "docker", "run", "--rm", "--network", "none", "--user", "0:0", "--cap-drop", "ALL",
        "--cap-add", "CHOWN", "--cap-add", "DAC_READ_SEARCH", "--security-opt",
        "no-new-privileges:true", "--entrypoint", "sh",
        "-v", f"{folder}:/s", image, "-c", script or "true",
    )  # fmt: skip
