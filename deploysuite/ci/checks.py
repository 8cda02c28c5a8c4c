"""The pipeline's stages as data: which files each gate looks at, the argv of every checker, and
parsers of their output. Nothing here runs a command; tasks/ci.py hands the argv to the runner.

Every gate reports a CheckResult (check, status, detail) so that one table and one JSON document
cover them all, and a failed gate never hides the ones after it.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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


# --- summaries and notifications --------------------------------------------------------------


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_md(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(out)


def deploy_summary_markdown(doc: Mapping[str, Any] | None, source: str) -> str:
    """The step summary of a deploy or rollback from its `--json` result: outcome, release,
    changed services, smoke checks. A missing result says so instead of pretending."""
    if not doc:
        return (
            f"### Deploy: no result\n\n`{source}` holds no result: the step ended before it "
            "printed one (a configuration or connection error; see the step's log).\n"
        )
    action = str(doc.get("action") or "deploy")
    env = doc.get("env", "?")
    outcome = doc.get("outcome") or ("planned" if doc.get("dry_run") else "done")
    lines = [f"### {action.capitalize()} of `{env}`: {outcome}", ""]
    facts = [("release", doc.get("release")), ("previous", doc.get("previous"))]
    lines += [f"- {name}: `{value}`" for name, value in facts if value]
    if doc.get("dry_run"):
        lines.append("- dry run: nothing changed")
    changed = doc.get("changed") or {}
    if isinstance(changed, Mapping) and changed:
        lines += ["", markdown_table(
            [{"service": k, "change": v} for k, v in sorted(changed.items())],
            ["service", "change"],
        )]  # fmt: skip
    elif isinstance(changed, list) and changed:
        lines += ["", "changed: " + ", ".join(f"`{c}`" for c in changed)]
    else:
        lines += ["", "nothing changed"]
    smoke = doc.get("smoke") or []
    if smoke:
        failed = sum(1 for s in smoke if s.get("result") != "pass")
        lines += ["", f"smoke checks: {len(smoke) - failed} passed, {failed} failed", ""]
        lines.append(markdown_table(smoke, ["check", "result", "detail", "ms"]))
    return "\n".join(lines) + "\n"


def parse_json_document(text: str) -> dict[str, Any] | None:
    """The JSON object a task printed with --json (a --dry-run prints command lines before it,
    so the document is the first one that starts a line and parses to the end)."""
    text = text.strip()
    starts = [0] + [m.start() + 1 for m in re.finditer(r"\n\{", text)]
    for start in starts:
        try:
            doc = json.loads(text[start:])
        except json.JSONDecodeError:
            continue
        return doc if isinstance(doc, dict) else None
    return None


def job_results(needs: Mapping[str, Any]) -> dict[str, str]:
    """`${{ toJSON(needs) }}` -> job id -> result (success, failure, cancelled, skipped)."""
    return {job: str((v or {}).get("result", "unknown")) for job, v in sorted(needs.items())}


def pipeline_text(workflow: str, ref: str, run_url: str, results: Mapping[str, str]) -> str:
    """One Slack message for a finished pipeline: which jobs failed, and where to look."""
    failed = [job for job, result in results.items() if result == "failure"]
    cancelled = [job for job, result in results.items() if result == "cancelled"]
    if failed:
        text = f":x: {workflow} on {ref}: failed in {', '.join(failed)}"
    elif cancelled:
        text = f":warning: {workflow} on {ref}: cancelled ({', '.join(cancelled)})"
    else:
        text = f":white_check_mark: {workflow} on {ref}: passed"
    return text + (f"\n> {run_url}" if run_url else "")


PRIVATE_KEY_RE = re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----\n[A-Za-z0-9+/=\s:,-]+")


def private_key_text(text: str) -> str:
    """A private key from a CI secret, as ssh reads it: the armour intact, a final newline.
    Refuses anything else, so a mis-set secret fails here and not as an SSH error later."""
    body = text.replace("\r\n", "\n").strip()
    if not body.startswith("-----BEGIN ") or not PRIVATE_KEY_RE.match(body + "\n"):
        raise ValueError("the value is not a PEM/OpenSSH private key")
    if not re.search(r"-----END [A-Z ]*PRIVATE KEY-----$", body):
        raise ValueError("the private key has no END line (cut off?)")
    return body + "\n"


# --- image scan -------------------------------------------------------------------------------

# Shapes of credentials that never belong in an image. Deliberately few and specific: a
# generic high-entropy rule fires on every compiled file of a Python image.
SECRET_PATTERNS: tuple[tuple[str, re.Pattern[bytes]], ...] = (
    ("AWS access key id",
     re.compile(rb"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}(?![A-Z0-9])")),
    ("private key",
     re.compile(rb"-----BEGIN (?:RSA |DSA |EC |OPENSSH |ENCRYPTED )?PRIVATE KEY-----")),
    ("GitHub token",
     re.compile(rb"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36}(?![A-Za-z0-9])")),
    ("Slack token", re.compile(rb"(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,}")),
    ("Slack webhook",
     re.compile(rb"https://hooks\.slack\.com/services/T[A-Za-z0-9]+/B[A-Za-z0-9]+/[A-Za-z0-9]+")),
)  # fmt: skip
# Environment variable names whose non-empty value in an image is a baked-in secret.
SECRET_NAME_RE = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE_KEY|API_KEY|ACCESS_KEY)", re.I)
# Keys that third-party packages publish as their own test fixtures (aiosmtpd's test server
# certificates ship inside its wheel): public, not ours, reported as a warning. Removing the
# packages' tests/ folders in the image recipe would drop them.
PUBLIC_TEST_KEYS = ("/site-packages/aiosmtpd/tests/certs/",)
# Known values shorter than this are too common as substrings to report.
MIN_KNOWN_SECRET = 8
MAX_SCANNED_FILE = 2 * 1024 * 1024

# In the runner stage these must be absent: an installer or a toolchain lets code that got in
# fetch and build more. Basenames under a bin folder, and packages of the interpreter.
FORBIDDEN_PROGRAMS = frozenset(
    {"pip", "pip3", "gcc", "cc", "c++", "g++", "make", "cpp", "ld", "as", "easy_install"}
)
FORBIDDEN_PROGRAM_RE = re.compile(r"^(pip3\.\d+|gcc-\d+|g\+\+-\d+|x86_64-linux-gnu-gcc(-\d+)?)$")
FORBIDDEN_PACKAGES = frozenset({"pip", "setuptools"})
# Debian's base keeps these; reported as a warning, not a failure (see docs/deployment/ci-cd.md).
TOLERATED_PROGRAMS = frozenset({"apt", "apt-get", "dpkg"})
BIN_DIRS = frozenset({"bin", "sbin"})


def secret_findings(data: bytes, known: Sequence[str]) -> list[str]:
    """Kinds of secret found in `data`: credential shapes, and any known secret value."""
    found = [name for name, pattern in SECRET_PATTERNS if pattern.search(data)]
    if any(k.encode() in data for k in known if len(k) >= MIN_KNOWN_SECRET):
        found.append("a secret value of the environment's config")
    return found


def secret_text_findings(text: str, known: Sequence[str]) -> list[str]:
    return secret_findings(text.encode(errors="replace"), known)


def parse_image_inspect(stdout: str) -> dict[str, Any]:
    """`docker image inspect REF` -> its first object (the image)."""
    data = json.loads(stdout)
    return data[0] if isinstance(data, list) else data


def image_user(inspect: Mapping[str, Any]) -> str:
    return str(((inspect.get("Config") or {}).get("User")) or "")


def runs_as_root(user: str) -> bool:
    """Config.User empty means root; so do `root`, `0` and `0:<group>` / `root:<group>`."""
    name = user.split(":", 1)[0].strip()
    return name in ("", "root", "0")


def image_env(inspect: Mapping[str, Any]) -> list[str]:
    return [str(e) for e in ((inspect.get("Config") or {}).get("Env")) or []]


def env_findings(env: Sequence[str], known: Sequence[str]) -> list[str]:
    """Variables baked into the image that hold a secret: by name, shape or known value."""
    found = []
    for item in env:
        name, _, value = item.partition("=")
        if SECRET_NAME_RE.search(name) and value:
            found.append(f"ENV {name} has a value")
        for kind in secret_text_findings(value, known):
            found.append(f"ENV {name}: {kind}")
    return found


def image_history_argv(ref: str) -> Argv:
    return ("docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", ref)


def history_findings(stdout: str, known: Sequence[str]) -> list[str]:
    """Build steps whose command line carries a secret (a build argument's value shows here)."""
    found = []
    for number, line in enumerate(stdout.splitlines(), 1):
        for kind in secret_text_findings(line, known):
            found.append(f"history step {number}: {kind}")
    return found


def image_inspect_argv(ref: str) -> Argv:
    return ("docker", "image", "inspect", ref)


def image_save_argv(refs: Sequence[str], output: Path) -> Argv:
    """One archive for every image: layers they share are stored, and scanned, once."""
    return ("docker", "save", "--output", str(output), *refs)


@dataclass
class LayerScan:
    """One layer of an image archive: its secrets (path: kinds) and its file changes."""

    secrets: dict[str, list[str]] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # whiteouts
    opaque: list[str] = field(default_factory=list)  # folders whose lower content is hidden


@dataclass
class ImageScan:
    tags: tuple[str, ...]
    secrets: list[str]  # `path (layer N): kind`
    files: frozenset[str]  # the final file system's paths (no leading slash)


def _norm(name: str) -> str:
    return str(PurePosixPath("/", name)).lstrip("/")


def scan_layer(layer: tarfile.TarFile, known: Sequence[str]) -> LayerScan:
    scan = LayerScan()
    for member in layer:
        path = _norm(member.name)
        base = PurePosixPath(path).name
        if base == ".wh..wh..opq":
            scan.opaque.append(str(PurePosixPath(path).parent))
            continue
        if base.startswith(".wh."):
            scan.removed.append(str(PurePosixPath(path).parent / base[len(".wh.") :]))
            continue
        scan.added.append(path)
        if not member.isfile() or member.size > MAX_SCANNED_FILE:
            continue
        handle = layer.extractfile(member)
        if handle is None:
            continue
        found = secret_findings(handle.read(), known)
        if found:
            scan.secrets[path] = found
    return scan


def apply_layer(files: set[str], layer: LayerScan) -> None:
    """Overlay semantics: opaque folders and whiteouts hide what lower layers added."""
    for folder in layer.opaque:
        prefix = "" if folder in ("", ".") else folder + "/"
        for path in [p for p in files if p.startswith(prefix) and p != folder]:
            files.discard(path)
    for path in layer.removed:
        files.discard(path)
        for below in [p for p in files if p.startswith(path + "/")]:
            files.discard(below)
    files.update(layer.added)


def archive_manifest(archive: tarfile.TarFile) -> list[dict[str, Any]]:
    handle = archive.extractfile("manifest.json")
    if handle is None:
        raise ValueError("the archive has no manifest.json: not a `docker save` archive")
    return list(json.load(handle))


def scan_image_archive(path: Path, known: Sequence[str]) -> list[ImageScan]:
    """Every image of a `docker save` archive (legacy or OCI layout: both list each image's
    layers in manifest.json): secrets per layer, including files a later layer deleted (they
    still ship), and the final file system."""
    layers: dict[str, LayerScan] = {}
    out = []
    with tarfile.open(path) as archive:
        for entry in archive_manifest(archive):
            files: set[str] = set()
            secrets: list[str] = []
            for number, name in enumerate(entry["Layers"], 1):
                if name not in layers:
                    handle = archive.extractfile(name)
                    if handle is None:
                        raise ValueError(f"layer {name} is missing from the archive")
                    with tarfile.open(fileobj=io.BytesIO(handle.read())) as layer:
                        layers[name] = scan_layer(layer, known)
                for file, kinds in sorted(layers[name].secrets.items()):
                    secrets += [f"/{file} (layer {number}): {kind}" for kind in kinds]
                apply_layer(files, layers[name])
            tags = tuple(entry.get("RepoTags") or ())
            out.append(ImageScan(tags=tags, secrets=secrets, files=frozenset(files)))
    return out


def match_scans(refs: Sequence[str], scans: Sequence[ImageScan]) -> dict[str, ImageScan]:
    """Each requested ref's scan, by the archive's RepoTags (two refs of one image share an
    entry); refs without a tag there (image ids) fall back to the archive's order."""
    out = {}
    for position, ref in enumerate(refs):
        wanted = {ref, ref if ":" in ref.rsplit("/", 1)[-1] else f"{ref}:latest"}
        match = next((s for s in scans if wanted & set(s.tags)), None)
        if match is None and len(scans) == len(refs):
            match = scans[position]
        if match is None:
            raise ValueError(f"{ref} is not in the saved archive")
        out[ref] = match
    return out


def split_public_test_keys(findings: Sequence[str]) -> tuple[list[str], list[str]]:
    """(real, tolerated): layer findings inside a package's published test fixtures are
    tolerated; everything else is real."""
    real, tolerated = [], []
    for finding in findings:
        (tolerated if any(p in finding for p in PUBLIC_TEST_KEYS) else real).append(finding)
    return real, tolerated


def _in_bin_dir(path: PurePosixPath) -> bool:
    return path.parent.name in BIN_DIRS


def forbidden_tools(files: Iterable[str]) -> tuple[list[str], list[str]]:
    """(forbidden, tolerated) paths: installers and compilers that must be absent, and Debian's
    package tools that the base keeps."""
    forbidden, tolerated = set(), set()
    for name in files:
        path = PurePosixPath("/", name)
        if _in_bin_dir(path):
            if path.name in FORBIDDEN_PROGRAMS or FORBIDDEN_PROGRAM_RE.match(path.name):
                forbidden.add(str(path))
            elif path.name in TOLERATED_PROGRAMS:
                tolerated.add(str(path))
        parts = path.parts
        for i, part in enumerate(parts[:-1]):
            if part in ("site-packages", "dist-packages") and parts[i + 1] in FORBIDDEN_PACKAGES:
                forbidden.add(str(PurePosixPath(*parts[: i + 2])))
    return sorted(forbidden), sorted(tolerated)


DIST_INFO_RE = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)\.dist-info$")


def installed_distributions(files: Iterable[str]) -> list[tuple[str, str]]:
    """(name, version) of each `*.dist-info` folder in a site-packages: what pip-audit checks."""
    found = set()
    for name in files:
        parts = PurePosixPath(name).parts
        for i, part in enumerate(parts[:-1]):
            if part in ("site-packages", "dist-packages"):
                match = DIST_INFO_RE.match(parts[i + 1])
                if match:
                    found.add((match["name"].replace("_", "-").lower(), match["version"]))
    return sorted(found)


def requirements_text(dists: Iterable[tuple[str, str]]) -> str:
    return "".join(f"{name}=={version}\n" for name, version in dists)


def pip_audit_argv(requirements: Path, service: str = "pypi") -> Argv:
    """Pinned requirements, no resolution and no pip: only the vulnerability service is asked."""
    return (
        "pip-audit", "--no-deps", "--disable-pip", "--progress-spinner", "off",
        "--format", "json", "--vulnerability-service", service, "--requirement", str(requirements),
    )  # fmt: skip


def parse_pip_audit(stdout: str) -> list[str]:
    """`package version: ID` per known vulnerability."""
    data = json.loads(stdout)
    deps = data.get("dependencies", []) if isinstance(data, dict) else data
    return [
        f"{d['name']} {d.get('version', '?')}: {v['id']}" for d in deps for v in d.get("vulns", [])
    ]


def scan_rows(ref: str, results: Iterable[CheckResult]) -> Iterator[dict[str, str]]:
    for r in results:
        yield {"image": ref, **r.as_row()}
