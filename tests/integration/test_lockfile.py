"""requirements/deploy.lock installs the way the jobs that hold secrets install it: in a throwaway
venv, every requirement from the configured package index with its hash checked, then the suite
alone (no dependencies, no build isolation); `pip check` finds nothing missing and the suite's
task list loads. A file whose hash does not match is refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "deploy.lock"
STEP_TIMEOUT = 600  # seconds for one pip command


def configured_index() -> str:
    """The index pip uses here: PIP_INDEX_URL, pip's configuration, else PyPI."""
    found = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    configured = found.stdout.strip() if found.returncode == 0 else ""
    return os.environ.get("PIP_INDEX_URL") or configured or "https://pypi.org/simple/"


def unreachable(index: str) -> str | None:
    """Why the index does not answer, or None when it does (any HTTP status is an answer)."""
    try:
        urllib.request.urlopen(index.rstrip("/") + "/pip/", timeout=20).close()
    except urllib.error.HTTPError:
        return None
    except (OSError, ValueError) as exc:
        return str(exc)
    return None


def pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "pip", *args],
        capture_output=True, text=True, timeout=STEP_TIMEOUT, check=False,
    )  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    index = configured_index()
    problem = unreachable(index)
    if problem:
        pytest.skip(f"the package index {index} does not answer ({problem})")
    where = tmp_path_factory.mktemp("lock-venv")
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    return where / "bin" / "python"


@pytest.mark.timeout(1800)
def test_the_lock_installs_with_hashes_checked_and_the_suite_runs_on_it(
    venv_python: Path, tmp_path: Path
):
    # the suite's sources, copied: the install writes its metadata next to them
    source = tmp_path / "suite"
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    shutil.copytree(
        REPO / "deploysuite", source / "deploysuite", ignore=shutil.ignore_patterns("__pycache__")
    )
    ok(pip(venv_python, "install", "--require-hashes", "-r", str(LOCK)))
    ok(pip(venv_python, "install", "--no-build-isolation", "--no-deps", "-e", str(source)))
    ok(pip(venv_python, "check"))
    # nothing but the lock and the suite: no test tool came along
    listed = pip(venv_python, "list", "--format=freeze")
    ok(listed)
    names = {line.split("==")[0].lower() for line in listed.stdout.splitlines() if "==" in line}
    assert not names & {"pytest", "ruff", "moto", "zizmor", "detect-secrets", "pip-audit"}
    # the repository's task list loads with only these packages
    tasks = subprocess.run(
        [str(venv_python), "-m", "invoke", "-r", str(REPO), "--list"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    assert tasks.returncode == 0, tasks.stderr[-3000:]
    assert "deploy" in tasks.stdout and "ci.ssh-key" in tasks.stdout


@pytest.mark.timeout(900)
def test_a_file_whose_hash_does_not_match_is_refused(venv_python: Path, tmp_path: Path):
    # the lock's first requirement, with a hash that no file has
    lines = LOCK.read_text(encoding="utf-8").splitlines()
    first = next(line for line in lines if "==" in line and not line.startswith(("#", " ")))
    tampered = tmp_path / "tampered.txt"
    tampered.write_text(f"{first.split()[0]} --hash=sha256:{'0' * 64}\n", encoding="utf-8")
    result = pip(
        venv_python, "install", "--require-hashes", "--no-deps", "--no-cache-dir",
        "--force-reinstall", "-r", str(tampered),
    )  # fmt: skip
    assert result.returncode != 0
    assert "DO NOT MATCH THE HASHES" in result.stderr, result.stderr[-3000:]
