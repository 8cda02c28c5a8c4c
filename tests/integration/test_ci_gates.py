"""The pipeline's gates on real tools: `inv ci.quality` and `inv ci.scan` fail on deliberately bad
fixtures (made here, in tmp_path: never in the product tree) and pass on the real repository
and the real service image."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_task

from deploysuite.config.layers import load_config
from deploysuite.edge.nginx import NginxSettings, render_nginx, write_rendered
from deploysuite.images.build import images_file, read_images_file

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# A credential-shaped value, assembled at run time so that the repository's own scan never
# finds it in this file.
FAKE_AWS_KEY = "AKIA" + "Q7ZX3MUTESTFIXTURE"[:16]
NO_AUDIT_SOURCE = "http://127.0.0.1:9/"  # nothing listens on the discard port


def inv(*args: str, timeout: int = 900) -> tuple[int, dict, str]:
    """Runs a task with --json; returns (exit code, its JSON document, stderr)."""
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(REPO), *args, "--json"],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    try:
        doc = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"inv {' '.join(args)} printed no JSON:\n{result.stdout}\n{result.stderr}")
    return result.returncode, doc, result.stderr


def rows_by_check(doc: dict) -> dict[str, dict]:
    return {row["check"]: row for row in doc["rows"]}


# --- ci.quality -----------------------------------------------------------------------------


def test_quality_passes_on_the_repository(base_images):
    # base_images: the promtool gates use the Prometheus image when promtool is not on PATH
    code, doc, stderr = inv("ci.quality")
    failed = [r for r in doc["rows"] if r["status"] == "failed"]
    assert code == 0 and doc["passed"], f"{failed}\n{stderr}"
    checks = {r["check"] for r in doc["rows"]}
    gates = {
        "ruff",
        "hadolint",
        "yamllint",
        "zizmor",
        "detect-secrets",
        "promtool",
        "promtool rules",
    }
    assert gates <= checks
    assert rows_by_check(doc)["promtool rules"]["status"] == "passed"
    for env in ("local", "staging", "production"):
        assert rows_by_check(doc)[f"gixy ({env})"]["status"] == "passed"
        assert rows_by_check(doc)[f"compose ({env})"]["status"] == "passed"


@pytest.fixture
def bad_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A tree with a sloppy Dockerfile and a committed fake key, and a rendered nginx
    configuration whose API location redefines add_header (dropping HSTS, CSP and the rest)."""
    root = tmp_path / "repo"
    (root / "docker" / "app").mkdir(parents=True)
    (root / "docker" / "app" / "Dockerfile").write_text(
        "FROM x:latest\nRUN apt-get update && apt-get install foo\n"
    )
    (root / "app").mkdir()
    (root / "app" / "settings.py").write_text(f'AWS_ACCESS_KEY_ID = "{FAKE_AWS_KEY}"\n')
    # a workflow that hands a secret to a job with no environment (zizmor: secrets-outside-env)
    (root / ".github" / "workflows").mkdir(parents=True)
    (root / ".github" / "workflows" / "notify.yml").write_text(
        "name: notify\non: push\npermissions: {}\njobs:\n  notify:\n"
        "    runs-on: ubuntu-24.04\n    steps:\n      - run: echo done\n"
        "        env:\n          HOOK: ${{ secrets.SLACK_WEBHOOK_URL }}\n"
    )
    files = render_nginx(NginxSettings(server_names=("localhost",)))
    old = "location /api/chat/ {\n        include /etc/nginx/snippets/security-headers.conf;"
    assert old in files["conf.d/20-servers.conf"]
    files["conf.d/20-servers.conf"] = files["conf.d/20-servers.conf"].replace(
        old, 'location /api/chat/ {\n        add_header Cache-Control "no-store" always;', 1
    )
    nginx = tmp_path / "nginx"
    write_rendered(files, nginx)
    return root, nginx


def test_quality_fails_on_each_bad_fixture_and_runs_every_check(bad_tree):
    root, nginx = bad_tree
    code, doc, _ = inv("ci.quality", "--root", str(root), "--nginx", str(nginx))
    assert code != 0 and not doc["passed"]
    rows = rows_by_check(doc)
    assert rows["hadolint"]["status"] == "failed"
    assert "DL3007" in rows["hadolint"]["detail"]  # FROM ...:latest
    gixy = rows[f"gixy ({nginx})"]
    assert gixy["status"] == "failed" and "add_header_redefinition" in gixy["detail"]
    assert rows["detect-secrets"]["status"] == "failed"
    assert "app/settings.py:1 AWS Access Key" in rows["detect-secrets"]["detail"]
    # the failures did not stop the other checks, and what could not run says why
    assert (
        rows["zizmor"]["status"] == "failed" and "secrets-outside-env" in rows["zizmor"]["detail"]
    )
    assert set(doc["failed"]) == {"hadolint", f"gixy ({nginx})", "detect-secrets", "zizmor"}
    assert rows["ruff"]["status"] == "passed"
    assert rows["compose"]["status"] == "skipped"
    assert rows["promtool"]["status"] == "skipped"
    assert rows["promtool rules"]["status"] == "skipped"


def test_quality_passes_the_same_tree_once_fixed(bad_tree, tmp_path: Path):
    root, _ = bad_tree
    (root / "docker" / "app" / "Dockerfile").write_text('FROM debian:12.5\nCMD ["true"]\n')
    (root / "app" / "settings.py").write_text('AWS_ACCESS_KEY_ID = ""\n')
    (root / ".github" / "workflows" / "notify.yml").unlink()  # the job that leaked a secret
    clean = tmp_path / "clean-nginx"
    write_rendered(render_nginx(NginxSettings(server_names=("localhost",))), clean)
    code, doc, stderr = inv("ci.quality", "--root", str(root), "--nginx", str(clean))
    assert code == 0, f"{doc['rows']}\n{stderr}"


def test_quality_fails_when_an_alert_rule_no_longer_passes_its_unit_test(
    base_images, tmp_path: Path
):
    """A tree whose ServiceDown waits 3 minutes instead of the 1 its unit test expects: the
    promtool rules gate fails, names the expectation that broke, and only it fails."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "prometheus" / "rules", root / "prometheus" / "rules")
    shutil.copytree(REPO / "prometheus" / "tests", root / "prometheus" / "tests")
    template = root / "prometheus" / "rules" / "services.yml.j2"
    text = template.read_text()
    assert "for: [[ t.service_down_for ]]" in text
    template.write_text(text.replace("for: [[ t.service_down_for ]]", "for: 3m", 1))
    code, doc, _ = inv("ci.quality", "--root", str(root))
    rows = rows_by_check(doc)
    assert code != 0 and doc["failed"] == ["promtool rules"], doc["rows"]
    assert "ServiceDown at 2m" in rows["promtool rules"]["detail"]


# --- ci.scan --------------------------------------------------------------------------------


@pytest.fixture
def bad_image(base_images, tmp_path: Path):
    """A tiny image from the local Python base that runs as root and carries a key file that
    a later layer deletes (it still ships in the earlier layer)."""
    ref = f"mysaaschat-test/ci-scan:{secrets.token_hex(4)}"
    context = tmp_path / "context"
    context.mkdir()
    (context / "credentials").write_text(f"[default]\naws_access_key_id = {FAKE_AWS_KEY}\n")
    (context / "Dockerfile").write_text(
        f"FROM {base_images['python']}\n"
        "COPY credentials /root/.aws/credentials\n"
        "RUN rm /root/.aws/credentials\n"
        "USER root\n"
    )
    build = subprocess.run(
        ["docker", "build", "--quiet", "--tag", ref, str(context)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    yield ref
    subprocess.run(["docker", "image", "rm", "--force", ref], capture_output=True, check=False)


def test_scan_fails_naming_root_user_and_the_secret(bad_image):
    code, doc, _ = inv("ci.scan", "--image", bad_image, "--audit-url", NO_AUDIT_SOURCE)
    assert code != 0 and not doc["passed"]
    rows = {r["check"]: r for r in doc["rows"] if r["image"] == bad_image}
    assert rows["non-root user"]["status"] == "failed"
    assert "runs as root" in rows["non-root user"]["detail"]
    assert rows["secrets in layers"]["status"] == "failed"
    assert "/root/.aws/credentials" in rows["secrets in layers"]["detail"]
    assert "AWS access key id" in rows["secrets in layers"]["detail"]
    assert set(doc["failed"]) == {f"{bad_image}: non-root user", f"{bad_image}: secrets in layers"}
    assert rows["python vulnerabilities"] == {
        "image": bad_image,
        "check": "python vulnerabilities",
        "status": "skipped",
        "detail": f"skipped: no vulnerability database reachable ({NO_AUDIT_SOURCE})",
    }


def test_scan_passes_every_image_the_suite_builds():
    """ci.scan with no --image scans every image `inv images.build` made (the backup image
    included): each runs as a non-root user and carries no installer and no secret."""
    run_task("images.build")
    config = load_config("local")
    built = read_images_file(images_file(REPO, config.require("IMAGE_REPOSITORY")))
    refs = {str(entry["ref"]) for entry in built.values()}
    assert "backup" in built and "auth" in built
    code, doc, stderr = inv("ci.scan", "--audit-url", NO_AUDIT_SOURCE)
    assert set(doc["images"]) == refs
    for ref in refs:
        rows = {r["check"]: r for r in doc["rows"] if r["image"] == ref}
        for check in ("non-root user", "no installer/compiler", "secrets in layers"):
            assert rows[check]["status"] == "passed", (ref, rows[check])
    assert code == 0 and doc["passed"], f"{doc['failed']}\n{stderr}"
    not_covered = [r["detail"] for r in doc["rows"] if r["check"] == "not covered"]
    assert any("Trivy" in text for text in not_covered)
