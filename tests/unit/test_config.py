from pathlib import Path

import pytest

from deploysuite.config.layers import load_config, parse_cli_overrides
from deploysuite.core.errors import ConfigError

SCHEMA = """\
# secret: no | required: - | default: from-default
LAYERED=from-default

# secret: generated | required: all | default: none
TOKEN=

# secret: no | required: - | default: none
UNTOUCHED=
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / ".env.example").write_text(SCHEMA)
    (tmp_path / "environments" / "staging").mkdir(parents=True)
    (tmp_path / "environments" / "staging" / "config.env").write_text("")
    return tmp_path


def layered(tree: Path, upto: int, **kw):
    """Write the LAYERED variable into the first `upto` file layers, then load."""
    files = [
        tree / ".env",
        tree / "environments" / "staging" / "config.env",
        tree / "environments" / "staging" / "secrets.env",
        tree / "services" / "chat" / "env" / "staging.env",
    ]
    for index, path in enumerate(files[:upto]):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"LAYERED=layer{index + 1}\n")
    return load_config("staging", root=tree, process_env={}, **kw)


def test_precedence_lowest_first(tree: Path):
    assert layered(tree, 0).get("LAYERED") == "from-default"
    assert layered(tree, 1).get("LAYERED") == "layer1"  # root .env
    assert layered(tree, 2).get("LAYERED") == "layer2"  # environment config
    assert layered(tree, 3).get("LAYERED") == "layer3"  # environment secrets
    # the service override applies only when a service is asked for
    assert layered(tree, 4).get("LAYERED") == "layer3"
    assert layered(tree, 4, service="chat").get("LAYERED") == "layer4"
    config = load_config("staging", root=tree, service="chat", process_env={"LAYERED": "process"})
    assert config.get("LAYERED") == "process"
    config = load_config(
        "staging",
        root=tree,
        service="chat",
        process_env={"LAYERED": "process"},
        cli={"LAYERED": "cli"},
    )
    assert config.get("LAYERED") == "cli"
    assert config.settings["LAYERED"].layer == "cli"


def test_setting_records_where_it_came_from(tree: Path):
    config = layered(tree, 2)
    setting = config.settings["LAYERED"]
    assert setting.layer == "environment"
    assert setting.location.endswith("environments/staging/config.env:1")


def test_process_environment_only_contributes_documented_names(tree: Path):
    config = load_config("staging", root=tree, process_env={"PATH": "/bin", "TOKEN": "t" * 50})
    assert "PATH" not in config.settings
    assert config.get("TOKEN") == "t" * 50
    assert config.settings["TOKEN"].secret is True
    assert config.secret_values() == ["t" * 50]


def test_unknown_environment_suggests_the_closest(tree: Path):
    with pytest.raises(ConfigError) as info:
        load_config("stagin", root=tree, process_env={})
    assert "unknown environment 'stagin'" in info.value.what
    assert "--env=staging" in info.value.fix


def test_malformed_line_is_reported_as_file_and_line(tree: Path):
    (tree / "environments" / "staging" / "config.env").write_text("OK=1\nnot valid\n")
    with pytest.raises(ConfigError, match=r"environments/staging/config.env:2: malformed line"):
        load_config("staging", root=tree, process_env={})
    relaxed = load_config("staging", root=tree, process_env={}, strict=False)
    assert relaxed.files[1].malformed[0].line == 2


def test_missing_environment_config_is_an_unknown_environment(tree: Path):
    (tree / "environments" / "staging" / "config.env").unlink()
    with pytest.raises(ConfigError, match="unknown environment"):
        load_config("staging", root=tree, process_env={})


def test_unreadable_env_file_is_a_clear_error(tree: Path):
    (tree / ".env").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ConfigError, match=r"cannot read env file .*\.env: not UTF-8"):
        load_config("staging", root=tree, process_env={})


def test_require_names_the_variable_and_the_fix(tree: Path):
    config = load_config("staging", root=tree, process_env={})
    with pytest.raises(ConfigError) as info:
        config.require("TOKEN")
    assert info.value.what == "TOKEN is not set for environment 'staging'"
    assert info.value.fix == "inv env.secrets --env=staging"
    with pytest.raises(ConfigError, match="not documented"):
        config.get("NOT_IN_SCHEMA")


def test_cli_overrides_parse_and_reject_unknown_keys(tree: Path):
    assert parse_cli_overrides(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        parse_cli_overrides(["novalue"])
    with pytest.raises(ConfigError) as info:
        load_config("staging", root=tree, process_env={}, cli={"LAYERD": "x"})
    assert info.value.fix == "did you mean LAYERED?"


def test_config_is_frozen(tree: Path):
    config = load_config("staging", root=tree, process_env={})
    with pytest.raises(TypeError):
        config.settings["LAYERED"] = None  # type: ignore[index]


DB_SCHEMA = "# secret: no | required: - | default: auth\nAUTH_DB_NAME=auth\n"


@pytest.mark.parametrize(
    "name",
    ["Auth", "auth; DROP DATABASE x", 'a"b', "1auth", "auth-db", "", "a" * 37],
)
def test_a_database_name_that_is_no_plain_identifier_is_refused_at_load(tree: Path, name):
    (tree / ".env.example").write_text(SCHEMA + "\n" + DB_SCHEMA)
    with pytest.raises(ConfigError) as caught:
        load_config("staging", root=tree, process_env={}, cli={"AUTH_DB_NAME": name})
    assert caught.value.what.startswith("AUTH_DB_NAME=") and "is not a database name" in str(
        caught.value.what
    )
    assert "--set" in caught.value.what  # where the bad value came from


@pytest.mark.parametrize("name", ["auth", "_x", "auth_2024", "a" * 36])
def test_plain_database_names_load(tree: Path, name):
    (tree / ".env.example").write_text(SCHEMA + "\n" + DB_SCHEMA)
    config = load_config("staging", root=tree, process_env={}, cli={"AUTH_DB_NAME": name})
    assert config.get("AUTH_DB_NAME") == name
