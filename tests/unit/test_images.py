from pathlib import Path

from deploysuite.images.recipes import (
    ROOTFS_IMAGE,
    base_images,
    hash_tree,
    mirror_from_apt_sources,
    plan_bootstrap,
    rootfs_recipe,
)


def make_recipes(root: Path) -> Path:
    for name in ("python", "postgres"):
        folder = root / "base" / name
        folder.mkdir(parents=True)
        (folder / "Dockerfile").write_text(f"FROM scratch\n# {name}\n")
    return root


def test_hash_tree_changes_with_content_name_and_mode(tmp_path: Path):
    (tmp_path / "a").write_text("1")
    first = hash_tree(tmp_path)
    assert hash_tree(tmp_path) == first
    (tmp_path / "a").write_text("2")
    second = hash_tree(tmp_path)
    assert second != first
    (tmp_path / "a").chmod(0o755)
    assert hash_tree(tmp_path) != second
    (tmp_path / "a").rename(tmp_path / "b")
    assert hash_tree(tmp_path) not in (first, second)


def test_plan_builds_only_changed_recipes(tmp_path: Path):
    images = base_images(make_recipes(tmp_path), ("python", "postgres"))
    python, postgres = images
    labels = {ROOTFS_IMAGE: rootfs_recipe(), python.ref: python.recipe, postgres.ref: "old"}
    plan = plan_bootstrap(images, labels)
    assert plan.build == (postgres,) and plan.cached == (python,)
    assert not plan.make_rootfs


def test_plan_everything_cached_is_nothing_to_do(tmp_path: Path):
    images = base_images(make_recipes(tmp_path), ("python", "postgres"))
    labels = {i.ref: i.recipe for i in images}
    assert plan_bootstrap(images, labels).nothing_to_do
    # the root filesystem is not needed when nothing is built, even if it is gone
    assert not plan_bootstrap(images, labels).make_rootfs


def test_plan_missing_images_and_rootfs(tmp_path: Path):
    images = base_images(make_recipes(tmp_path), ("python", "postgres"))
    plan = plan_bootstrap(images, {})
    assert plan.make_rootfs and plan.build == tuple(images)
    forced = plan_bootstrap(images, {i.ref: i.recipe for i in images}, force=True)
    assert forced.make_rootfs and forced.build == tuple(images)


def test_recipe_changes_when_dockerfile_changes(tmp_path: Path):
    root = make_recipes(tmp_path)
    before = {i.name: i.recipe for i in base_images(root, ("python", "postgres"))}
    (root / "base" / "postgres" / "Dockerfile").write_text("FROM scratch\n# changed\n")
    after = {i.name: i.recipe for i in base_images(root, ("python", "postgres"))}
    assert after["python"] == before["python"] and after["postgres"] != before["postgres"]


DEB822 = """\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_mirror_from_deb822_sources():
    assert mirror_from_apt_sources(DEB822) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources():
    text = "# comment\ndeb [arch=amd64] http://m.example/debian bookworm main\n"
    assert mirror_from_apt_sources(text) == "http://m.example/debian"
    assert mirror_from_apt_sources("deb http://m.example/debian bullseye main\n") is None


def test_disk_space_check_refuses_before_any_work(tmp_path: Path):
    import pytest

    from deploysuite.core.errors import ResourceError
    from deploysuite.images.bootstrap import ensure_disk_space

    with pytest.raises(ResourceError, match="the bootstrap needs"):
        ensure_disk_space([tmp_path], needed=10**18)
    ensure_disk_space([tmp_path], needed=1)
