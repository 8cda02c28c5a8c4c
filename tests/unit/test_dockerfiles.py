"""Every Dockerfile of the product is hadolint-clean (the naive benchmark baseline is exempt)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted(REPO.glob("docker/**/Dockerfile"))


def test_the_product_has_its_dockerfiles():
    names = {p.parent.name for p in DOCKERFILES}
    bases = {"python", "postgres", "redis", "nginx", "rabbitmq", "prometheus", "alertmanager"}
    assert bases | {"service"} <= names


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint_clean(dockerfile: Path):
    # the venv's bin folder holds it even when the venv is not on PATH
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    assert hadolint, "hadolint is missing: ./scripts/test installs it with the test extras"
    result = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
