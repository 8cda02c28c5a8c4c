from pathlib import Path

from deploysuite.core import commands

FILES = (Path("/srv/app/docker-compose.prod.yml"),)


def test_compose_up_waits_and_removes_orphans():
    assert commands.compose_up("mysaaschat", FILES, wait_timeout=120) == (
        "docker", "compose", "--project-name", "mysaaschat",
        "--file", "/srv/app/docker-compose.prod.yml",
        "up", "--detach", "--wait", "--wait-timeout", "120", "--remove-orphans",
    )  # fmt: skip


def test_compose_up_with_profiles_and_services():
    assert commands.compose_up(
        "p", FILES, services=["chat"], wait_timeout=5, profiles=["unavailable"]
    ) == (
        "docker", "compose", "--project-name", "p", "--file", "/srv/app/docker-compose.prod.yml",
        "--profile", "unavailable",
        "up", "--detach", "--wait", "--wait-timeout", "5", "--remove-orphans", "chat",
    )  # fmt: skip


def test_compose_queries():
    base = ("docker", "compose", "--project-name", "p", "--file", str(FILES[0]))
    assert commands.compose_ps("p", FILES) == (*base, "ps", "--all", "--format", "json")
    assert commands.compose_config_hashes("p", FILES) == (*base, "config", "--hash", "*")
    assert commands.compose_logs("p", FILES, ["chat"], follow=True, tail=5) == (
        *base, "logs", "--no-color", "--tail", "5", "--follow", "chat",
    )  # fmt: skip


def test_docker_build_is_deterministic_in_flag_order():
    argv = commands.docker_build(
        Path("docker/base/postgres"),
        ["mysaaschat/postgres:bookworm"],
        build_args={"Z": "1", "DEBIAN_IMAGE": "mysaaschat/debian:bookworm"},
        labels={"org.mysaaschat.recipe": "abc"},
        target="runner",
    )
    assert argv == (
        "docker", "build", "--tag", "mysaaschat/postgres:bookworm", "--target", "runner",
        "--build-arg", "DEBIAN_IMAGE=mysaaschat/debian:bookworm", "--build-arg", "Z=1",
        "--label", "org.mysaaschat.recipe=abc", "docker/base/postgres",
    )  # fmt: skip


def test_rootfs_commands():
    assert commands.debootstrap("bookworm", Path("/tmp/r"), "http://mirror/debian") == (
        "debootstrap", "--variant=minbase", "bookworm", "/tmp/r", "http://mirror/debian",
    )  # fmt: skip
    assert commands.tar_directory(Path("/tmp/r")) == (
        "tar", "--numeric-owner", "-C", "/tmp/r", "-c", ".",
    )  # fmt: skip
    assert commands.docker_import("img:tag", {"a": "1"}) == (
        "docker", "import", "--change", "LABEL a=1", "-", "img:tag",
    )  # fmt: skip


def test_image_label_query():
    assert commands.docker_image_label("i:t", "org.x") == (
        "docker", "image", "inspect", "--format", '{{index .Config.Labels "org.x"}}', "i:t",
    )  # fmt: skip


def test_rootfs_cache_cleanup_stays_inside_the_rootfs():
    assert commands.clean_rootfs_caches(Path("/b/rootfs")) == (
        "find", "/b/rootfs/var/lib/apt/lists", "/b/rootfs/var/cache/apt",
        "-mindepth", "1", "-delete",
    )  # fmt: skip


def test_secret_files_are_handed_over_by_a_container_with_two_capabilities():
    argv = commands.chown_secrets(
        "img:1", "/srv/r", {"secrets/auth/pw": "1001:1001", "secrets/a b/x": "0:0"}
    )
    assert argv[:13] == ("docker", "run", "--rm", "--network", "none", "--user", "0:0",
                         "--cap-drop", "ALL", "--cap-add", "CHOWN", "--cap-add",
                         "DAC_READ_SEARCH")  # fmt: skip
    assert "/srv/r:/s" in argv
    assert argv[-1] == "chown 0:0 /s/'secrets/a b/x' && chown 1001:1001 /s/secrets/auth/pw"
