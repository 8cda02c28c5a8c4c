"""The pipeline's gates over the runner: each gate runs its checker (argv from ci.checks),
reads the output with ci's parsers and returns CheckResults. A gate that cannot run (its tool is
missing, the engine is down) is a failed or skipped row with the reason, never an exception:
every gate runs, and the table shows them all.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from deploysuite import PROJECT_ROOT
from deploysuite.ci import checks as ci
from deploysuite.ci import imagescan
from deploysuite.config.layers import known_environments, load_config
from deploysuite.config.service_env import SERVICE_VARIABLES, render_services_env
from deploysuite.core.errors import SuiteError
from deploysuite.core.runner import Command, Result, Runner
from deploysuite.deploy.local import nginx_settings
from deploysuite.edge.nginx import render_nginx, write_rendered
from deploysuite.engines.stack import SERVICE_IMAGE_VARS
from deploysuite.monitoring.rules import (
    AlertThresholds,
    alert_names,
    alert_thresholds,
    promtool_check_rules_argv,
    promtool_test_argv,
    render_rules,
    rule_test_files,
    write_rule_check_folder,
)

PROMETHEUS_IMAGE = "mysaaschat/prometheus:bookworm"
AUDIT_PROBE_TIMEOUT = 5.0


def tool(name: str) -> str:
    """The tool's path; the venv's bin folder counts even when the venv is not on PATH (an
    `inv` started as `.venv/bin/inv` or `python -m invoke`)."""
    search = os.pathsep.join([str(Path(sys.executable).parent), *os.get_exec_path()])
    found = shutil.which(name, path=search)
    return found or name


def resolved(argv: ci.Argv) -> ci.Argv:
    return (tool(argv[0]), *argv[1:])


def _run(runner: Runner, argv: ci.Argv, **kwargs: object) -> Result:
    return runner.run(Command(resolved(argv), mutates=False, **kwargs), check=False)  # type: ignore[arg-type]


def tail(result: Result, lines: int = 2) -> str:
    text = (result.stderr or result.stdout).strip().splitlines()
    return " / ".join(text[-lines:]) if text else f"exit code {result.returncode}"


@dataclass(frozen=True)
class QualityInputs:
    """What ci.quality looks at: a tree (the repository, or a test's fixture), and optionally an
    nginx configuration already rendered into a folder instead of each environment's."""

    root: Path
    nginx_dir: Path | None = None


def list_files(runner: Runner, root: Path) -> list[str]:
    """Relative paths of the tree's own files: git's view when it is a work tree (ignored files
    left out), else every file outside generated and tool folders."""
    if (root / ".git").exists():
        result = _run(runner, ci.git_files_argv(), cwd=str(root))
        names = ci.parse_git_files(result.stdout) if result.ok else []
    else:
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return [
        n
        for n in names
        if not ci.skipped_path(Path(n)) and (root / n).is_file()  # type: ignore[arg-type]
    ]


def gate(name: str, body: Callable[[], ci.CheckResult]) -> ci.CheckResult:
    try:
        return body()
    except SuiteError as exc:
        return ci.CheckResult(name, "failed", exc.one_line().removeprefix("error: "))
    except (ValueError, OSError, json.JSONDecodeError) as exc:
        return ci.CheckResult(name, "failed", f"{type(exc).__name__}: {exc}")


def check_ruff(runner: Runner, root: Path) -> ci.CheckResult:
    result = _run(runner, ci.ruff_argv(), cwd=str(root))
    findings = ci.parse_ruff(result.stdout)
    if result.ok:
        return ci.CheckResult("ruff", "passed", "no findings")
    return ci.CheckResult("ruff", "failed", ci.first_lines(findings) or tail(result))


def check_hadolint(runner: Runner, root: Path, files: Sequence[str]) -> ci.CheckResult:
    dockerfiles = ci.dockerfiles(files)
    if not dockerfiles:
        return ci.CheckResult("hadolint", "skipped", f"no Dockerfile under {root}")
    result = _run(runner, ci.hadolint_argv(dockerfiles), cwd=str(root))
    findings = ci.parse_hadolint(result.stdout) if result.stdout.strip() else []
    if result.ok and not findings:
        return ci.CheckResult("hadolint", "passed", f"{len(dockerfiles)} Dockerfile(s) clean")
    return ci.CheckResult("hadolint", "failed", ci.first_lines(findings) or tail(result))


def check_zizmor(runner: Runner, root: Path, files: Sequence[str]) -> ci.CheckResult:
    found = ci.workflows(files)
    if not found:
        return ci.CheckResult("zizmor", "skipped", f"no workflow under {root}/.github/workflows")
    result = _run(runner, ci.zizmor_argv(found), cwd=str(root), timeout=120)
    if result.ok:
        return ci.CheckResult("zizmor", "passed", f"{len(found)} workflow(s), auditor persona")
    try:
        findings = ci.parse_zizmor(result.stdout)
    except (ValueError, TypeError, AttributeError):  # not JSON: zizmor itself failed
        findings = []
    return ci.CheckResult("zizmor", "failed", ci.first_lines(findings) or tail(result))


def read_tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): p.read_text(encoding="utf-8")
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def check_gixy(runner: Runner, label: str, files: dict[str, str]) -> ci.CheckResult:
    name = f"gixy ({label})"
    if "nginx.conf" not in files:
        return ci.CheckResult(name, "failed", "no nginx.conf in the rendered configuration")
    result = _run(runner, ci.gixy_argv(), input=ci.nginx_dump_text(files).encode())
    if result.returncode not in (0, 1):
        return ci.CheckResult(name, "failed", tail(result))
    findings = ci.parse_gixy(result.stdout)
    if findings:
        return ci.CheckResult(name, "failed", ci.first_lines(findings))
    skipped = ", ".join(ci.GIXY_SKIPS)
    return ci.CheckResult(name, "passed", f"{len(files)} files, no findings (skips {skipped})")


def check_nginx_environments(runner: Runner, root: Path) -> list[ci.CheckResult]:
    envs = known_environments(root)
    if not envs:
        return [ci.CheckResult("gixy", "skipped", f"no environments/ under {root}")]
    out = []
    with tempfile.TemporaryDirectory(prefix="ci-nginx-") as scratch:
        for env in envs:

            def one(env: str = env) -> ci.CheckResult:
                config = load_config(env, root=root)
                folder = Path(scratch) / env
                write_rendered(render_nginx(nginx_settings(config)), folder)
                return check_gixy(runner, env, read_tree(folder))

            out.append(gate(f"gixy ({env})", one))
    return out


def check_compose(runner: Runner, root: Path) -> list[ci.CheckResult]:
    compose_file = root / ci.COMPOSE_FILE
    if not compose_file.is_file():
        return [ci.CheckResult("compose", "skipped", f"no {ci.COMPOSE_FILE} under {root}")]
    envs = known_environments(root)
    if not envs:
        return [ci.CheckResult("compose", "skipped", f"no environments/ under {root}")]
    profiles = ci.compose_profiles(yaml.safe_load(compose_file.read_text(encoding="utf-8")))
    out = []
    with tempfile.TemporaryDirectory(prefix="ci-compose-") as scratch:
        # Each service's environment is rendered at deploy time from its secrets; a stand-in
        # with one variable per service gives compose the same file shape to merge.
        services_env = Path(scratch) / "services.env.yml"
        services_env.write_text(
            render_services_env({s: {"LOG_LEVEL": "INFO"} for s in SERVICE_VARIABLES})
        )
        argv = ci.compose_config_argv((compose_file, services_env), profiles)
        rendered = {"NGINX_RENDERED_DIR": f"{scratch}/nginx", "TLS_DIR": f"{scratch}/tls"}
        for env in envs:

            def one(env: str = env) -> ci.CheckResult:
                config = load_config(env, root=root)
                secrets = [s.name for s in config.schema.values() if s.is_secret]
                values = ci.compose_check_env(
                    config.as_env(), secrets, SERVICE_IMAGE_VARS.values(), rendered
                )
                result = _run(runner, argv, env=values, cwd=str(root), timeout=120)
                name = f"compose ({env})"
                if result.ok:
                    return ci.CheckResult(name, "passed", f"profiles: {', '.join(profiles)}")
                return ci.CheckResult(name, "failed", tail(result))

            out.append(gate(f"compose ({env})", one))
    return out


def check_yamllint(runner: Runner, root: Path, files: Sequence[str]) -> ci.CheckResult:
    yaml_files = ci.yaml_files(files)
    if not yaml_files:
        return ci.CheckResult("yamllint", "skipped", f"no YAML file under {root}")
    config = root / ci.YAMLLINT_CONFIG
    if not config.is_file():
        config = PROJECT_ROOT / ci.YAMLLINT_CONFIG
    result = _run(runner, ci.yamllint_argv(config, yaml_files), cwd=str(root))
    errors, warnings = ci.parse_yamllint(result.stdout)
    if errors or result.returncode not in (0, 2):
        return ci.CheckResult("yamllint", "failed", ci.first_lines(errors) or tail(result))
    if warnings:
        return ci.CheckResult("yamllint", "warning", ci.first_lines(warnings))
    return ci.CheckResult("yamllint", "passed", f"{len(yaml_files)} file(s) clean")


def check_secrets(runner: Runner, root: Path, files: Sequence[str]) -> ci.CheckResult:
    scanned = [f for f in files if f != ci.SECRETS_BASELINE]
    result = _run(runner, ci.detect_secrets_argv(scanned), cwd=str(root), timeout=600)
    if not result.ok:
        return ci.CheckResult("detect-secrets", "failed", tail(result))
    baseline_file = root / ci.SECRETS_BASELINE
    baseline = (
        json.loads(baseline_file.read_text(encoding="utf-8")) if baseline_file.is_file() else None
    )
    found = ci.new_secrets(json.loads(result.stdout), baseline)
    if found:
        fix = f"remove it, or audit it into {ci.SECRETS_BASELINE} if it is not a secret"
        return ci.CheckResult("detect-secrets", "failed", f"{ci.first_lines(found)} ({fix})")
    against = "the audited baseline" if baseline else "no baseline"
    return ci.CheckResult("detect-secrets", "passed", f"{len(scanned)} files, against {against}")


def check_promtool(runner: Runner, root: Path) -> ci.CheckResult:
    config = root / ci.PROMETHEUS_CONFIG
    if not config.is_file():
        return ci.CheckResult("promtool", "skipped", f"no {ci.PROMETHEUS_CONFIG} under {root}")
    if shutil.which("promtool"):
        result = _run(runner, ci.promtool_argv(config), timeout=60)
        where = "promtool on PATH"
    else:
        probe = _run(
            runner, ("docker", "image", "inspect", "--format", "{{.Id}}", PROMETHEUS_IMAGE)
        )
        if not probe.ok:
            return ci.CheckResult(
                "promtool",
                "skipped",
                f"not checked: no promtool on PATH and no {PROMETHEUS_IMAGE} image "
                "(inv images.bootstrap --only prometheus)",
            )
        result = _run(runner, ci.promtool_in_image_argv(PROMETHEUS_IMAGE, config), timeout=120)
        where = f"promtool in {PROMETHEUS_IMAGE}"
    if result.ok:
        return ci.CheckResult("promtool", "passed", f"{ci.PROMETHEUS_CONFIG} valid ({where})")
    return ci.CheckResult("promtool", "failed", tail(result))


def check_promtool_rules(runner: Runner, root: Path) -> ci.CheckResult:
    """The alert rules: every environment's rendering passes `promtool check rules`, and the
    rendering with the default thresholds passes the unit tests of prometheus/tests."""
    name = "promtool rules"
    if not (root / ci.PROMETHEUS_RULES).is_dir():
        return ci.CheckResult(name, "skipped", f"no {ci.PROMETHEUS_RULES} under {root}")
    tests = rule_test_files(root / ci.PROMETHEUS_RULE_TESTS)
    if not tests:
        return ci.CheckResult(name, "failed", f"no unit tests in {ci.PROMETHEUS_RULE_TESTS}")
    image: str | None = None
    where = "promtool on PATH"
    if not shutil.which("promtool"):
        probe = _run(
            runner, ("docker", "image", "inspect", "--format", "{{.Id}}", PROMETHEUS_IMAGE)
        )
        if not probe.ok:
            return ci.CheckResult(
                name,
                "skipped",
                f"not checked: no promtool on PATH and no {PROMETHEUS_IMAGE} image "
                "(inv images.bootstrap --only prometheus)",
            )
        image, where = PROMETHEUS_IMAGE, f"promtool in {PROMETHEUS_IMAGE}"
    templates = root / ci.PROMETHEUS_TEMPLATES
    defaults = render_rules(AlertThresholds(), templates)
    envs = known_environments(root)
    with tempfile.TemporaryDirectory(prefix="ci-rules-") as scratch:
        folder = Path(scratch)
        rule_files, test_files = write_rule_check_folder(folder, defaults, tests)
        for env in envs:
            rendered = render_rules(alert_thresholds(load_config(env, root=root)), templates)
            env_rules, _ = write_rule_check_folder(folder / "envs" / env, rendered, {})
            rule_files += [f"envs/{env}/{rel}" for rel in env_rules]
        check = _run(runner, promtool_check_rules_argv(image, folder, rule_files), timeout=120)
        if not check.ok:
            return ci.CheckResult(name, "failed", tail(check))
        result = _run(runner, promtool_test_argv(image, folder, test_files), timeout=300)
    if not result.ok:
        failures = ci.parse_promtool_test_failures(result.stderr + result.stdout)
        return ci.CheckResult(name, "failed", ci.first_lines(failures) or tail(result))
    return ci.CheckResult(
        name,
        "passed",
        f"{len(alert_names(defaults))} alerts pass {len(test_files)} test files; "
        f"rules of {len(envs)} environment(s) valid ({where})",
    )


def run_quality(runner: Runner, inputs: QualityInputs) -> list[ci.CheckResult]:
    """Every gate of stage 1, all of them, in a fixed order."""
    root = inputs.root
    files = list_files(runner, root)
    results = [
        gate("ruff", lambda: check_ruff(runner, root)),
        gate("hadolint", lambda: check_hadolint(runner, root, files)),
    ]
    if inputs.nginx_dir is not None:
        nginx_dir = inputs.nginx_dir
        results.append(
            gate("gixy", lambda: check_gixy(runner, str(nginx_dir), read_tree(nginx_dir)))
        )
    else:
        results += check_nginx_environments(runner, root)
    results += check_compose(runner, root)
    results += [
        gate("yamllint", lambda: check_yamllint(runner, root, files)),
        gate("zizmor", lambda: check_zizmor(runner, root, files)),
        gate("detect-secrets", lambda: check_secrets(runner, root, files)),
        gate("promtool", lambda: check_promtool(runner, root)),
        gate("promtool rules", lambda: check_promtool_rules(runner, root)),
    ]
    return results


# --- image scan -------------------------------------------------------------------------------


def audit_source_reachable(url: str, timeout: float = AUDIT_PROBE_TIMEOUT) -> bool:
    """Whether the vulnerability service answers at all (any HTTP status counts)."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def image_facts(runner: Runner, ref: str, known: Sequence[str]) -> list[ci.CheckResult]:
    """Checks read from the image's metadata: its user, its environment, its build history."""
    inspect = _run(runner, imagescan.image_inspect_argv(ref))
    if not inspect.ok:
        return [ci.CheckResult("image", "failed", f"not on this engine: {tail(inspect)}")]
    data = imagescan.parse_image_inspect(inspect.stdout)
    user = imagescan.image_user(data)
    user_row = (
        ci.CheckResult("non-root user", "failed", f"runs as root (USER {user or 'not set'})")
        if imagescan.runs_as_root(user)
        else ci.CheckResult("non-root user", "passed", f"USER {user}")
    )
    history = _run(runner, imagescan.image_history_argv(ref))
    found = imagescan.env_findings(imagescan.image_env(data), known)
    found += imagescan.history_findings(history.stdout, known) if history.ok else []
    meta_row = (
        ci.CheckResult("secrets in env/history", "failed", ci.first_lines(found))
        if found
        else ci.CheckResult("secrets in env/history", "passed", "none found")
    )
    return [user_row, meta_row]


def layer_results(scan: imagescan.ImageScan) -> list[ci.CheckResult]:
    rows = []
    real, tolerated_keys = imagescan.split_public_test_keys(scan.secrets)
    if real:
        rows.append(ci.CheckResult("secrets in layers", "failed", ci.first_lines(real)))
    else:
        rows.append(ci.CheckResult("secrets in layers", "passed", "every file of every layer"))
    if tolerated_keys:
        rows.append(
            ci.CheckResult(
                "package keys",
                "warning",
                f"{len(tolerated_keys)} key(s) a package ships or generates, not the suite's: "
                + ci.first_lines(tolerated_keys, limit=1),
            )
        )
    forbidden, tolerated = imagescan.forbidden_tools(scan.files)
    if forbidden:
        rows.append(ci.CheckResult("no installer/compiler", "failed", ci.first_lines(forbidden)))
    else:
        rows.append(
            ci.CheckResult("no installer/compiler", "passed", "no pip, setuptools, cc, make")
        )
    if tolerated:
        rows.append(
            ci.CheckResult(
                "package tools",
                "warning",
                f"{', '.join(Path(t).name for t in tolerated)} present (Debian base; "
                "unusable by the non-root user)",
            )
        )
    return rows


def audit_results(
    runner: Runner, scan: imagescan.ImageScan, reachable: bool, audit_url: str, service: str
) -> ci.CheckResult:
    name = "python vulnerabilities"
    if not reachable:
        return ci.CheckResult(
            name, "skipped", f"skipped: no vulnerability database reachable ({audit_url})"
        )
    dists = imagescan.installed_distributions(scan.files)
    if not dists:
        return ci.CheckResult(name, "skipped", "no Python distributions found in the image")
    with tempfile.TemporaryDirectory(prefix="ci-audit-") as scratch:
        requirements = Path(scratch) / "requirements.txt"
        requirements.write_text(imagescan.requirements_text(dists))
        result = _run(runner, imagescan.pip_audit_argv(requirements, service), timeout=600)
    try:
        found = imagescan.parse_pip_audit(result.stdout)
    except (json.JSONDecodeError, KeyError, TypeError):
        return ci.CheckResult(name, "failed", f"pip-audit did not run: {tail(result)}")
    if found:
        return ci.CheckResult(name, "failed", ci.first_lines(found))
    return ci.CheckResult(name, "passed", f"{len(dists)} distributions, none known vulnerable")


NOT_COVERED = (
    "Debian (OS) packages' vulnerabilities: Trivy or Grype need their database, a download",
    "licences, image signatures and SBOMs",
)


def scan_images(
    runner: Runner,
    refs: Sequence[str],
    known: Sequence[str],
    audit_url: str,
    audit_service: str = "pypi",
) -> list[dict[str, str]]:
    """Rows (image, check, status, detail) for every image, then what the scan does not cover."""
    rows: list[dict[str, str]] = []
    present = []
    for ref in refs:
        facts = image_facts(runner, ref, known)
        rows += imagescan.scan_rows(ref, facts)
        if facts[0].check != "image":
            present.append(ref)
    reachable = audit_source_reachable(audit_url)
    if present:
        with tempfile.TemporaryDirectory(prefix="ci-scan-") as scratch:
            archive = Path(scratch) / "images.tar"
            saved = _run(runner, imagescan.image_save_argv(present, archive), timeout=1200)
            if not saved.ok:
                raise SuiteError(f"docker save failed: {tail(saved)}", "check the engine's disk")
            scans = imagescan.scan_image_archive(archive, known)
        by_ref = imagescan.match_scans(present, scans)
        for ref in present:
            scan = by_ref[ref]
            results = layer_results(scan)
            results.append(audit_results(runner, scan, reachable, audit_url, audit_service))
            rows += imagescan.scan_rows(ref, results)
    rows += [
        {"image": "*", "check": "not covered", "status": "skipped", "detail": text}
        for text in NOT_COVERED
    ]
    return rows
