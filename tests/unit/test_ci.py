"""ci.checks: the pipeline's argv builders and parsers, by exact value, no I/O (the image
archive reader works on a small archive built in memory)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from deploysuite.ci import checks as ci
from deploysuite.ci import imagescan, summaries

# Credential-shaped values are assembled at run time: the repository's own secret scan must not
# find them in this file.
FAKE_AWS_KEY = "AKIA" + "ABCDEFGHIJKLMNOP"
KEY_HEADER = "-----BEGIN RSA " + "PRIVATE KEY-----"


# --- files ------------------------------------------------------------------------------------


def test_git_files_lists_tracked_and_new_files_nul_separated():
    assert ci.git_files_argv() == (
        "git", "ls-files", "--cached", "--others", "--exclude-standard", "-z",
    )  # fmt: skip
    assert ci.parse_git_files("b.py\0a dir/x.yml\0\0b.py\0") == ["a dir/x.yml", "b.py"]


def test_file_selection():
    files = [
        "docker/service/Dockerfile", "docker/base/nginx/Dockerfile",
        "bench/naive-service.Dockerfile",
        "app/Dockerfile.dev", "x.Dockerfile", "notes/Dockerfile.md.txt", "compose.yaml",
        ".github/workflows/pipeline.yml", ".github/workflows/sub/other.yml", "README.md",
    ]  # fmt: skip
    assert ci.dockerfiles(files) == [
        "app/Dockerfile.dev", "docker/base/nginx/Dockerfile", "docker/service/Dockerfile",
        "notes/Dockerfile.md.txt", "x.Dockerfile",
    ]  # fmt: skip
    assert ci.yaml_files(files) == [
        ".github/workflows/pipeline.yml", ".github/workflows/sub/other.yml", "compose.yaml",
    ]  # fmt: skip
    assert ci.workflow_files(files) == [".github/workflows/pipeline.yml"]
    assert ci.skipped_path(PurePosixPath(".venv/lib/x.py"))
    assert ci.skipped_path(PurePosixPath("a/build/x"))
    assert not ci.skipped_path(PurePosixPath("deploysuite/build_plan.py"))


# --- quality ----------------------------------------------------------------------------------


def test_checker_argv():
    assert ci.ruff_argv() == ("ruff", "check", "--output-format", "concise", ".")
    assert ci.hadolint_argv(["a/Dockerfile", "b/Dockerfile"]) == (
        "hadolint", "--no-color", "--format", "json", "a/Dockerfile", "b/Dockerfile",
    )  # fmt: skip
    assert ci.gixy_argv() == ("gixy", "--format", "json", "--skips", "stale_dns_cache", "-")
    assert ci.gixy_argv(()) == ("gixy", "--format", "json", "-")
    assert ci.yamllint_argv(Path("/r/.yamllint"), ["a.yml"]) == (
        "yamllint", "--format", "parsable", "--config-file", "/r/.yamllint", "a.yml",
    )  # fmt: skip
    assert ci.detect_secrets_argv(["a.py", "b.py"]) == ("detect-secrets", "scan", "a.py", "b.py")
    assert ci.promtool_argv(Path("/r/prometheus/prometheus.yml")) == (
        "promtool", "check", "config", "/r/prometheus/prometheus.yml",
    )  # fmt: skip
    assert ci.promtool_in_image_argv("img:1", Path("/r/prometheus/prometheus.yml")) == (
        "docker", "run", "--rm", "--network", "none", "--volume", "/r/prometheus:/check:ro",
        "--entrypoint", "promtool", "img:1", "check", "config", "/check/prometheus.yml",
    )  # fmt: skip


def test_compose_config_argv_names_every_file_and_profile():
    argv = ci.compose_config_argv((Path("/r/c.yml"), Path("/t/s.yml")), ("acme", "backup"))
    assert argv == (
        "docker", "compose", "--file", "/r/c.yml", "--file", "/t/s.yml",
        "--profile", "acme", "--profile", "backup", "config", "--quiet",
    )  # fmt: skip


def test_compose_profiles_are_collected_from_every_service():
    model = {"services": {"a": {}, "b": {"profiles": ["x", "acme"]}, "c": {"profiles": ["x"]}}}
    assert ci.compose_profiles(model) == ("acme", "x")
    assert ci.compose_profiles({}) == ()


def test_compose_check_env_stands_in_for_unset_secrets_and_images():
    env = ci.compose_check_env(
        {"A": "1", "PW": "", "SET_PW": "real", "AUTH_IMAGE": "mine:1"},
        ["PW", "SET_PW"],
        ["AUTH_IMAGE", "CHAT_IMAGE"],
        {"TLS_DIR": "/t"},
    )
    assert env == {
        "A": "1", "PW": "x" * 43, "SET_PW": "real", "AUTH_IMAGE": "mine:1",
        "CHAT_IMAGE": "registry.example/chat_image:check", "TLS_DIR": "/t",
    }  # fmt: skip


def test_parse_ruff_keeps_only_finding_lines():
    out = (
        "a.py:1:8: F401 [*] `os` imported but unused\n"
        "b/c.py:10:1: E501 Line too long\nFound 2 errors.\n"
    )
    assert ci.parse_ruff(out) == [
        "a.py:1:8: F401 [*] `os` imported but unused",
        "b/c.py:10:1: E501 Line too long",
    ]


def test_parse_hadolint():
    out = json.dumps(
        [{"code": "DL3007", "column": 1, "file": "Dockerfile", "level": "warning", "line": 1,
          "message": "Using latest is prone to errors"}]
    )  # fmt: skip
    assert ci.parse_hadolint(out) == [
        "Dockerfile:1 DL3007 (warning) Using latest is prone to errors"
    ]
    assert ci.parse_hadolint("[]") == []
    assert ci.parse_hadolint("") == []


def test_parse_gixy():
    out = json.dumps(
        [{"plugin": "add_header_redefinition", "severity": "MEDIUM",
          "file": "/etc/nginx/conf.d/20-servers.conf", "line": 42}]
    )  # fmt: skip
    assert ci.parse_gixy(out) == [
        "add_header_redefinition (MEDIUM) /etc/nginx/conf.d/20-servers.conf:42"
    ]
    assert ci.parse_gixy("[]\n") == []


def test_nginx_dump_puts_nginx_conf_first_with_container_paths():
    dump = ci.nginx_dump_text({"conf.d/a.conf": "a;", "nginx.conf": "main;", "snippets/s": "s;"})
    assert dump == (
        "# configuration file /etc/nginx/nginx.conf:\nmain;\n"
        "# configuration file /etc/nginx/conf.d/a.conf:\na;\n"
        "# configuration file /etc/nginx/snippets/s:\ns;\n"
    )


def test_parse_yamllint_splits_errors_and_warnings():
    out = (
        'a.yml:3:1: [warning] missing document start "---" (document-start)\n'
        "b.yml:40:101: [error] line too long (309 > 100 characters) (line-length)\n"
    )
    assert ci.parse_yamllint(out) == (
        ["b.yml:40 line too long (309 > 100 characters) (line-length)"],
        ['a.yml:3 missing document start "---" (document-start)'],
    )


def test_parse_promtool_test_failures_names_each_alert_and_time():
    # promtool 2.42's report of two expectations that did not hold
    out = (
        "Unit Testing:  /rules-check/tests/backups.test.yml\n  FAILED:\n"
        "    alertname: BackupTooOld, time: 6h6m, \n"
        "        exp:[\n            0:\n              Labels:{...}\n            ], \n"
        "        got:[]\n\n"
        "Unit Testing:  /rules-check/tests/services.test.yml\n  FAILED:\n"
        "    alertname: ServiceDown, time: 2m, \n        exp:[], \n        got:[]\n"
    )
    assert ci.parse_promtool_test_failures(out) == ["BackupTooOld at 6h6m", "ServiceDown at 2m"]
    # a test file that cannot load its rules fails as a whole, its error once per test group
    error = '/rules-check/rules/host.yml: 22:15: group "host", rule 2: could not parse expression'
    broken = f"Unit Testing:  /rules-check/tests/host.test.yml\n\n  FAILED:\n{error}\n{error}\n"
    assert ci.parse_promtool_test_failures(broken) == [error]


def test_new_secrets_ignores_audited_false_positives_but_not_real_ones():
    scan = {
        "results": {
            "a.py": [{"type": "Secret Keyword", "hashed_secret": "h1", "line_number": 9}],
            "b.py": [{"type": "AWS Access Key", "hashed_secret": "h2", "line_number": 2}],
            "c.py": [{"type": "Secret Keyword", "hashed_secret": "h3", "line_number": 5}],
        }
    }
    baseline = {
        "results": {
            # audited at another line: still the same finding
            "a.py": [{"type": "Secret Keyword", "hashed_secret": "h1", "line_number": 3,
                      "is_secret": False}],
            "c.py": [{"type": "Secret Keyword", "hashed_secret": "h3", "line_number": 5,
                      "is_secret": True}],
        }
    }  # fmt: skip
    assert ci.new_secrets(scan, baseline) == ["b.py:2 AWS Access Key", "c.py:5 Secret Keyword"]
    assert ci.new_secrets(scan, None) == [
        "a.py:9 Secret Keyword", "b.py:2 AWS Access Key", "c.py:5 Secret Keyword",
    ]  # fmt: skip
    assert ci.new_secrets({"results": {}}, baseline) == []


def test_first_lines_shortens_a_long_list():
    assert ci.first_lines(["a", "b", "c", "d"]) == "a; b (+2 more)"
    assert ci.first_lines(["x" * 100], limit=1, width=10) == "x" * 9 + "…"


def test_failed_checks():
    results = [ci.CheckResult("a", "passed"), ci.CheckResult("b", "failed", "why"),
               ci.CheckResult("c", "warning"), ci.CheckResult("d", "skipped")]  # fmt: skip
    assert ci.failed_checks(results) == ["b"]
    assert results[1].as_row() == {"check": "b", "status": "failed", "detail": "why"}


# --- unit / integration -----------------------------------------------------------------------


def test_pytest_argv_and_service_matrix():
    assert ci.pytest_argv("/v/python", ["tests/unit"], ["-q"]) == (
        "/v/python", "-m", "pytest", "tests/unit", "-q",
    )  # fmt: skip
    dirs = ["services/auth/tests", "services/lib/tests", "services/auth/migrations"]
    assert ci.service_test_dirs(dirs) == {
        "auth": "services/auth/tests",
        "lib": "services/lib/tests",
    }


# --- summaries --------------------------------------------------------------------------------


def test_deploy_summary_markdown_of_a_remote_deploy():
    doc = {
        "env": "staging", "action": "deploy", "release": "20250101-abc", "outcome": "deployed",
        "previous": "20241231-def", "changed": {"auth": "new image", "chat": "config"},
        "smoke": [{"check": "health", "result": "pass", "detail": "200", "ms": "12"},
                  {"check": "login", "result": "FAIL", "detail": "a|b", "ms": "30"}],
        "dry_run": False,
    }  # fmt: skip
    assert summaries.deploy_summary_markdown(doc, "deploy.json") == (
        "### Deploy of `staging`: deployed\n\n"
        "- release: `20250101-abc`\n- previous: `20241231-def`\n\n"
        "| service | change |\n|---|---|\n| auth | new image |\n| chat | config |\n\n"
        "smoke checks: 1 passed, 1 failed\n\n"
        "| check | result | detail | ms |\n|---|---|---|---|\n"
        "| health | pass | 200 | 12 |\n| login | FAIL | a\\|b | 30 |\n"
    )


def test_deploy_summary_without_a_result_says_so():
    text = summaries.deploy_summary_markdown(None, "deploy.json")
    assert text.startswith("### Deploy: no result\n")
    assert "`deploy.json` holds no result" in text


def test_deploy_summary_of_an_unchanged_rollback():
    doc = {"env": "production", "action": "rollback", "outcome": "unchanged", "changed": {}}
    assert summaries.deploy_summary_markdown(doc, "r.json") == (
        "### Rollback of `production`: unchanged\n\n\nnothing changed\n"
    )


def test_parse_json_document_after_command_lines():
    assert summaries.parse_json_document('[local] $ docker push x\n{\n  "env": "staging"\n}\n') == {
        "env": "staging"
    }
    assert summaries.parse_json_document('{"a": 1}') == {"a": 1}
    assert summaries.parse_json_document("") is None
    assert summaries.parse_json_document("error: no\n") is None


def test_job_results_and_pipeline_text():
    needs = {"unit": {"result": "success", "outputs": {}}, "scan": {"result": "failure"},
             "images": {"result": "skipped"}}  # fmt: skip
    results = summaries.job_results(needs)
    assert results == {"images": "skipped", "scan": "failure", "unit": "success"}
    assert summaries.pipeline_text("pipeline", "main", "https://gh/run/1", results) == (
        ":x: pipeline on main: failed in scan\n> https://gh/run/1"
    )
    assert summaries.pipeline_text("pipeline", "v1.2.0", "", {"a": "success"}) == (
        ":white_check_mark: pipeline on v1.2.0: passed"
    )
    assert summaries.pipeline_text("p", "main", "", {"a": "cancelled"}) == (
        ":warning: p on main: cancelled (a)"
    )


def test_private_key_text_normalises_and_refuses_garbage():
    key = KEY_HEADER + "\r\nMIIEabc+/=\r\n-----END RSA " + "PRIVATE KEY-----\r\n\r\n"
    assert summaries.private_key_text(key) == (
        KEY_HEADER + "\nMIIEabc+/=\n-----END RSA " + "PRIVATE KEY-----\n"
    )
    with pytest.raises(ValueError, match="not a PEM/OpenSSH private key"):
        summaries.private_key_text("ssh-ed25519 AAAA... me@host")
    with pytest.raises(ValueError, match="no END line"):
        summaries.private_key_text(KEY_HEADER + "\nMIIEabc\n")


# --- image scan -------------------------------------------------------------------------------


def test_scan_argv():
    assert imagescan.image_inspect_argv("a:1") == ("docker", "image", "inspect", "a:1")
    assert imagescan.image_history_argv("a:1") == (
        "docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", "a:1",
    )  # fmt: skip
    assert imagescan.image_save_argv(["a:1", "b:2"], Path("/t/x.tar")) == (
        "docker", "save", "--output", "/t/x.tar", "a:1", "b:2",
    )  # fmt: skip
    assert imagescan.pip_audit_argv(Path("/t/req.txt")) == (
        "pip-audit", "--no-deps", "--disable-pip", "--progress-spinner", "off", "--format",
        "json", "--vulnerability-service", "pypi", "--requirement", "/t/req.txt",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("user", "root"),
    [("", True), ("root", True), ("0", True), ("0:0", True), ("root:app", True),
     ("1001:1001", False), ("app", False), ("65534", False)],
)  # fmt: skip
def test_runs_as_root(user: str, root: bool):
    assert imagescan.runs_as_root(user) is root


def test_image_metadata_readers():
    data = imagescan.parse_image_inspect(
        json.dumps([{"Config": {"User": "1001:1001", "Env": ["A=1"]}}])
    )
    assert imagescan.image_user(data) == "1001:1001"
    assert imagescan.image_env(data) == ["A=1"]
    assert imagescan.image_user({"Config": {"User": None}}) == ""


def test_env_findings_by_name_shape_and_known_value():
    env = [
        "PATH=/usr/bin", "DB_PASSWORD=hunter2hunter2", "EMPTY_TOKEN=", f"X={FAKE_AWS_KEY}",
        "NOTE=contains the-known-secret-value", "GPG_KEY=A035C8C19219BA821ECEA86B64E628F8D684696D",
    ]  # fmt: skip
    assert imagescan.env_findings(env, ["the-known-secret-value"]) == [
        "ENV DB_PASSWORD has a value",
        "ENV X: AWS access key id",
        "ENV NOTE: a secret value of the environment's config",
    ]


def test_history_findings():
    history = f'/bin/sh -c #(nop) CMD ["x"]\n|1 KEY={FAKE_AWS_KEY} /bin/sh -c true\n'
    assert imagescan.history_findings(history, []) == ["history step 2: AWS access key id"]


def test_secret_findings_shapes():
    assert imagescan.secret_findings(KEY_HEADER.encode() + b"\nabc", []) == ["private key"]
    assert imagescan.secret_findings(b"AKIA is a prefix", []) == []
    assert imagescan.secret_findings(b"short", ["short"]) == []  # too short to report


def _tar(entries: dict[str, bytes | None]) -> bytes:
    """A tar archive: path -> content, or None for a folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _docker_save(path: Path, images: dict[str, list[str]], layers: dict[str, bytes]) -> Path:
    manifest = [{"RepoTags": [tag], "Layers": names} for tag, names in images.items()]
    entries: dict[str, bytes | None] = {"manifest.json": json.dumps(manifest).encode()}
    entries.update(layers)
    path.write_bytes(_tar(entries))
    return path


def test_scan_image_archive_finds_deleted_secrets_and_computes_the_final_files(tmp_path: Path):
    base = _tar({
        "usr/": None, "usr/bin/": None, "usr/bin/pip3": b"#!", "usr/bin/apt-get": b"\x7fELF",
        "opt/venv/lib/python3.11/site-packages/aiohttp-3.9.5.dist-info/METADATA": b"x",
        "opt/venv/lib/python3.11/site-packages/pip/__init__.py": b"",
        "etc/app/": None, "etc/app/old.conf": b"x",
    })  # fmt: skip
    leak = _tar({"root/.aws/credentials": f"key = {FAKE_AWS_KEY}\n".encode()})
    cleanup = _tar({
        "root/.aws/.wh.credentials": b"", "usr/bin/.wh.pip3": b"",
        "opt/venv/lib/python3.11/site-packages/.wh.pip": b"", "etc/app/.wh..wh..opq": b"",
        "etc/app/new.conf": b"y",
    })  # fmt: skip
    archive = _docker_save(
        tmp_path / "images.tar",
        {"app:1": ["l1/layer.tar", "l2/layer.tar", "l3/layer.tar"], "base:1": ["l1/layer.tar"]},
        {"l1/layer.tar": base, "l2/layer.tar": leak, "l3/layer.tar": cleanup},
    )
    app, base_scan = imagescan.scan_image_archive(archive, known=[])
    assert app.tags == ("app:1",)
    assert app.secrets == ["/root/.aws/credentials (layer 2): AWS access key id"]
    assert "root/.aws/credentials" not in app.files  # deleted later, but it still ships
    assert "etc/app/new.conf" in app.files and "etc/app/old.conf" not in app.files
    assert imagescan.forbidden_tools(app.files) == ([], ["/usr/bin/apt-get"])
    assert imagescan.forbidden_tools(base_scan.files) == (
        ["/opt/venv/lib/python3.11/site-packages/pip", "/usr/bin/pip3"],
        ["/usr/bin/apt-get"],
    )
    assert imagescan.installed_distributions(app.files) == [("aiohttp", "3.9.5")]
    assert base_scan.secrets == []


def test_forbidden_tools_by_name():
    files = ["usr/bin/gcc-12", "usr/bin/make", "usr/local/bin/pip3.11", "usr/bin/python3",
             "usr/lib/python3/dist-packages/setuptools/__init__.py", "usr/share/doc/make/x",
             "usr/bin/dpkg"]  # fmt: skip
    assert imagescan.forbidden_tools(files) == (
        ["/usr/bin/gcc-12", "/usr/bin/make", "/usr/lib/python3/dist-packages/setuptools",
         "/usr/local/bin/pip3.11"],
        ["/usr/bin/dpkg"],
    )  # fmt: skip


def test_match_scans_by_tag_then_by_order():
    a = imagescan.ImageScan(("a:1",), [], frozenset())
    b = imagescan.ImageScan(("b:latest",), [], frozenset())
    assert imagescan.match_scans(["b", "a:1"], [a, b]) == {"b": b, "a:1": a}
    untagged = imagescan.ImageScan((), [], frozenset())
    assert imagescan.match_scans(["sha256:abc"], [untagged]) == {"sha256:abc": untagged}
    with pytest.raises(ValueError, match="c:1 is not in the saved archive"):
        imagescan.match_scans(["c:1"], [a, b])


def test_requirements_and_pip_audit_parser():
    assert imagescan.requirements_text([("aiohttp", "3.9.5"), ("yarl", "1.9")]) == (
        "aiohttp==3.9.5\nyarl==1.9\n"
    )
    out = json.dumps({"dependencies": [
        {"name": "aiohttp", "version": "3.9.5", "vulns": [{"id": "GHSA-1"}, {"id": "PYSEC-2"}]},
        {"name": "yarl", "version": "1.9", "vulns": []},
    ]})  # fmt: skip
    assert imagescan.parse_pip_audit(out) == ["aiohttp 3.9.5: GHSA-1", "aiohttp 3.9.5: PYSEC-2"]


def test_published_test_keys_of_packages_are_tolerated_not_hidden():
    findings = [
        "/opt/venv/lib/python3.11/site-packages/aiosmtpd/tests/certs/server.key (layer 4): x",
        "/app/deploy.key (layer 5): private key",
    ]
    assert imagescan.split_public_test_keys(findings) == ([findings[1]], [findings[0]])


def test_zizmor_audits_only_the_workflows_as_an_auditor():
    files = [".github/workflows/pipeline.yml", ".github/dependabot.yml", "a.yml",
             ".github/workflows/rollback.yaml"]  # fmt: skip
    assert ci.workflows(files) == [".github/workflows/pipeline.yml",
                                   ".github/workflows/rollback.yaml"]  # fmt: skip
    argv = ("zizmor", "--offline", "--no-progress", "--persona=auditor", "--format=json", "w.yml")
    assert ci.zizmor_argv(["w.yml"]) == argv


def test_zizmor_findings_read_from_json_most_severe_first():
    def finding(ident, severity, row):
        return {"ident": ident, "desc": f"{ident} found",
                "determinations": {"severity": severity},
                "locations": [{
                    "symbolic": {"key": {"Local": {"verbatim_path": "w.yml"}}},
                    "concrete": {"location": {"start_point": {"row": row}}}}]}  # fmt: skip

    out = json.dumps([finding("anonymous-definition", "Informational", 4),
                      finding("secrets-outside-env", "Medium", 9)])  # fmt: skip
    assert ci.parse_zizmor(out) == [
        "medium secrets-outside-env: secrets-outside-env found (w.yml:10)",
        "informational anonymous-definition: anonymous-definition found (w.yml:5)",
    ]
    assert ci.parse_zizmor("") == []
