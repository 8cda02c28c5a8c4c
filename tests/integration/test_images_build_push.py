"""`inv images.build` and `inv images.push` against the real engine and a real registry."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def inv(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(REPO), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=1200,
    )


def remove_repository(repository: str) -> None:
    """Every tag of the repository's service images, so test builds do not pile up."""
    refs = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}",
         "--filter", f"reference={repository}/*"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    if refs:
        subprocess.run(["docker", "rmi", *refs], capture_output=True, check=False)


def images_file(repository: str = "mysaaschat") -> dict[str, dict[str, object]]:
    from deploysuite.images.build import images_file as path_of

    return json.loads(path_of(REPO, repository).read_text())


def test_second_build_reuses_every_image(base_images):
    first = inv("images.build", "--service", "auth,mailsink")
    assert first.returncode == 0, first.stderr[-3000:]
    ids = {k: v["image_id"] for k, v in images_file().items() if k in ("auth", "mailsink")}
    again = inv("images.build", "--service", "auth,mailsink", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    rows = json.loads(again.stdout)["rows"]
    assert {r["service"]: r["state"] for r in rows} == {"auth": "reused", "mailsink": "reused"}
    assert {k: v["image_id"] for k, v in images_file().items() if k in ids} == ids


def test_service_image_runs_as_1001_with_healthcheck_and_no_installer(base_images):
    result = inv("images.build", "--service", "chat")
    assert result.returncode == 0, result.stderr[-3000:]
    ref = str(images_file()["chat"]["ref"])
    inspect = json.loads(
        subprocess.run(["docker", "image", "inspect", ref], capture_output=True, check=True).stdout
    )[0]["Config"]
    assert inspect["User"] == "1001:1001"
    assert "/health/live" in " ".join(inspect["Healthcheck"]["Test"])
    probe = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "sh", ref, "-c",
         "id -u; python3 -m pip --version >/dev/null 2>&1 && echo pip || echo no-pip;"
         " command -v gcc cc || echo no-compiler"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert probe == ["1001", "no-pip", "no-compiler"]


def layer_texts(ref: str, workdir: Path) -> list[tuple[str, bytes]]:
    """Every file of every layer, plus the image config, as (name, bytes)."""
    archive = workdir / "image.tar"
    subprocess.run(["docker", "save", "-o", str(archive), ref], check=True)
    out: list[tuple[str, bytes]] = []
    with tarfile.open(archive) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            data = outer.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.endswith("layer.tar"):
                layer = workdir / "layer.tar"
                layer.write_bytes(data)
                with tarfile.open(layer) as inner:
                    for file in inner.getmembers():
                        if file.isfile():
                            out.append(
                                (f"{member.name}:{file.name}", inner.extractfile(file).read())
                            )  # type: ignore[union-attr]
            else:
                out.append((member.name, data))  # image config and manifest
    return out


def test_no_secret_value_in_any_layer_or_the_image_config(base_images, tmp_path: Path):
    values = {name: secrets.token_urlsafe(32) for name in (
        "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "AUTH_TOKEN_SECRET", "BILLING_WEBHOOK_SECRET",
        "REGISTRY_PASSWORD",
    )}  # fmt: skip
    # Decoys where careless builds pick secrets up: env files in the service folder, and the
    # builder's own environment.
    decoys = [REPO / "services/auth/.env", REPO / "services/auth/env/local.env"]
    local_secrets = REPO / "environments/local/secrets.env"
    for path in decoys:
        path.parent.mkdir(exist_ok=True)
        path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    try:
        result = inv(
            "images.build",
            "--service",
            "auth",
            "--force",
            "--tag",
            "secretscan",
            # a repository of its own: the forced build must not move the stack's tags
            "--set",
            "IMAGE_REPOSITORY=mysaaschat-secretscan",
            env=values,
        )
    finally:
        for path in decoys:
            path.unlink()
        if not any((REPO / "services/auth/env").iterdir()):
            (REPO / "services/auth/env").rmdir()
    assert result.returncode == 0, result.stderr[-3000:]
    needles = {k: v.encode() for k, v in values.items()}
    if local_secrets.exists():
        for line in local_secrets.read_text().splitlines():
            key, _, value = line.partition("=")
            if value and not key.startswith("#"):
                needles[key] = value.encode()
    files = layer_texts("mysaaschat-secretscan/auth:secretscan", tmp_path)
    assert len(files) > 1000  # the scan really saw the image's file system
    leaks = [(name, key) for name, data in files for key, value in needles.items() if value in data]
    assert leaks == []
    remove_repository("mysaaschat-secretscan")


def test_push_records_the_registry_digest(base_images, registry):
    repository = f"{registry.host}/mysaaschat"
    creds = {"REGISTRY_USERNAME": registry.username, "REGISTRY_PASSWORD": registry.password}
    built = inv("images.build", "--service", "billing", "--set", f"IMAGE_REPOSITORY={repository}")
    assert built.returncode == 0, built.stderr[-3000:]
    pushed = inv(
        "images.push", "--service", "billing", "--set", f"IMAGE_REPOSITORY={repository}", env=creds
    )
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    entry = images_file(repository)["billing"]
    tag = str(entry["ref"]).rsplit(":", 1)[1]
    assert entry["digest"] == registry.manifest_digest("mysaaschat/billing", tag)
    assert entry["pinned"] == f"{repository}/billing@{entry['digest']}"
    assert registry.password not in pushed.stdout + pushed.stderr
    docker_config = Path.home() / ".docker/config.json"
    assert not docker_config.exists() or registry.password not in docker_config.read_text()


def test_wrong_password_is_one_clear_line(base_images, registry):
    repository = f"{registry.host}/mysaaschat"
    built = inv("images.build", "--service", "mailsink", "--set", f"IMAGE_REPOSITORY={repository}")
    assert built.returncode == 0, built.stderr[-3000:]
    wrong = "wrong-" + secrets.token_urlsafe(16)
    result = inv(
        "images.push", "--service", "mailsink", "--set", f"IMAGE_REPOSITORY={repository}",
        env={"REGISTRY_USERNAME": registry.username, "REGISTRY_PASSWORD": wrong},
    )  # fmt: skip
    assert result.returncode == 6
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: registry {registry.host} refused the credentials")
    assert "REGISTRY_PASSWORD" in last
    assert wrong not in result.stdout + result.stderr


def test_unreachable_registry_is_one_clear_line(base_images):
    from conftest import free_port

    repository = f"127.0.0.1:{free_port()}/mysaaschat"
    built = inv("images.build", "--service", "mailsink", "--set", f"IMAGE_REPOSITORY={repository}")
    assert built.returncode == 0, built.stderr[-3000:]
    result = inv("images.push", "--service", "mailsink", "--set", f"IMAGE_REPOSITORY={repository}")
    remove_repository(repository)
    assert result.returncode == 6
    assert "is not reachable" in result.stderr.strip().splitlines()[-1]
