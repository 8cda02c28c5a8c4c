import io
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from deploysuite.config.envcheck import (
    check_config,
    estimated_bits,
    is_placeholder,
    is_weak_secret,
    missing_generated_secrets,
    write_secrets,
)
from deploysuite.config.layers import load_config
from deploysuite.core.events import Events

REPO = Path(__file__).resolve().parents[2]
SCHEMA = """\
# secret: generated | required: all | default: none
APP_SECRET=

# secret: external | required: production | default: none
VENDOR_KEY=

# secret: no | required: all | default: none
APP_URL=

# secret: no | required: - | default: 5432
DB_PORT=5432
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / ".env.example").write_text(SCHEMA)
    for env in ("local", "production"):
        (tmp_path / "environments" / env).mkdir(parents=True)
        (tmp_path / "environments" / env / "config.env").write_text("APP_URL=https://x.test\n")
    return tmp_path


def problems(tree: Path, env: str = "local"):
    config = load_config(env, root=tree, process_env={}, strict=False)
    return {(p.key, p.message.split(";")[0].split(" (")[0]) for p in check_config(config)}


def test_clean_environment_has_no_problems(tree: Path):
    (tree / "environments/local/secrets.env").write_text(f"APP_SECRET={secrets.token_hex(32)}\n")
    assert problems(tree) == set()


def test_every_problem_is_listed_at_once(tree: Path):
    (tree / "environments/local/config.env").write_text(
        "APP_URL=changeme\nDB_PROT=5433\nbroken line\nAPP_SECRET=" + "a" * 60 + "\n"
    )
    found = problems(tree)
    assert ("APP_URL", "holds a placeholder value") in found
    assert ("DB_PROT", "unknown variable") in found
    assert ("-", "malformed line") in found
    assert ("APP_SECRET", "secret set in a file that is committed to git") in found
    assert ("APP_SECRET", "weak secret") in found


def test_unknown_key_suggests_closest_and_malformed_has_file_line(tree: Path):
    (tree / "environments/local/config.env").write_text("APP_URL=https://x\nDB_PROT=1\n=bad\n")
    config = load_config("local", root=tree, process_env={}, strict=False)
    by_key = {p.key: p for p in check_config(config)}
    assert by_key["DB_PROT"].message == "unknown variable; did you mean DB_PORT?"
    assert by_key["DB_PROT"].location.endswith("environments/local/config.env:2")
    assert by_key["-"].location.endswith("environments/local/config.env:3")


def test_required_depends_on_environment(tree: Path):
    assert ("VENDOR_KEY", "required but not set") not in problems(tree, "local")
    assert ("VENDOR_KEY", "required but not set") in problems(tree, "production")
    assert ("APP_SECRET", "required but not set") in problems(tree, "local")


@pytest.mark.parametrize(
    "value",
    ["changeme", "CHANGE_ME", "<your-password>", "xxx", "todo", "your-api-key", "my-changeme-1"],
)
def test_placeholders(value: str):
    assert is_placeholder(value)


@pytest.mark.parametrize("value", ["https://chat.example.com", "5432", secrets.token_urlsafe(32)])
def test_not_placeholders(value: str):
    assert not is_placeholder(value)


def test_secret_strength():
    assert not is_weak_secret(secrets.token_hex(32))  # 64 hex chars = 256 bits
    assert not is_weak_secret(secrets.token_urlsafe(32))  # 43 chars of base64url
    assert is_weak_secret(secrets.token_hex(16))  # 128 bits
    assert is_weak_secret("a" * 80)  # long but one repeated character
    assert is_weak_secret("ab" * 40)
    assert is_weak_secret("")
    assert estimated_bits(secrets.token_urlsafe(32)) >= 256


def test_write_secrets_fills_only_missing_and_never_overwrites(tree: Path):
    path = tree / "environments/local/secrets.env"
    path.write_text("# mine\nVENDOR_KEY=kept-as-is\nAPP_SECRET=\n")
    config = load_config("local", root=tree, process_env={})
    assert missing_generated_secrets(config) == ["APP_SECRET"]
    assert write_secrets(path, ["APP_SECRET"]) == ["APP_SECRET"]
    text = path.read_text()
    assert text.startswith("# mine\nVENDOR_KEY=kept-as-is\nAPP_SECRET=")
    assert text.count("APP_SECRET=") == 1
    value = text.split("APP_SECRET=")[1].strip()
    assert not is_weak_secret(value)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # a second run writes nothing and keeps the value
    assert write_secrets(path, ["APP_SECRET"]) == []
    assert path.read_text() == text


def test_write_secrets_creates_file_with_mode_0600(tree: Path):
    path = tree / "environments/production/secrets.env"
    assert write_secrets(path, ["APP_SECRET"]) == ["APP_SECRET"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def run_inv(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SUITE_ROOT": str(tree)}
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(REPO), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_cli_check_never_prints_secret_values(tree: Path):
    weak = "weakweakweak1"
    committed = secrets.token_hex(32)
    (tree / "environments/local/secrets.env").write_text(f"APP_SECRET={weak}\n")
    (tree / "environments/production/config.env").write_text(
        f"APP_URL=https://x\nAPP_SECRET={committed}\nVENDOR_KEY=vendor-key-value-1234\n"
    )
    for env in ("local", "production"):
        result = run_inv(tree, "env.check", f"--env={env}")
        assert result.returncode == 1, result.stderr
        output = result.stdout + result.stderr
        for value in (weak, committed, "vendor-key-value-1234"):
            assert value not in output
    assert "APP_SECRET" in output and "committed to git" in output


def test_cli_secrets_prints_names_only(tree: Path):
    result = run_inv(tree, "env.secrets", "--env=local")
    assert result.returncode == 0, result.stderr
    value = (tree / "environments/local/secrets.env").read_text().split("APP_SECRET=")[1].strip()
    assert "APP_SECRET" in result.stdout
    assert value not in result.stdout + result.stderr
    again = run_inv(tree, "env.secrets", "--env=local")
    assert "nothing to do" in again.stdout


def test_cli_bad_env_is_one_line_and_exit_2(tree: Path):
    result = run_inv(tree, "env.check", "--env=prod")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: unknown environment 'prod' (known: local, production) "
        "(fix: use --env=production or create environments/prod/config.env)"
    ]


def test_check_json_output(tree: Path):
    result = run_inv(tree, "env.check", "--env=local", "--json")
    import json

    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    assert {"severity": "error", "variable": "APP_SECRET"}.items() <= doc["rows"][0].items()


def test_events_mask_secrets_in_every_line():
    out, err = io.StringIO(), io.StringIO()
    from deploysuite.core.masking import Masker

    events = Events(masker=Masker(["s3cr3t-value"]), out=out, err=err)
    events.info("connecting with s3cr3t-value")
    events.result([{"a": "x s3cr3t-value y"}], ["a"])
    assert "s3cr3t-value" not in out.getvalue() + err.getvalue()
    assert "******" in err.getvalue() and "******" in out.getvalue()


def test_a_bad_database_name_is_a_configuration_problem(tree: Path):
    (tree / ".env.example").write_text(
        SCHEMA + "\n# secret: no | required: - | default: chat\nCHAT_DB_NAME=chat\n"
    )
    (tree / "environments/local/secrets.env").write_text(f"APP_SECRET={secrets.token_hex(32)}\n")
    (tree / "environments/local/config.env").write_text(
        "APP_URL=https://x.test\nCHAT_DB_NAME=chat'; --\n"
    )
    assert problems(tree) == {("CHAT_DB_NAME", "not a database name")}
