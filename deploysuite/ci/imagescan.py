"""ci.scan's readers, as data: secrets in layers, environment and history, tools an image
should not carry, its Python distributions for pip-audit. Pure functions over saved output and
image archives; gates.py runs the commands."""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from deploysuite.ci.checks import CheckResult
from deploysuite.core.commands import Argv

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


# Keys that are not the suite's, reported as a warning rather than a failure:
# - aiosmtpd's test server certificates ship inside its wheel (public test fixtures);
# - Debian's ssl-cert package generates a "snake-oil" key when installed (postgresql-common
#   depends on it, in the official postgres image as in the local stand-in), root:ssl-cert 0640,
#   in a base layer that an image built on it cannot remove; no service here uses it (PostgreSQL
#   serves the socket and the internal network without TLS).
PUBLIC_TEST_KEYS = (
    "/site-packages/aiosmtpd/tests/certs/",
    "/etc/ssl/private/ssl-cert-snakeoil.key",
)


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
