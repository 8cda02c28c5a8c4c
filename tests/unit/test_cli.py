"""The task tree: `inv --list` and `import tasks.<area>` both work; every task and flag has help."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from invoke import Collection, Context, Exit
from invoke.loader import FilesystemLoader

from deploysuite.cli import task
from deploysuite.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
AREAS = ("env", "images", "deploy", "nginx", "certs", "lock", "alerts", "timeline", "preflight")


def root_collection() -> Collection:
    module, _ = FilesystemLoader(start=str(REPO)).load("tasks")
    return Collection.from_module(module)


def all_tasks(collection: Collection, prefix: str = ""):
    for name, t in collection.tasks.items():
        yield prefix + name, t
    for name, sub in collection.collections.items():
        yield from all_tasks(sub, f"{prefix}{name}.")


def test_inv_list_shows_every_namespace():
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(REPO), "--list"],
        capture_output=True,
        text=True,
        check=True,
    )
    for name in (
        "env.check",
        "env.secrets",
        "env.show",
        "images.bootstrap",
        "deploy",
        "status",
        "logs",
    ):
        assert f"  {name} " in result.stdout


@pytest.mark.parametrize("area", AREAS)
def test_area_modules_import_as_a_package(area: str):
    module = importlib.import_module(f"tasks.{area}")
    assert isinstance(module.ns, Collection)


def test_every_task_has_a_summary_and_every_flag_has_help():
    for name, t in all_tasks(root_collection()):
        assert t.__doc__ and t.__doc__.strip().splitlines()[0].endswith("."), name
        args = t.get_arguments()
        undocumented = [a.name for a in args if not a.help]
        assert not undocumented, f"{name}: flags without help: {undocumented}"


def test_suite_errors_become_one_line_and_exit_code(capsys):
    @task
    def broken(c):
        """Fail."""
        raise ConfigError("bad thing", "do this")

    with pytest.raises(Exit) as info:
        broken(Context())
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: bad thing (fix: do this)\n"


def test_unreachable_engine_is_one_line_and_exit_3(tmp_path):
    env = {**__import__("os").environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    env.update(POSTGRES_PASSWORD="x" * 43, RABBITMQ_PASSWORD="y" * 43)
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(REPO), "deploy", "--env=local"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 3
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: the Docker engine does not answer")
    )


def test_a_remote_deploy_with_missing_secrets_stops_before_connecting():
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(REPO), "deploy", "--env=staging"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SUITE_ROOT": ""},
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "environment 'staging' has" in last and "inv env.check --env=staging" in last
    assert "connect to" not in result.stderr  # nothing was attempted on any host


def test_confirmation_needs_the_exact_word_or_yes():
    from deploysuite.cli import confirm
    from deploysuite.core.errors import SuiteError

    confirm("drop", "mysaaschat", yes=True, read=lambda prompt: "")
    confirm("drop", "mysaaschat", yes=False, read=lambda prompt: "mysaaschat\n")
    with pytest.raises(SuiteError, match="not confirmed"):
        confirm("drop", "mysaaschat", yes=False, read=lambda prompt: "y")
