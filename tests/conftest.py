"""Shared fixtures: a scratch copy of the suite's configuration tree."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def suite_tree(tmp_path: Path) -> Path:
    """.env.example and environments/*/config.env copied to a scratch root (no secrets files)."""
    shutil.copy(REPO / ".env.example", tmp_path / ".env.example")
    for config in (REPO / "environments").glob("*/config.env"):
        target = tmp_path / "environments" / config.parent.name
        target.mkdir(parents=True)
        shutil.copy(config, target / "config.env")
    return tmp_path
