"""Third-party images pinned by digest at release time (deploy/pins.py): which variables, how a
reference becomes `repo@sha256:...`, and what staging refuses. The registry is a function
argument here; tests/integration/test_remote_deploy.py resolves against a real registry."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from deploysuite.core.errors import ConfigError
from deploysuite.deploy import pins
from tests.unit.envtree import REPO, config_in

DIGEST = "sha256:" + "ab" * 32
COMPOSE = (REPO / "docker-compose.prod.yml").read_text()


def test_the_third_party_images_of_the_running_profiles_only():
    found = pins.third_party_vars(COMPOSE, ("backup",))
    assert {"POSTGRES_IMAGE", "REDIS_IMAGE", "RABBITMQ_IMAGE", "NGINX_IMAGE"} <= set(found)
    assert found["POSTGRES_IMAGE"] == "postgres"
    assert "AUTH_IMAGE" not in found and "BACKUP_IMAGE" not in found  # the suite's own
    assert "MONGODB_IMAGE" not in found  # profile `unavailable` is not running
    assert "ALERTMANAGER_IMAGE" not in found
    assert "ALERTMANAGER_IMAGE" in pins.third_party_vars(COMPOSE, ("monitoring",))


@pytest.mark.parametrize(
    ("ref", "repository"),
    [("postgres:15-bookworm", "postgres"),
     ("127.0.0.1:5000/base/redis:7", "127.0.0.1:5000/base/redis"),
     ("127.0.0.1:5000/base/redis", "127.0.0.1:5000/base/redis"),
     ("quay.io/a/b:v1@sha256:00", "quay.io/a/b")],
)  # fmt: skip
def test_a_reference_keeps_its_repository_and_loses_its_tag(ref: str, repository: str):
    assert pins.repository(ref) == repository
    assert pins.pinned_ref(ref, DIGEST) == f"{repository}@{DIGEST}"


def test_every_tag_is_resolved_and_a_digest_kept_as_it_is(tmp_path: Path):
    asked = []

    def registry(ref, auth):
        asked.append((ref, auth))
        return DIGEST

    login = {"REGISTRY_USERNAME": "ci", "REGISTRY_PASSWORD": secrets.token_hex(8)}
    config = config_in(tmp_path, "staging", POSTGRES_IMAGE=f"postgres@{DIGEST}",
                       REDIS_IMAGE="reg.example:5000/redis:7",
                       IMAGE_REPOSITORY="reg.example:5000/mysaaschat",
                       **login)  # fmt: skip
    pinned, kept = pins.resolve(config, COMPOSE, registry)
    assert kept == {}
    assert pinned["POSTGRES_IMAGE"] == f"postgres@{DIGEST}"  # given by digest: not asked
    assert pinned["REDIS_IMAGE"] == f"reg.example:5000/redis@{DIGEST}"
    assert pinned["NGINX_IMAGE"].endswith(f"@{DIGEST}")
    by_ref = dict(asked)
    assert "postgres@" + DIGEST not in by_ref
    # the suite's registry login goes to its own registry only, never to Docker Hub
    assert by_ref["reg.example:5000/redis:7"] == {
        "username": "ci", "password": login["REGISTRY_PASSWORD"]}  # fmt: skip
    assert by_ref[config.get("NGINX_IMAGE")] is None
    pinned_config = pins.with_pins(config, pinned)
    assert pinned_config.get("REDIS_IMAGE") == f"reg.example:5000/redis@{DIGEST}"
    assert pinned_config.settings["REDIS_IMAGE"].layer == "pinned"


def no_registry(ref, auth):
    raise RuntimeError(f"500 Server Error: lookup for {ref}: no such host\nmore")


def test_staging_refuses_a_tag_no_registry_answers_for(tmp_path: Path):
    config = config_in(tmp_path, "staging")
    with pytest.raises(ConfigError) as caught:
        pins.resolve(config, COMPOSE, no_registry)
    line = caught.value.one_line()
    assert "could not be resolved to a digest: 500 Server Error" in line and "\n" not in line
    assert "=REPOSITORY@sha256:DIGEST" in line


def test_other_environments_keep_the_tag_and_say_why(tmp_path: Path):
    pinned, kept = pins.resolve(config_in(tmp_path, "loopback"), COMPOSE, no_registry)
    assert pinned == {}
    assert "POSTGRES_IMAGE" in kept and "no such host" in kept["POSTGRES_IMAGE"]
