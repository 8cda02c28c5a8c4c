"""Env files that hold secrets never enter git; the committed ones stay visible."""

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECRET_FILES = [
    ".env",
    ".env.local",
    ".env.production",
    "environments/local/secrets.env",
    "environments/production/secrets.env",
    "environments/staging/secrets.env",
    "services/chat/.env",
    "services/chat/.env.production",
    "services/auth/prod.secrets.env",
]
COMMITTED_FILES = [
    ".env.example",
    "environments/production/config.env",
    "services/chat/.env.production.example",
    "services/chat/env/production.env",
]


def ignored(path: str) -> bool:
    result = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "--no-index", "-q", path], check=False
    )
    assert result.returncode in (0, 1), "git check-ignore failed"
    return result.returncode == 0


@pytest.mark.parametrize("path", SECRET_FILES)
def test_secret_env_files_are_ignored(path: str):
    assert ignored(path)


@pytest.mark.parametrize("path", COMMITTED_FILES)
def test_documentation_and_settings_are_not_ignored(path: str):
    assert not ignored(path)


def test_no_secret_env_file_is_tracked():
    tracked = subprocess.run(
        ["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert not [p for p in tracked if p.endswith("secrets.env") or p.split("/")[-1] == ".env"]
