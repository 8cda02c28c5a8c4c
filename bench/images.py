"""Benchmark: service image size against a naive single-stage build of the same service, built
side by side in the same run, and the time of a no-op `inv images.build` against a raw cached
`docker build` of the same images.

    .venv/bin/python bench/images.py [--runs 5]

Writes bench/results/images.json. Needs the base images (inv images.bootstrap).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from common import REPO, median, row, stats, timed, write

sys.path.insert(0, str(REPO))
from deploysuite.images.build import images_file
from deploysuite.images.services import DOCKERFILE, SERVICES

PYTHON_IMAGE = "mysaaschat/python:bookworm"
BASES = {"PYTHON_IMAGE": PYTHON_IMAGE, "POSTGRES_IMAGE": "mysaaschat/postgres:bookworm"}
PYTHON_SERVICES = [s for s in SERVICES if s.dockerfile == DOCKERFILE]  # the naive one's kind


def size(ref: str) -> int:
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", ref],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(out.stdout.strip())


def inv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(REPO), *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip


def naive_build_argv(service, tag: str) -> list[str]:
    return [
        "docker", "build", "--file", str(REPO / "bench/naive-service.Dockerfile"),
        "--build-arg", f"PYTHON_IMAGE={PYTHON_IMAGE}", "--build-arg", f"SERVICE={service.name}",
        "--build-arg", f"PACKAGE={service.package}", "--tag", tag, str(REPO),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    inv("images.build")  # our images, built or reused
    built = json.loads(images_file(REPO, "mysaaschat").read_text())
    rows = []
    for service in PYTHON_SERVICES:
        naive = f"mysaaschat-bench/naive-{service.name}:latest"
        subprocess.run(naive_build_argv(service, naive), check=True, capture_output=True)
        ours, theirs = size(str(built[service.name]["ref"])), size(naive)
        rows.append(
            row(service.name, "image size", ours / 1e6, "MB", "naive single-stage build",
                theirs / 1e6, 1)
        )  # fmt: skip
        print(f"{service.name:13} {ours / 1e6:6.0f} MB vs naive {theirs / 1e6:6.0f} MB "
              f"({100 * (1 - ours / theirs):.0f}% smaller)")  # fmt: skip

    # No-op rebuild: every image already matches its source.
    ours_t = timed([sys.executable, "-m", "invoke", "-r", str(REPO), "images.build"], args.runs)
    raw = [
        "sh", "-c",
        " && ".join(
            f"docker build -q --file {s.dockerfile} --target runner "
            f"--build-arg {s.base}={BASES[s.base]} --build-arg SERVICE={s.name} "
            f"--build-arg PACKAGE={s.package} --build-arg PORT={s.port} . >/dev/null"
            for s in SERVICES
        ),
    ]  # fmt: skip
    raw_t = timed(["sh", "-c", f"cd {REPO} && {raw[2]}"], args.runs)
    entry = row("all services", "no-op rebuild wall time", median(ours_t), "s",
                "raw docker build of each image, warm layer cache", median(raw_t),
                args.runs)  # fmt: skip
    entry["value_runs"], entry["baseline_runs"] = stats(ours_t), stats(raw_t)
    rows.append(entry)
    print(f"no-op rebuild: inv images.build {median(ours_t):.2f} s, "
          f"raw cached docker build x{len(SERVICES)} {median(raw_t):.2f} s")  # fmt: skip
    print(write("images", rows))


if __name__ == "__main__":
    main()
