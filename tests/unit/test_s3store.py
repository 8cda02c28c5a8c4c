"""The pure parts of the S3 layer: part sizes, settings, client options, error lines.

Uploads, downloads and listings run against a real S3 API server in
tests/integration/test_s3store.py.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from deploysuite.backup.s3 import (
    MiB,
    client_options,
    require_folder,
    s3_error,
    settings,
)
from deploysuite.backup.transfer import (
    PART_BUDGET,
    S3_MAX_PART,
    S3_MAX_PARTS,
    fill,
    part_size,
    upload_stream,
)
from deploysuite.config.layers import load_config
from deploysuite.core.errors import ConfigError, S3Error
from tests.unit.envtree import config_in

REPO = Path(__file__).resolve().parents[2]
GB = 1000**3
TB = 1000**4


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A suite root with the real .env.example and an empty staging environment."""
    shutil.copy(REPO / ".env.example", tmp_path / ".env.example")
    (tmp_path / "environments" / "staging").mkdir(parents=True)
    (tmp_path / "environments" / "staging" / "config.env").write_text("")
    return tmp_path


def load(tree: Path, **values: str):
    return load_config("staging", root=tree, process_env={}, cli=values)


def test_small_or_unknown_sizes_use_the_minimum_and_never_less_than_s3s_floor():
    assert part_size(None, 16 * MiB) == 16 * MiB
    assert part_size(0, 16 * MiB) == 16 * MiB
    assert part_size(1024, 16 * MiB) == 16 * MiB
    assert part_size(10 * GB, 16 * MiB) == 16 * MiB  # 2 x 10 GB fits in 9,000 parts of 16 MiB
    assert part_size(None, 1) == 5 * MiB
    assert part_size(None, 5 * MiB + 1) == 6 * MiB  # rounded up to a MiB


def test_large_sizes_grow_the_part_so_twice_the_size_fits_the_budget():
    size = part_size(100 * GB, 16 * MiB)
    assert size % MiB == 0
    assert size * PART_BUDGET >= 2 * 100 * GB
    assert (size - MiB) * PART_BUDGET < 2 * 100 * GB  # the smallest such MiB multiple
    assert size == 22 * MiB


@pytest.mark.parametrize("expected", [1 * TB, 5 * TB, 5 * 1024**4, 3 * 5 * TB])
def test_s3s_part_limit_is_never_hit(expected: int):
    size = part_size(expected, 16 * MiB)
    assert size <= S3_MAX_PART
    assert -(-expected // size) <= S3_MAX_PARTS  # the expected size itself
    if expected <= 5 * 1024**4:  # S3's largest object: twice it still fits the budget
        assert -(-2 * expected // size) <= PART_BUDGET


def test_settings_read_the_documented_defaults(tree: Path):
    s = settings(load(tree, S3_BUCKET="backups"))
    assert (s.endpoint_url, s.region, s.bucket, s.prefix) == (None, "us-east-1", "backups",
                                                             "mysaaschat")  # fmt: skip
    assert (s.sse, s.part_size_mb, s.access_key_id, s.secret_access_key) == ("AES256", 16, None,
                                                                            None)  # fmt: skip
    assert s.key("daily", "/db.dump/") == "mysaaschat/daily/db.dump"
    assert s.folder == "mysaaschat/"


def test_settings_take_every_value_and_keep_secrets_out_of_repr(tree: Path):
    s = settings(load(tree, S3_BUCKET="b", S3_ENDPOINT_URL="http://127.0.0.1:9000",
                      S3_REGION="eu-west-3", S3_PREFIX="/team/chat/", S3_SSE="none",
                      S3_ALLOW_UNENCRYPTED="yes", S3_PART_SIZE_MB="64",
                      S3_ACCESS_KEY_ID="AKIAEXAMPLE",
                      S3_SECRET_ACCESS_KEY="very-secret-value"))  # fmt: skip
    assert (s.endpoint_url, s.region, s.prefix, s.sse, s.part_size_mb) == (
        "http://127.0.0.1:9000", "eu-west-3", "team/chat", "none", 64)  # fmt: skip
    assert (s.access_key_id, s.secret_access_key) == ("AKIAEXAMPLE", "very-secret-value")
    assert "very-secret-value" not in repr(s) and "AKIAEXAMPLE" not in repr(s)
    assert s.part_checksum == "CRC32"  # the default: every part carries its CRC-32
    assert settings(load(tree, S3_BUCKET="b", S3_PART_CHECKSUM="none")).part_checksum is None


def test_a_missing_bucket_is_a_config_error_with_a_one_line_fix(tree: Path):
    with pytest.raises(ConfigError) as caught:
        settings(load(tree))
    line = caught.value.one_line()
    assert "S3_BUCKET is not set for environment 'staging'" in line
    assert "fix: set S3_BUCKET in" in line and "\n" not in line


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"S3_SSE": "aes256"}, "S3_SSE='aes256' is not one of AES256, aws:kms, none"),
        ({"S3_SSE": "none"}, "S3_SSE=none in 'staging': its backups would lie in the bucket"),
        ({"S3_SSE": "none", "S3_ALLOW_UNENCRYPTED": "no"}, "S3_SSE=none in 'staging'"),
        ({"S3_PART_SIZE_MB": "4"}, "S3_PART_SIZE_MB='4' is not a whole number of at least 5"),
        ({"S3_PART_SIZE_MB": "16M"}, "S3_PART_SIZE_MB='16M'"),
        ({"S3_PREFIX": "/"}, "S3_PREFIX is empty"),
        ({"S3_ACCESS_KEY_ID": "AKIAONLY"}, "only one of S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY"),
        ({"S3_SECRET_ACCESS_KEY": "s3cr3t-only"}, "only one of S3_ACCESS_KEY_ID"),
        ({"S3_PART_CHECKSUM": "md5"}, "S3_PART_CHECKSUM='MD5' is not one of CRC32, NONE"),
    ],
)
def test_bad_values_are_config_errors(tree: Path, values: dict[str, str], says: str):
    with pytest.raises(ConfigError) as caught:
        settings(load(tree, S3_BUCKET="b", **values))
    assert says in caught.value.what and caught.value.fix
    assert "s3cr3t-only" not in caught.value.one_line()


def test_client_options_turn_off_default_checksums_where_botocore_has_the_switch():
    supported = ["retries", "request_checksum_calculation", "response_checksum_validation"]
    assert client_options("http://127.0.0.1:9000", supported) == {
        "retries": {"max_attempts": 5, "mode": "standard"},
        "connect_timeout": 5,
        "read_timeout": 60,
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
        "s3": {"addressing_style": "path"},
    }
    old_botocore = client_options(None, ["retries"])  # AWS itself, botocore < 1.36
    assert "request_checksum_calculation" not in old_botocore and "s3" not in old_botocore


def test_the_installed_botocore_accepts_the_options():
    from botocore.config import Config as BotoConfig

    config = BotoConfig(**client_options("http://x", list(BotoConfig.OPTION_DEFAULTS)))
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"


def test_error_lines_say_what_and_the_fix_without_the_secret():
    endpoint = "http://127.0.0.1:9000"
    missing = s3_error("NoSuchBucket", "ListObjectsV2", "nope", "bk", None, endpoint)
    assert missing.one_line() == (
        f"error: bucket bk does not exist at {endpoint} (fix: create it or fix S3_BUCKET)"
    )
    for code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
        refused = s3_error(code, "PutObject", "The request signature ...", "bk", "k", endpoint)
        assert refused.what.startswith(f"S3 refused the credentials ({code})")
        assert refused.fix == "check S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY"
    other = s3_error("SlowDown", "UploadPart", "Please\nreduce  your rate", "bk", "k", endpoint)
    assert other.what == (
        f"S3 UploadPart of s3://bk/k at {endpoint} failed: SlowDown: Please reduce your rate"
    )
    assert all(isinstance(e, S3Error) and e.exit_code == 10 for e in (missing, refused, other))


def test_fill_reads_short_reads_until_the_buffer_is_full_or_the_stream_ends():
    class Trickle(io.RawIOBase):  # a pipe hands out what it has, often less than asked
        def __init__(self, data: bytes) -> None:
            self.data = data

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            n = min(3, size)
            out, self.data = self.data[:n], self.data[n:]
            return out

    buffer = bytearray(8)
    reader = Trickle(b"0123456789")
    assert fill(reader, buffer) == 8 and buffer == b"01234567"
    assert fill(reader, buffer) == 2 and buffer[:2] == b"89"
    assert fill(reader, buffer) == 0


def test_an_empty_stream_is_refused_before_anything_is_sent():
    with pytest.raises(S3Error, match="the stream was empty") as caught:
        # no client: nothing may be called for an empty stream
        upload_stream(None, "bk", "k", io.BytesIO(b""), part_size=5 * MiB, sse="none",
                      metadata={})  # fmt: skip
    assert "a dump is never empty" in caught.value.one_line()


def test_destructive_calls_stay_inside_one_folder():
    require_folder("mysaaschat/", ["mysaaschat/a", "mysaaschat/b/c"])
    for prefix in ("", "/", "mysaaschat"):
        with pytest.raises(ValueError, match="not a folder prefix"):
            require_folder(prefix)
    with pytest.raises(ValueError, match="keys outside mysaaschat/"):
        require_folder("mysaaschat/", ["mysaaschat/a", "mysaaschat-other/x"])


def test_unencrypted_backups_are_refused_only_where_users_data_lies(tmp_path: Path):
    values = {"S3_BUCKET": "b", "S3_SSE": "none"}
    assert settings(config_in(tmp_path, "local", **values)).sse == "none"
    production = config_in(tmp_path, "production", **values)
    with pytest.raises(ConfigError, match="S3_SSE=none in 'production'"):
        settings(production)


def test_a_part_is_completed_with_the_checksum_the_server_returned():
    from deploysuite.backup.transfer import PART_CHECKSUM, completed_part

    assert PART_CHECKSUM == "CRC32"
    assert completed_part(2, {"ETag": '"e"', "ChecksumCRC32": "AAAAAA=="}) == {
        "ETag": '"e"', "PartNumber": 2, "ChecksumCRC32": "AAAAAA=="}  # fmt: skip
    # a server that returns none: the part is completed by its ETag alone
    assert completed_part(1, {"ETag": '"e"'}) == {"ETag": '"e"', "PartNumber": 1}
