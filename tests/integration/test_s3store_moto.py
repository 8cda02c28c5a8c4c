"""The S3 layer against a real S3 API server (moto's server mode on 127.0.0.1): streaming
multipart uploads from OS pipes, aborts that leave nothing behind, one-line errors."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import tracemalloc
import zlib
from pathlib import Path

import pytest

from deploysuite.backup.s3 import (
    MiB,
    abort_incomplete,
    client,
    delete_keys,
    get_json,
    incomplete_uploads,
    list_keys,
    put_json,
)
from deploysuite.backup.transfer import (
    IN_FLIGHT,
    download_stream,
    upload_stream,
)
from deploysuite.core.errors import S3Error
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration
FOLDER = "mysaaschat/"


@pytest.fixture
def bucket(s3) -> str:
    return s3.new_bucket()


@pytest.fixture
def c(s3):
    return s3.client()


def nothing_left(c, bucket: str) -> bool:
    return list_keys(c, bucket, "") == [] and incomplete_uploads(c, bucket, "") == []


def test_a_40_mib_pipe_round_trips_in_parts_with_its_sha256(c, bucket: str, tmp_path: Path):
    size = 40 * MiB + 12345  # the last part is a short one
    copy = tmp_path / "sent"
    dump = subprocess.Popen(
        ["sh", "-c", f"head -c {size} /dev/urandom | tee {copy}"], stdout=subprocess.PIPE
    )
    progress: list[int] = []
    tracemalloc.start()
    try:
        uploaded = upload_stream(c, bucket, FOLDER + "db.dump", dump.stdout, part_size=5 * MiB,
                                 sse="AES256", metadata={"release": "r1"},
                                 on_progress=progress.append)  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        dump.stdout.close()
    assert dump.wait() == 0
    sent = copy.read_bytes()
    assert len(sent) == size == uploaded.size
    assert uploaded.sha256 == hashlib.sha256(sent).hexdigest()
    assert uploaded.parts == -(-size // (5 * MiB)) == 9
    assert progress == [*(n * 5 * MiB for n in range(1, 9)), size]
    # the part being read, IN_FLIGHT parts uploading and one transient copy inside the HTTP
    # client: a constant, far below the 40 MiB of the stream
    bound = (IN_FLIGHT + 2) * 5 * MiB + 2 * MiB
    assert peak < bound, f"upload held {peak / MiB:.1f} MiB: more than {IN_FLIGHT + 2} parts"

    head = c.head_object(Bucket=bucket, Key=FOLDER + "db.dump")
    assert head["ContentLength"] == size and head["ETag"].endswith('-9"')  # a multipart object
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"] == {"release": "r1"}

    received = io.BytesIO()
    assert download_stream(c, bucket, FOLDER + "db.dump", received) == (size, uploaded.sha256)
    assert received.getvalue() == sent
    assert incomplete_uploads(c, bucket, "") == []


def test_sse_none_sends_no_encryption_header(c, bucket: str):
    upload_stream(c, bucket, FOLDER + "plain", io.BytesIO(b"x" * 1000), part_size=5 * MiB,
                  sse="none", metadata={})  # fmt: skip
    assert "ServerSideEncryption" not in c.head_object(Bucket=bucket, Key=FOLDER + "plain")


def test_every_part_travels_with_its_crc32_and_the_object_keeps_them(c, bucket: str):
    """Each part is sent with its CRC-32 (S3 refuses a part whose bytes do not match it), and
    the object's composite checksum is the one of the parts' own CRC-32s, computed here.

    The S3 server of the tests (moto) stores these checksums but does not compare them with the
    bytes: that a damaged part is refused is S3's documented behaviour, not shown here."""
    data = os.urandom(11 * MiB)
    uploaded = upload_stream(c, bucket, FOLDER + "parts", io.BytesIO(data), part_size=5 * MiB,
                             sse="AES256", metadata={})  # fmt: skip
    assert uploaded.parts == 3
    parts = [data[i : i + 5 * MiB] for i in range(0, len(data), 5 * MiB)]
    composite = b"".join(zlib.crc32(p).to_bytes(4, "big") for p in parts)
    expected = base64.b64encode(zlib.crc32(composite).to_bytes(4, "big")).decode()
    attributes = c.get_object_attributes(Bucket=bucket, Key=FOLDER + "parts",
                                         ObjectAttributes=["Checksum"])  # fmt: skip
    assert attributes["Checksum"]["ChecksumType"] == "COMPOSITE"
    assert attributes["Checksum"]["ChecksumCRC32"].split("-")[0] == expected


class DyingDump(io.RawIOBase):
    """A dump that writes `good` bytes, then fails the way `error` says."""

    def __init__(self, good: int, error: BaseException) -> None:
        self.left = good
        self.error = error

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            raise self.error
        n = min(size, self.left)
        self.left -= n
        return b"\x17" * n


@pytest.mark.parametrize("error", [OSError("pg_dump died"), KeyboardInterrupt()])
def test_a_reader_that_fails_after_two_parts_leaves_no_object_and_no_upload(c, bucket, error):
    progress: list[int] = []
    with pytest.raises(type(error)) as caught:
        upload_stream(c, bucket, FOLDER + "db.dump", DyingDump(2 * 5 * MiB + 100, error),
                      part_size=5 * MiB, sse="AES256", metadata={},
                      on_progress=progress.append)  # fmt: skip
    assert caught.value is error  # raised again as it was, not wrapped
    assert progress == [5 * MiB, 10 * MiB]  # two parts had reached the server
    assert nothing_left(c, bucket)


def test_a_progress_callback_that_fails_also_aborts(c, bucket: str):
    def interrupted(_: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        upload_stream(c, bucket, FOLDER + "x", io.BytesIO(b"y" * (6 * MiB)), part_size=5 * MiB,
                      sse="AES256", metadata={}, on_progress=interrupted)  # fmt: skip
    assert nothing_left(c, bucket)


def test_an_empty_stream_is_refused_and_leaves_nothing(c, bucket: str):
    dump = subprocess.Popen(["true"], stdout=subprocess.PIPE)
    with pytest.raises(S3Error, match="the stream was empty"):
        upload_stream(c, bucket, FOLDER + "db.dump", dump.stdout, part_size=5 * MiB,
                      sse="AES256", metadata={})  # fmt: skip
    dump.stdout.close()
    dump.wait()
    assert nothing_left(c, bucket)


def test_a_missing_bucket_is_one_line(s3, c):
    expected = (
        f"error: bucket no-such-bucket does not exist at {s3.endpoint} "
        "(fix: create it or fix S3_BUCKET)"
    )
    with pytest.raises(S3Error) as listing:
        list_keys(c, "no-such-bucket", FOLDER)
    assert listing.value.one_line() == expected and listing.value.exit_code == 10
    with pytest.raises(S3Error) as uploading:
        upload_stream(c, "no-such-bucket", FOLDER + "x", io.BytesIO(b"data"), part_size=5 * MiB,
                      sse="AES256", metadata={})  # fmt: skip
    assert uploading.value.one_line() == expected


def test_refused_credentials_are_one_line_without_the_secret(s3, bucket: str):
    # moto accepts any credentials unless its IAM checks are on: turn them on, with real users.
    with s3.authenticating() as ((key_id, secret), (bare_id, bare_secret)):
        allowed = s3.client(access_key_id=key_id, secret_access_key=secret)
        put_json(allowed, bucket, FOLDER + "ok.json", {"ok": True}, sse="AES256")
        assert get_json(allowed, bucket, FOLDER + "ok.json") == {"ok": True}
        cases = {
            "SignatureDoesNotMatch": (key_id, "wrong-" + secret),
            "InvalidAccessKeyId": ("AKIAUNKNOWNKEY000000", secret),
            "AccessDenied": (bare_id, bare_secret),  # a valid user without any S3 permission
        }
        for code, (access, secret_key) in cases.items():
            refused = s3.client(access_key_id=access, secret_access_key=secret_key)
            with pytest.raises(S3Error) as caught:
                list_keys(refused, bucket, FOLDER)
            line = caught.value.one_line()
            assert line == (
                f"error: S3 refused the credentials ({code}) for s3://{bucket} at {s3.endpoint} "
                "(fix: check S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY)"
            )
            assert secret_key not in line and "\n" not in line
    assert list_keys(s3.client(), bucket, FOLDER)  # the server accepts anyone again


def test_an_unreachable_endpoint_is_one_line(s3):
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(S3Error) as caught:
        list_keys(client(s3.settings("any", endpoint_url=closed)), "any", FOLDER)
    assert caught.value.one_line() == (
        f"error: S3 endpoint not reachable: {closed} (fix: check S3_ENDPOINT_URL and the network)"
    )


def test_json_listing_and_delete_round_trip_inside_the_prefix(c, bucket: str):
    names = [f"{FOLDER}backups/2024-01-0{i}/manifest.json" for i in range(1, 6)]
    for i, key in enumerate(names):
        put_json(c, bucket, key, {"release": f"r{i}", "parts": [1, 2]}, sse="AES256")
    put_json(c, bucket, "mysaaschat-other/manifest.json", {"not": "ours"}, sse="none")

    assert get_json(c, bucket, names[2]) == {"release": "r2", "parts": [1, 2]}
    head = c.head_object(Bucket=bucket, Key=names[0])
    assert head["ContentType"] == "application/json" and head["ServerSideEncryption"] == "AES256"

    listed = list_keys(c, bucket, FOLDER, page_size=2)  # three pages
    assert [o.key for o in listed] == names
    assert all(o.size == head["ContentLength"] and o.last_modified.tzinfo for o in listed)

    with pytest.raises(ValueError, match="keys outside"):
        delete_keys(c, bucket, [*names, "mysaaschat-other/manifest.json"], FOLDER)
    assert delete_keys(c, bucket, [o.key for o in listed], FOLDER) == 5
    assert list_keys(c, bucket, FOLDER) == []
    assert [o.key for o in list_keys(c, bucket, "")] == ["mysaaschat-other/manifest.json"]

    with pytest.raises(S3Error, match=f"s3://{bucket}/{names[0]} does not exist"):
        get_json(c, bucket, names[0])
    with pytest.raises(S3Error, match="does not exist"):
        download_stream(c, bucket, names[0], io.BytesIO())


def test_incomplete_uploads_are_found_and_aborted_only_inside_the_prefix(c, bucket: str):
    for key in (FOLDER + "a.dump", FOLDER + "b/c.dump", "elsewhere/d.dump"):
        c.create_multipart_upload(Bucket=bucket, Key=key)
    assert [u.key for u in incomplete_uploads(c, bucket, FOLDER)] == [
        FOLDER + "a.dump", FOLDER + "b/c.dump"]  # fmt: skip
    assert abort_incomplete(c, bucket, FOLDER) == 2
    assert incomplete_uploads(c, bucket, FOLDER) == []
    assert [u.key for u in incomplete_uploads(c, bucket, "")] == ["elsewhere/d.dump"]
    assert abort_incomplete(c, bucket, FOLDER) == 0
