"""Shared fixtures of the integration tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deploysuite.images import BASE_IMAGES, base_image_ref

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def base_images() -> dict[str, str]:
    """The base images as ``{name: image_ref}``, made by the suite's own `inv images.bootstrap`
    (a no-op when every image matches its recipe)."""
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(REPO), "images.bootstrap"],
        capture_output=True,
        text=True,
        timeout=2400,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"inv images.bootstrap failed:\n{result.stdout}\n{result.stderr[-4000:]}")
    return {name: base_image_ref(name) for name in BASE_IMAGES}
