"""Releases: ids, manifests, what to keep, what a rollback returns to (pure, no I/O)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from deploysuite.deploy import release as rel
from deploysuite.deploy.preflight import free_disk_argv, parse_df_free_mb, parse_version
from deploysuite.deploy.shipment import compose_variables_env

NOW = dt.datetime(2026, 11, 25, 20, 15, 2, tzinfo=dt.UTC)


def test_release_ids_sort_by_time_and_name_the_commit():
    assert rel.new_release_id(NOW, "1666917d22f0") == "20261125T201502Z-1666917"
    assert rel.new_release_id(NOW, "1666917d22f0-dirty") == "20261125T201502Z-1666917-dirty"
    assert rel.RELEASE_ID_RE.match(rel.new_release_id(NOW, "abcdef0"))


def test_layout_of_an_environment_on_the_host():
    lay = rel.layout("/srv/mysaaschat/", "staging")
    assert lay.release("r1") == "/srv/mysaaschat/staging/releases/r1"
    assert lay.current == "/srv/mysaaschat/staging/current"
    assert lay.live == "/srv/mysaaschat/staging/live"
    assert lay.audit_log == "/srv/mysaaschat/staging/audit.log"


def test_only_the_variables_compose_interpolates_go_to_the_hosts_env_file():
    text = "image: ${AUTH_IMAGE:?x}\nenv: ${POSTGRES_PASSWORD}\nport: $${NOT_THIS}\n"
    assert rel.compose_variables(text) == {"AUTH_IMAGE", "POSTGRES_PASSWORD"}  # $$: the shell's


def test_dotenv_quotes_values_literally_and_refuses_what_it_cannot_quote():
    assert rel.dotenv({"B": "x$y", "A": "1"}) == "A='1'\nB='x$y'\n"
    with pytest.raises(ValueError, match="B"):
        rel.dotenv({"B": "it's"})


def manifest(release_id: str, outcome: str = "deployed", sha: str = "aaaa111") -> dict:
    record = rel.manifest(
        release_id=release_id, env="staging", git_sha=sha, images={"auth": "r/auth@sha256:1"},
        files={".env": b"A='1'\n"}, deployed_by="me@laptop", ci_run_url="", previous=None,
        started=NOW,
    )  # fmt: skip
    return rel.finished(record, outcome, NOW)


def test_the_manifest_holds_digests_file_hashes_and_who():
    m = manifest("20261125T201502Z-aaaa111")
    assert m["images"] == {"auth": "r/auth@sha256:1"}
    assert m["files"] == {".env": rel.sha256(b"A='1'\n")}
    assert m["deployed_by"] == "me@laptop" and m["outcome"] == "deployed"
    assert m["finished"] == "2026-11-25T20:15:02+00:00"


def test_the_content_key_ignores_when_and_who_but_not_what():
    a = rel.content_key({"auth": "x@sha256:1"}, {".env": "h"})
    assert a == rel.content_key({"auth": "x@sha256:1"}, {".env": "h"})
    assert a != rel.content_key({"auth": "x@sha256:2"}, {".env": "h"})
    assert a != rel.content_key({"auth": "x@sha256:1"}, {".env": "other"})


def test_encode_and_parse_lines_round_trip_and_skip_torn_lines():
    text = (rel.encode({"a": 1}) + b"{torn\n" + rel.encode({"b": 2})).decode()
    assert rel.parse_lines(text) == [{"a": 1}, {"b": 2}]


def test_pruning_keeps_the_newest_and_never_the_protected():
    ids = [f"2026112{d}T000000Z-abc" for d in range(1, 8)] + ["not-a-release"]
    gone = rel.to_prune(ids, keep=3, protected=["20261121T000000Z-abc"])
    assert gone == ["20261122T000000Z-abc", "20261123T000000Z-abc", "20261124T000000Z-abc"]
    assert rel.to_prune(ids[:2], keep=5, protected=[]) == []
    assert len(rel.to_prune(ids, keep=0, protected=[])) == 6  # the newest one always stays


def test_the_default_rollback_target_is_the_last_live_release_before_the_current_one():
    releases = [
        manifest("20261120T000000Z-a"),
        manifest("20261121T000000Z-b"),
        manifest("20261122T000000Z-c", outcome="failed"),  # never went live
        manifest("20261123T000000Z-d"),
    ]
    assert rel.previous_release(releases, "20261123T000000Z-d")["release"] == "20261121T000000Z-b"
    assert rel.previous_release(releases, "20261121T000000Z-b")["release"] == "20261120T000000Z-a"
    assert rel.previous_release(releases, "20261120T000000Z-a") is None


def test_a_release_is_found_by_id_prefix_or_git_sha_never_by_an_ambiguous_guess():
    releases = [
        manifest("20261120T000000Z-aaaa111", sha="aaaa111ffff"),
        manifest("20261121T000000Z-bbbb222", sha="bbbb222ffff"),
        manifest("20261122T000000Z-cccc333", outcome="failed", sha="cccc333ffff"),
    ]
    assert rel.resolve(releases, "bbbb")["release"] == "20261121T000000Z-bbbb222"
    assert rel.resolve(releases, "20261120")["release"] == "20261120T000000Z-aaaa111"
    with pytest.raises(LookupError, match="matches 2 releases"):
        rel.resolve(releases, "202611")
    with pytest.raises(LookupError, match="no deployable release matches 'cccc'"):
        rel.resolve(releases, "cccc")  # a failed release is no rollback target
    with pytest.raises(LookupError, match="too short"):
        rel.resolve(releases, "ab")


def test_preflight_parsers():
    assert parse_version("20.10.24+dfsg1") == (20, 10)
    assert parse_version("v2.29.7") == (2, 29)
    assert parse_version("garbage") == (0, 0)
    df = "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/sda1 9 5 4194304 1% /\n"
    assert parse_df_free_mb(df) == 4096
    assert parse_df_free_mb("") == 0
    assert free_disk_argv("/srv/x")[-1] == "/srv/x"


def test_the_hosts_env_file_pins_images_and_points_at_the_hosts_folders():
    from deploysuite.config.layers import load_config

    config = load_config("local")
    env = compose_variables_env(
        config, "${AUTH_IMAGE:?} ${COMPOSE_PROJECT_NAME} ${TLS_DIR}", {"auth": "r/a@sha256:9"},
        rel.layout("/srv/app", "local"),
    )  # fmt: skip
    assert env["AUTH_IMAGE"] == "r/a@sha256:9"
    assert env["TLS_DIR"] == "/srv/app/local/tls"
    assert env["NGINX_RENDERED_DIR"] == "/srv/app/local/live/nginx"
    assert "PYTHON_IMAGE" not in env  # not interpolated by that compose text


def test_the_summary_says_when_a_failed_release_was_left_as_is():
    from deploysuite.core.errors import SuiteError
    from deploysuite.deploy.remote import RemoteOutcome, failure_exit, summary_line

    rolled = RemoteOutcome("r2", "rolled back", previous="r1", failure=SuiteError("auth: x"))
    assert summary_line("staging", "deploy", rolled) == (
        "deploy of 'staging': release r2 failed; every service is back on r1"
    )
    assert failure_exit(rolled).what == "auth: x; rolled back to r1"  # type: ignore[union-attr]
    left = RemoteOutcome("r2", "failed", previous="r1", failure=SuiteError("lost"),
                         rollback_error="host unreachable")  # fmt: skip
    assert summary_line("staging", "deploy", left) == (
        "deploy of 'staging': release r2 failed; left as is, not rolled back (host unreachable)"
    )
    what = failure_exit(left).what  # type: ignore[union-attr]
    assert what.startswith("lost; the rollback failed too (host unreachable): left as is")


def test_the_manifest_keeps_one_digest_for_all_secret_files_and_none_of_each():
    files = {".env": b"A='1'\n", "secrets/auth/postgres_password": b"s3cr3t-one",
             "secrets/chat/postgres_password": b"s3cr3t-one"}  # fmt: skip
    m = rel.manifest(release_id="20261125T201502Z-aaaa111", env="staging", git_sha="aaaa111",
                     images={}, files=files, deployed_by="me", ci_run_url="", previous=None,
                     started=NOW)  # fmt: skip
    assert set(m["files"]) == {".env", "secrets/"}
    assert rel.sha256(b"s3cr3t-one") not in json.dumps(m)
    other = {**files, "secrets/chat/postgres_password": b"s3cr3t-two"}
    m2 = rel.manifest(release_id="20261125T201502Z-aaaa111", env="staging", git_sha="aaaa111",
                      images={}, files=other, deployed_by="me", ci_run_url="", previous=None,
                      started=NOW)  # fmt: skip
    assert m2["content"] != m["content"]  # a changed secret is a changed release
