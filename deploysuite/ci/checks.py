"""The pipeline's stages as data: which files each gate looks at, the argv of every checker, and
parsers of their output (the image scan's are in imagescan.py, the run summaries in
summaries.py). Nothing here runs a command; tasks/ci.py hands the argv to the runner.

Every gate reports a CheckResult (check, status, detail) so that one table and one JSON document
cover them all, and a failed gate never hides the ones after it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from deploysuite.core.commands import Argv

Status = Literal["passed", "failed", "warning", "skipped"]
CHECK_COLUMNS = ["check", "status", "detail"]
SCAN_COLUMNS = ["image", "check", "status", "detail"]

# Folders that are generated or belong to tools: never the product's own files.
SKIP_DIRS = frozenset(
    {".git", ".venv", "build", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache",
     ".mypy_cache", "my_saas_chat_deploy.egg-info"}
)  # fmt: skip
SECRETS_BASELINE = ".secrets.baseline"
YAMLLINT_CONFIG = ".yamllint"
COMPOSE_FILE = "docker-compose.prod.yml"
PROMETHEUS_CONFIG = PurePosixPath("prometheus/prometheus.yml")
# The alert rules' templates and their promtool unit tests.
PROMETHEUS_TEMPLATES = PurePosixPath("prometheus")
PROMETHEUS_RULES = PROMETHEUS_TEMPLATES / "rules"
PROMETHEUS_RULE_TESTS = PROMETHEUS_TEMPLATES / "tests"
# The rendered upstreams name compose services, which nginx 1.22 resolves when it loads the
# configuration; the deploy re-renders and reloads whenever containers change (see
# tests/integration/test_nginx_config.py), so gixy's start-up DNS warning is expected.
GIXY_SKIPS = ("stale_dns_cache",)
# Where the configuration lives inside the nginx container: gixy resolves `include` through the
# `# configuration file` markers of an `nginx -T` dump.
NGINX_CONF_DIR = PurePosixPath("/etc/nginx")


@dataclass(frozen=True)
class CheckResult:
    check: str
    status: Status
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def as_row(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "detail": self.detail}


def failed_checks(results: Iterable[CheckResult]) -> list[str]:
    return [r.check for r in results if r.status == "failed"]


def first_lines(items: Sequence[str], limit: int = 2, width: int = 90) -> str:
    """A table cell: the first few findings (each cut to `width`) and how many more there are."""
    shown = "; ".join(i if len(i) <= width else i[: width - 1] + "…" for i in items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


# --- which files ------------------------------------------------------------------------------


def git_files_argv() -> Argv:
    """Tracked and untracked-but-not-ignored files, NUL-separated (names may hold spaces)."""
    return ("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z")


def parse_git_files(stdout: str) -> list[str]:
    return sorted({name for name in stdout.split("\0") if name})


def skipped_path(rel: PurePosixPath) -> bool:
    return any(part in SKIP_DIRS for part in rel.parts)


def is_dockerfile(rel: PurePosixPath) -> bool:
    name = rel.name
    return name == "Dockerfile" or name.startswith("Dockerfile.") or name.endswith(".Dockerfile")


# bench/ holds the deliberately naive build the image benchmark compares against (README,
# "Benchmarks"): it is a baseline, not a product file, and is meant to fail every rule.
LINT_EXEMPT_DIRS = ("bench",)


def dockerfiles(files: Iterable[str]) -> list[str]:
    return sorted(
        f
        for f in files
        if is_dockerfile(PurePosixPath(f)) and PurePosixPath(f).parts[0] not in LINT_EXEMPT_DIRS
    )


def yaml_files(files: Iterable[str]) -> list[str]:
    return sorted(f for f in files if PurePosixPath(f).suffix in (".yml", ".yaml"))


def workflow_files(files: Iterable[str]) -> list[str]:
    return sorted(
        f
        for f in yaml_files(files)
        if PurePosixPath(f).parent == PurePosixPath(".github/workflows")
    )


# --- quality: argv and parsers ----------------------------------------------------------------


def ruff_argv() -> Argv:
    return ("ruff", "check", "--output-format", "concise", ".")


def parse_ruff(stdout: str) -> list[str]:
    """`path:line:col: CODE message` lines of `ruff check --output-format concise`."""
    return [line for line in stdout.splitlines() if re.match(r"^[^:\s][^:]*:\d+:\d+: ", line)]


def zizmor_argv(workflows: Sequence[str]) -> Argv:
    """GitHub Actions workflows audited as an auditor would (the strictest persona), offline;
    JSON, so that the findings read the same whether or not the terminal forces colour."""
    return ("zizmor", "--offline", "--no-progress", "--persona=auditor", "--format=json",
            *workflows)  # fmt: skip


ZIZMOR_SEVERITIES = ("High", "Medium", "Low", "Informational", "Unknown")


def parse_zizmor(stdout: str) -> list[str]:
    """zizmor's JSON findings -> `severity ident: desc (file:line)`, the most severe first."""
    text = stdout.strip()
    if not text:
        return []
    rows = []
    for item in json.loads(text):
        severity = item.get("determinations", {}).get("severity", "Unknown")
        where = ""
        for loc in item.get("locations", [])[:1]:
            path = loc.get("symbolic", {}).get("key", {}).get("Local", {}).get("verbatim_path")
            row = loc.get("concrete", {}).get("location", {}).get("start_point", {}).get("row")
            if path:
                where = f" ({path}:{row + 1})" if isinstance(row, int) else f" ({path})"
        rank = ZIZMOR_SEVERITIES.index(severity) if severity in ZIZMOR_SEVERITIES else 4
        rows.append((rank, f"{severity.lower()} {item.get('ident')}: {item.get('desc')}{where}"))
    return [line for _, line in sorted(rows, key=lambda r: r[0])]


def workflows(files: Sequence[str]) -> list[str]:
    return sorted(f for f in files if f.startswith(".github/workflows/") and
                  f.endswith((".yml", ".yaml")))  # fmt: skip


def hadolint_argv(files: Sequence[str]) -> Argv:
    return ("hadolint", "--no-color", "--format", "json", *files)


def parse_hadolint(stdout: str) -> list[str]:
    """hadolint's JSON list -> `file:line CODE (level) message` per finding."""
    text = stdout.strip()
    if not text:
        return []
    return [
        f"{item['file']}:{item['line']} {item['code']} ({item['level']}) {item['message']}"
        for item in json.loads(text)
    ]


def gixy_argv(skips: Sequence[str] = GIXY_SKIPS) -> Argv:
    """gixy on an `nginx -T`-shaped dump read from stdin."""
    argv: tuple[str, ...] = ("gixy", "--format", "json")
    if skips:
        argv += ("--skips", ",".join(skips))
    return (*argv, "-")


def parse_gixy(stdout: str) -> list[str]:
    """gixy's JSON list -> `plugin (severity) file:line` per finding."""
    text = stdout.strip()
    if not text:
        return []
    return [
        f"{item['plugin']} ({item['severity']}) {item.get('file', '?')}:{item.get('line', '?')}"
        for item in json.loads(text)
    ]


def nginx_dump_text(files: Mapping[str, str], conf_dir: PurePosixPath = NGINX_CONF_DIR) -> str:
    """The rendered files as `nginx -T` prints them (nginx.conf first), so gixy follows the
    configuration's absolute `include`s without an nginx binary or image."""
    order = sorted(files, key=lambda rel: (rel != "nginx.conf", rel))
    return "".join(f"# configuration file {conf_dir / rel}:\n{files[rel]}\n" for rel in order)


def compose_profiles(model: Mapping[str, Any]) -> tuple[str, ...]:
    """Every profile a service of the compose file names: the check validates all of them."""
    profiles = {
        p for service in (model.get("services") or {}).values() for p in service.get("profiles", ())
    }
    return tuple(sorted(profiles))


def compose_config_argv(files: Sequence[Path], profiles: Sequence[str]) -> Argv:
    argv: list[str] = ["docker", "compose"]
    for f in files:
        argv += ["--file", str(f)]
    for p in profiles:
        argv += ["--profile", p]
    return (*argv, "config", "--quiet")


def compose_check_env(
    values: Mapping[str, str],
    secret_names: Iterable[str],
    image_vars: Iterable[str],
    rendered_dirs: Mapping[str, str],
) -> dict[str, str]:
    """What compose interpolates during the check: the environment's values, a stand-in for
    each secret that is not set (the check is about the file, not the secrets) and for each
    service image that is not built yet, and the folders a deploy renders into."""
    env = dict(values)
    for name in secret_names:
        if not env.get(name):
            env[name] = "x" * 43
    for var in image_vars:
        env.setdefault(var, f"registry.example/{var.lower()}:check")
    env.update(rendered_dirs)
    return env


def yamllint_argv(config: Path, files: Sequence[str]) -> Argv:
    return ("yamllint", "--format", "parsable", "--config-file", str(config), *files)


def parse_yamllint(stdout: str) -> tuple[list[str], list[str]]:
    """`file:line:col: [level] message (rule)` lines -> (errors, warnings)."""
    errors, warnings = [], []
    for line in stdout.splitlines():
        match = re.match(r"^(.+?):(\d+):\d+: \[(error|warning)\] (.*)$", line)
        if match:
            where = f"{match.group(1)}:{match.group(2)} {match.group(4)}"
            (errors if match.group(3) == "error" else warnings).append(where)
    return errors, warnings


def detect_secrets_argv(files: Sequence[str]) -> Argv:
    return ("detect-secrets", "scan", *files)


def secret_key(filename: str, item: Mapping[str, Any]) -> tuple[str, str, str]:
    return (filename, str(item.get("type")), str(item.get("hashed_secret")))


def new_secrets(scan: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> list[str]:
    """Findings of `detect-secrets scan` that the audited baseline does not hold as false
    positives, as `file:line type`. Matched by file, type and hash, not line: moving a line does
    not re-open an audited finding; a baseline entry audited as a real secret (is_secret true)
    always fails."""
    audited = {
        secret_key(name, item)
        for name, items in ((baseline or {}).get("results") or {}).items()
        for item in items
        if item.get("is_secret") is not True
    }
    found = []
    for name, items in sorted((scan.get("results") or {}).items()):
        for item in items:
            if secret_key(name, item) not in audited:
                found.append(f"{name}:{item.get('line_number')} {item.get('type')}")
    return found


def promtool_argv(config: Path) -> Argv:
    return ("promtool", "check", "config", str(config))


def promtool_in_image_argv(image: str, config: Path) -> Argv:
    """promtool of the locally built Prometheus image, on the file mounted read-only, offline."""
    return (
        "docker", "run", "--rm", "--network", "none",
        "--volume", f"{config.parent}:/check:ro",
        "--entrypoint", "promtool",
        image, "check", "config", f"/check/{config.name}",
    )  # fmt: skip


def parse_promtool_test_failures(output: str) -> list[str]:
    """`promtool test rules` output -> `<alert> at <eval time>` per failed expectation; a file
    that fails as a whole (a rule file that does not load) gives its error line."""
    found = [
        f"{m.group(1)} at {m.group(2)}"
        for m in re.finditer(r"alertname: (\S+), time: ([^,\s]+),", output)
    ]
    if found:
        return found
    # promtool prints a load error once per test group: each line once, in order
    lines = (line.strip() for line in output.splitlines())
    return list(
        dict.fromkeys(
            line
            for line in lines
            if line and not line.startswith(("Unit Testing", "SUCCESS", "FAILED"))
        )
    )


# --- unit and integration stages --------------------------------------------------------------


def pytest_argv(python: str, paths: Sequence[str], extra: Sequence[str] = ()) -> Argv:
    return (python, "-m", "pytest", *paths, *extra)


def service_test_dirs(service_dirs: Iterable[str]) -> dict[str, str]:
    """services/<name>/tests per service folder that has tests: the unit matrix's entries."""
    return {
        PurePosixPath(d).parent.name: d
        for d in sorted(service_dirs)
        if PurePosixPath(d).name == "tests" and PurePosixPath(d).parent.parent.name == "services"
    }
