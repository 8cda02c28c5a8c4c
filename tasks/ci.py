"""CI tasks: the pipeline's stages (.github/workflows/pipeline.yml), each runnable from a laptop."""

from __future__ import annotations

import json as jsonlib
import os
import shlex
import sys
from pathlib import Path

from invoke import Collection

from deploysuite.ci import checks as ci
from deploysuite.ci import gates as cigates
from deploysuite.ci import summaries
from deploysuite.cli import task
from deploysuite.config.session import session
from deploysuite.core import notify
from deploysuite.core.errors import ChecksFailed, ConfigError, SuiteError
from deploysuite.core.files import write_private
from deploysuite.core.runner import Command
from deploysuite.deploy.lock import ci_run_url
from deploysuite.images.build import images_file, read_images_file

ROOT = Path(__file__).resolve().parents[1]


@task(
    help={
        "root": "Tree to check (default: this repository); tests point it at fixtures.",
        "nginx": "Check this already-rendered nginx folder (nginx.conf, conf.d/, snippets/) "
        "instead of rendering every environment's.",
    }
)
def quality(c, root="", nginx="", json=False, verbose=False):
    """Stage 1 gates: ruff, hadolint, gixy, compose config, yamllint, secrets, promtool.

    Every check runs (a failure does not stop the others); one table, non-zero if any failed."""
    s = session("local", json=json, verbose=verbose)
    tree = Path(root).resolve() if root else s.config.root
    inputs = cigates.QualityInputs(tree, Path(nginx).resolve() if nginx else None)
    results = cigates.run_quality(s.runner, inputs)
    failed = ci.failed_checks(results)
    s.events.result(
        [r.as_row() for r in results],
        ci.CHECK_COLUMNS,
        title=f"quality of {tree}: {len(results) - len(failed)} of {len(results)} checks ok",
        extra={"root": str(tree), "passed": not failed, "failed": failed},
    )
    if failed:
        raise ChecksFailed(f"quality checks failed: {', '.join(failed)}", "see the table above")


@task(
    iterable=["image", "set_"],
    help={
        "image": "Scan this image reference (repeatable); default: the service images that "
        "inv images.build recorded for the environment's IMAGE_REPOSITORY.",
        "audit_url": "Vulnerability service pip-audit would ask; probed first, and the audit is "
        "reported as skipped when it does not answer.",
        "audit_service": "pip-audit's --vulnerability-service: pypi or osv.",
    },
)
def scan(
    c, env="local", image=None, audit_url="https://pypi.org/pypi/pip/json",
    audit_service="pypi", json=False, verbose=False, set_=None,
):  # fmt: skip
    """Scan images: secrets in layers/env/history, non-root user, no pip or compiler, CVEs.

    Known-vulnerable Python packages are checked with pip-audit only when its vulnerability
    service answers; otherwise that row says it was skipped."""
    s = session(env, json=json, verbose=verbose, overrides=set_ or [])
    refs = list(image or [])
    if not refs:
        built = read_images_file(images_file(s.config.root, s.config.require("IMAGE_REPOSITORY")))
        refs = [str(entry["ref"]) for _, entry in sorted(built.items())]
    if not refs:
        raise ConfigError("no image to scan", f"inv images.build --env={env}, or --image REF")
    rows = cigates.scan_images(s.runner, refs, s.config.secret_values(), audit_url, audit_service)
    failed = [f"{r['image']}: {r['check']}" for r in rows if r["status"] == "failed"]
    s.events.result(
        rows,
        ci.SCAN_COLUMNS,
        title=f"scan of {len(refs)} image(s): {len(failed)} problem(s)",
        extra={"images": refs, "passed": not failed, "failed": failed},
    )
    if failed:
        raise ChecksFailed(f"image scan failed: {'; '.join(failed)}", "see the table above")


def pytest_extra(args: str) -> list[str]:
    return shlex.split(args) if args else []


@task(
    help={
        "service": "Run this service's own tests (services/<name>/tests; lib and mailsink "
        "count) instead of the suite's tests/unit: the pipeline's matrix entry.",
        "pytest_args": "Extra pytest arguments, one string split like a shell would.",
    }
)
def unit(c, service="", pytest_args="", verbose=False):
    """Unit tests: tests/unit, or one service's tests with --service (the CI matrix)."""
    s = session("local", verbose=verbose)
    root = s.config.root
    if service:
        dirs = ci.service_test_dirs(
            str(p.relative_to(root)) for p in (root / "services").glob("*/tests") if p.is_dir()
        )
        if service not in dirs:
            raise ConfigError(
                f"no tests for service '{service}'", "choose from " + ", ".join(sorted(dirs))
            )
        paths = [dirs[service]]
    else:
        paths = ["tests/unit"]
    argv = ci.pytest_argv(sys.executable, paths, pytest_extra(pytest_args))
    s.runner.run(Command(argv, cwd=str(root), mutates=False), on_line=print)


@task(help={"pytest_args": "Extra pytest arguments, one string split like a shell would."})
def integration(c, pytest_args="", verbose=False):
    """Integration tests (tests/integration): real engine, registry, S3, PostgreSQL, migrations."""
    s = session("local", verbose=verbose)
    argv = ci.pytest_argv(sys.executable, ["tests/integration"], pytest_extra(pytest_args))
    s.runner.run(Command(argv, cwd=str(s.config.root), timeout=3600), on_line=print)


@task(
    name="summary",
    help={
        "from_": "File holding a deploy's or rollback's --json output.",
        "out": 'Append the markdown to this file (in GitHub Actions: "$GITHUB_STEP_SUMMARY"); '
        "without it the markdown is printed.",
    },
)
def summary(c, from_="deploy.json", out=""):
    """Render a deploy's --json result as markdown for the CI run's summary page."""
    source = Path(from_)
    text = source.read_text(encoding="utf-8") if source.is_file() else ""
    markdown = summaries.deploy_summary_markdown(summaries.parse_json_document(text), from_)
    if not out:
        print(markdown, end="")
        return
    with open(out, "a", encoding="utf-8") as handle:
        handle.write(markdown)


@task(
    iterable=["set_"],
    help={
        "needs": "The jobs' results as JSON: the workflow passes ${{ toJSON(needs) }} through "
        "an environment variable.",
        "workflow": "Workflow name shown in the message.",
        "ref": "Branch or tag shown in the message.",
    },
)
def notify_(c, env="local", needs="{}", workflow="pipeline", ref="", set_=None):
    """Post the pipeline's outcome to the NOTIFY_WEBHOOK_URL webhook (Slack-compatible)."""
    s = session(env, overrides=set_ or [])
    try:
        results = summaries.job_results(jsonlib.loads(needs))
    except (jsonlib.JSONDecodeError, AttributeError):
        raise ConfigError(
            "--needs is not a JSON object of job results", "pass toJSON(needs)"
        ) from None
    text = summaries.pipeline_text(workflow, ref or "?", ci_run_url(os.environ), results)
    if not s.config.get("NOTIFY_WEBHOOK_URL"):
        s.events.info("NOTIFY_WEBHOOK_URL is not set: nothing sent")
        return
    sent = notify.send(s.config, s.events, s.config.masker(), text)
    s.events.info("notification sent" if sent else "notification not sent (see the warning)")


@task(
    name="ssh-key",
    help={
        "path": "Where to write the key (mode 0600); point DEPLOY_SSH_KEY at it.",
        "variable": "Environment variable that holds the key (a CI secret).",
    },
)
def ssh_key(c, path, variable="DEPLOY_SSH_PRIVATE_KEY"):
    """Write the deploy's SSH private key from a CI secret into a 0600 file (set-up step)."""
    value = os.environ.get(variable, "")
    if not value:
        raise ConfigError(f"{variable} is empty", f"set the {variable} secret of the environment")
    try:
        text = summaries.private_key_text(value)
    except ValueError as exc:
        raise ConfigError(f"{variable}: {exc}", "store the whole private key file") from None
    write_private(Path(path).expanduser(), text)
    print(f"wrote {path} (mode 0600)", file=sys.stderr)


notify_.__name__ = "notify"


@task(
    name="test-run",
    help={"record": "Copy the summary to bench/results/test-run.json and rewrite the README's "
                    "sentence from it."},
)  # fmt: skip
def test_run(c, record=False):
    """Show the last full test run's summary; with --record, make it the README's figure.

    ./scripts/test writes build/test-results/summary.json from pytest's JUnit report."""
    from deploysuite.ci.testrun import sentence, with_sentence

    source = ROOT / "build" / "test-results" / "summary.json"
    if not source.is_file():
        raise SuiteError(f"no {source.relative_to(ROOT)}: no full run on record here",
                         "./scripts/test (or .ci/run), then this again")  # fmt: skip
    run = jsonlib.loads(source.read_text())
    print(sentence(run))
    if record:
        (ROOT / "bench" / "results" / "test-run.json").write_text(
            jsonlib.dumps(run, indent=2) + "\n"
        )
        readme = ROOT / "README.md"
        readme.write_text(with_sentence(readme.read_text(), run))


ns = Collection("ci", quality, scan, unit, integration, summary, ssh_key, test_run)
ns.add_task(notify_, name="notify")
