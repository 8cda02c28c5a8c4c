"""env.rotate's pure parts: what each store is told, the secrets file's new text, the plan."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

import pytest

from deploysuite.core.errors import ConfigError
from deploysuite.deploy import rotate
from deploysuite.deploy.drift import postgres_matches
from tests.unit.envtree import config_in


def test_the_scram_verifier_is_what_postgresql_checks_a_password_against():
    password = secrets.token_urlsafe(24)
    verifier = rotate.scram_verifier(password)
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    assert postgres_matches(verifier, "anyone", password)
    assert not postgres_matches(verifier, "anyone", password + "x")
    assert password not in verifier
    assert rotate.scram_verifier(password) != verifier  # a new salt each time


def test_the_store_commands_carry_no_password():
    sql = rotate.alter_role_sql("app_role", "SCRAM-SHA-256$4096:c2FsdA==$a:b")
    assert sql == "ALTER ROLE \"app_role\" PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a:b';\n"
    assert rotate.psql_argv("pg-1", "su")[:4] == ("docker", "exec", "-i", "pg-1")
    assert rotate.rabbit_password_argv("mq-1", "app") == (
        "docker",
        "exec",
        "-i",
        "mq-1",
        "rabbitmqctl",
        "--quiet",
        "change_password",
        "app",
    )
    argv = rotate.redis_acl_argv("r-1", "app", "#" + "a" * 64)
    assert argv[-4:] == ("ACL", "SETUSER", "app", "#" + "a" * 64)
    assert argv[:3] == ("docker", "exec", "r-1")
    assert rotate.sha256_hex("x") == (
        "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
    )


def test_the_secrets_file_keeps_its_other_lines_and_order():
    text = "# header\nPOSTGRES_PASSWORD=old\nOTHER=1\n\nAUTH_TOKEN_SECRET=t-old\n"
    out = rotate.set_secret_lines(
        text, {"POSTGRES_PASSWORD": "new", "AUTH_TOKEN_SECRET": "t-new",
               "AUTH_TOKEN_SECRET_PREVIOUS": "t-old"},
        "# AUTH_TOKEN_SECRET rotated A; the previous key verifies until B",
    )  # fmt: skip
    assert out == (
        "# header\nPOSTGRES_PASSWORD=new\nOTHER=1\n\n"
        "# AUTH_TOKEN_SECRET rotated A; the previous key verifies until B\n"
        "AUTH_TOKEN_SECRET=t-new\nAUTH_TOKEN_SECRET_PREVIOUS=t-old\n"
    )
    # the next rotation replaces the comment instead of adding a second one
    again = rotate.set_secret_lines(out, {"AUTH_TOKEN_SECRET": "t3"},
                                    "# AUTH_TOKEN_SECRET rotated C; the previous key verifies "
                                    "until D")  # fmt: skip
    assert again.count("# AUTH_TOKEN_SECRET rotated") == 1 and "rotated C" in again


def test_the_token_overlap_is_read_back_from_the_comment():
    until = dt.datetime(2026, 12, 6, 15, 0, tzinfo=dt.UTC)
    text = f"# AUTH_TOKEN_SECRET rotated x; the previous key verifies until {until.isoformat()}\n"
    assert rotate.token_overlap_until(text) == until
    assert rotate.token_overlap_until("AUTH_TOKEN_SECRET=1\n") is None


def test_the_plan_refuses_what_this_command_cannot_rotate(tmp_path: Path):
    config = config_in(tmp_path, POSTGRES_PASSWORD="p" * 20, AUTH_TOKEN_SECRET="t" * 40)
    with pytest.raises(ConfigError, match="not rotated by inv env") as refused:
        rotate.plan(config, ["BILLING_WEBHOOK_SECRET"])
    assert "payment provider" in (refused.value.fix or "")
    with pytest.raises(ConfigError, match="issued elsewhere") as refused:
        rotate.plan(config, ["S3_SECRET_ACCESS_KEY"])
    assert "put the new value in" in (refused.value.fix or "")
    with pytest.raises(ConfigError, match="not a secret"):
        rotate.plan(config, ["LOG_LEVEL"])
    with pytest.raises(ConfigError, match="no value to rotate"):
        rotate.plan(config, ["RABBITMQ_PASSWORD"])
    names = [r.name for r in rotate.plan(config, [])]
    assert names == ["POSTGRES_PASSWORD", "AUTH_TOKEN_SECRET"]  # what the environment uses
    assert rotate.readers("RABBITMQ_PASSWORD") == ["orchestrator", "email-worker"]
    assert rotate.readers("REDIS_PASSWORD") == ["chat", "redis-exporter"]
