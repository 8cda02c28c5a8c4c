import shutil
from pathlib import Path

import pytest

from deploysuite.images.registry import (
    PushResult,
    RegistryError,
    parse_push_stream,
    push_error,
    registry_host,
)
from deploysuite.images.services import (
    SERVICES,
    build_argv,
    find_service,
    image_ref,
    source_hash,
    version_tag,
)

REPO = Path(__file__).resolve().parents[2]


def test_version_tag_marks_dirty_trees():
    sha = "52d428d996b2f0e1a9c3d4e5f6a7b8c9d0e1f2a3"
    assert version_tag(sha, dirty=False) == "52d428d996b2"
    assert version_tag(sha, dirty=True) == "52d428d996b2-dirty"


def test_image_ref():
    assert (
        image_ref("127.0.0.1:5000/mysaaschat/", "auth", "abc")
        == "127.0.0.1:5000/mysaaschat/auth:abc"
    )


def test_every_service_folder_has_an_image_and_a_package():
    for service in SERVICES:
        if service.name == "backup":  # the suite's own agent, on PostgreSQL's image
            assert (REPO / service.dockerfile).exists() and service.base == "POSTGRES_IMAGE"
            assert (REPO / (service.package.replace(".", "/") + ".py")).exists()
            continue
        package = REPO / "services" / service.name / service.package
        assert (package / "__main__.py").exists(), service
    assert find_service("mailsink").port == 8025 and find_service("nope") is None


def test_build_argv_is_exact():
    auth = find_service("auth")
    argv = build_argv(Path("/r"), auth, ["m/auth:t"], "mysaaschat/python:bookworm", "abc")
    assert argv == (
        "docker", "build", "--tag", "m/auth:t", "--file", "/r/docker/service/Dockerfile",
        "--target", "runner",
        "--build-arg", "PACKAGE=auth_service", "--build-arg", "PORT=8000",
        "--build-arg", "PYTHON_IMAGE=mysaaschat/python:bookworm", "--build-arg", "SERVICE=auth",
        "--label", "org.mysaaschat.source=abc", "/r",
    )  # fmt: skip
    forced = build_argv(Path("/r"), auth, ["m/auth:t"], "p", "abc", no_cache=True)
    assert forced[:3] == ("docker", "build", "--no-cache")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for part in ("services/auth", "services/lib/saaschat", "docker/service"):
        shutil.copytree(REPO / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "services/requirements.txt", tmp_path / "services/requirements.txt")
    return tmp_path


def test_source_hash_follows_what_enters_the_image(tree: Path):
    auth = find_service("auth")
    first = source_hash(tree, auth, "sha256:base")
    assert source_hash(tree, auth, "sha256:base") == first
    # tests, env files and caches never reach the image: they do not change the hash
    (tree / "services/auth/tests/test_extra.py").write_text("x = 1\n")
    (tree / "services/auth/.env").write_text("A=1\n")
    assert source_hash(tree, auth, "sha256:base") == first
    # code, library, requirements, recipe and base image do
    changes = [
        lambda: (tree / "services/auth/auth_service/extra.py").write_text("y = 2\n"),
        lambda: (tree / "services/lib/saaschat/extra.py").write_text("z = 3\n"),
        lambda: (tree / "services/requirements.txt").write_text("aiohttp==0\n"),
        lambda: (tree / "docker/service/Dockerfile").write_text("FROM scratch\n"),
    ]
    seen = {first}
    for change in changes:
        change()
        seen.add(source_hash(tree, auth, "sha256:base"))
    seen.add(source_hash(tree, auth, "sha256:other-base"))
    assert len(seen) == len(changes) + 2


@pytest.mark.parametrize(
    ("repository", "host"),
    [
        ("127.0.0.1:5000/mysaaschat", "127.0.0.1:5000"),
        ("ghcr.io/acme/mysaaschat", "ghcr.io"),
        ("localhost/x", "localhost"),
        ("mysaaschat", None),
        ("acme/mysaaschat", None),
    ],
)
def test_registry_host(repository: str, host: str | None):
    assert registry_host(repository) == host


def test_push_stream_yields_the_digest():
    progress: list[str] = []
    events = [
        {"status": "The push refers to repository [127.0.0.1:5000/m/auth]"},
        {"status": "Pushed", "id": "abc123"},
        {"status": "Layer already exists", "id": "def456"},
        {"status": "t: digest: sha256:ff size: 1234"},
        {"aux": {"Tag": "t", "Digest": "sha256:" + "f" * 64, "Size": 1234}},
    ]
    result = parse_push_stream("127.0.0.1:5000/m/auth:t", events, progress.append)
    assert result == PushResult("127.0.0.1:5000/m/auth:t", "sha256:" + "f" * 64, 1234)
    assert result.pinned == "127.0.0.1:5000/m/auth@sha256:" + "f" * 64
    assert progress == ["abc123: Pushed", "def456: Layer already exists"]


def test_push_stream_error_and_missing_digest_fail():
    with pytest.raises(RegistryError, match="refused the credentials"):
        parse_push_stream("r:5000/a:t", [{"error": "unauthorized: authentication required"}], print)
    with pytest.raises(RegistryError, match="without a digest"):
        parse_push_stream("r:5000/a:t", [{"status": "Pushed", "id": "x"}], print)


def test_push_error_kinds():
    assert "not reachable" in push_error("127.0.0.1:1/a:t", "connection refused").what
    other = push_error("127.0.0.1:1/a:t", "manifest invalid")
    assert other.what == "push of 127.0.0.1:1/a:t failed: manifest invalid"


def test_image_listing_parser_and_sizes():
    from deploysuite.images.build import LocalImage, parse_image_listing, parse_size, with_tag

    text = (
        "mysaaschat/auth:abc sha256:" + "1" * 64 + " 196MB\n"
        "<none>:<none> sha256:" + "2" * 64 + " 10kB\n"
        "127.0.0.1:5000/m/auth:src-ff sha256:" + "3" * 64 + " 1.5GB\n"
    )
    listing = parse_image_listing(text)
    assert listing == {
        "mysaaschat/auth:abc": LocalImage("sha256:" + "1" * 64, 196_000_000),
        "127.0.0.1:5000/m/auth:src-ff": LocalImage("sha256:" + "3" * 64, 1_500_000_000),
    }
    assert parse_size("512kB") == 512_000 and parse_size("?") == 0
    assert with_tag("127.0.0.1:5000/m/auth") == "127.0.0.1:5000/m/auth:latest"
    assert with_tag("postgres:15") == "postgres:15"
