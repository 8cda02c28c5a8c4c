"""Streams to and from S3: a multipart upload that reads the next part while earlier ones
travel (memory bounded by a few parts, whatever the size), and a download that hashes as it
writes. Listing, manifests, retention and lifecycle are in s3.py."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Protocol

from deploysuite.backup.s3 import S3_MIN_PART, MiB, S3Client, Sse, translated
from deploysuite.core.errors import S3Error

IN_FLIGHT = 2  # parts uploading while the next one is read
S3_MAX_PART = 5 * 1024 * MiB
S3_MAX_PARTS = 10_000
# S3's additional checksum on every part (S3_PART_CHECKSUM): the client sends each part's CRC-32
# and the server refuses a part whose bytes do not match it, so a part damaged in transit is
# caught when it arrives, not only by the end-to-end SHA-256 read back after the upload (CRC-32:
# zlib's, cheap beside the SHA-256 the stream is hashed with anyway).
PART_CHECKSUM = "CRC32"
PART_BUDGET = 9_000  # parts planned for twice the expected size: a margin under S3_MAX_PARTS
READ_CHUNK = MiB


class Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Writer(Protocol):
    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True)
class Uploaded:
    size: int
    sha256: str
    parts: int
    seconds: float


def part_size(expected_bytes: int | None, minimum: int) -> int:
    """Bytes per part: at least `minimum` and S3's 5 MiB, grown so that twice `expected_bytes`
    fits in PART_BUDGET parts, rounded up to a MiB, at most S3's 5 GiB."""
    size = max(minimum, S3_MIN_PART)
    if expected_bytes:
        size = max(size, -(-2 * expected_bytes // PART_BUDGET))
    return min(-(-size // MiB) * MiB, S3_MAX_PART)


def fill(reader: Reader, buffer: bytearray) -> int:
    """Read into `buffer` until it is full or the stream ends; the bytes read."""
    filled = 0
    while filled < len(buffer):
        chunk = reader.read(min(READ_CHUNK, len(buffer) - filled))
        if not chunk:
            break
        buffer[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    return filled


def upload_stream(
    s3: S3Client,
    bucket: str,
    key: str,
    reader: Reader,
    *,
    part_size: int,
    sse: Sse,
    metadata: Mapping[str, str],
    on_progress: Callable[[int], None] | None = None,
    before_complete: Callable[[], None] | None = None,
    checksum: str | None = PART_CHECKSUM,
) -> Uploaded:
    """Stream `reader` to s3://bucket/key as a multipart upload.

    Reading and uploading overlap: while up to IN_FLIGHT parts travel to S3 (each in its own
    thread), the next part is read, so the producer rarely waits on the network. Memory stays
    bounded by IN_FLIGHT + 1 parts, whatever the stream's size.

    Any exception, KeyboardInterrupt and the reader's own included, aborts the upload and is
    raised again: no object and no incomplete upload remain. An empty stream is an error.
    before_complete() runs after the last part and before the object is completed: the place
    to check that whatever wrote the stream exited cleanly (a raise aborts the upload).
    """
    started = time.monotonic()
    digest = hashlib.sha256()
    buffer = bytearray(part_size)
    filled = fill(reader, buffer)
    if filled == 0:
        raise S3Error(
            f"nothing to upload to s3://{bucket}/{key}: the stream was empty",
            "check the command that writes it (a dump is never empty)",
        )
    create: dict[str, Any] = {"Bucket": bucket, "Key": key, "Metadata": dict(metadata)}
    per_part: dict[str, Any] = {"ChecksumAlgorithm": checksum} if checksum else {}
    if sse != "none":
        create["ServerSideEncryption"] = sse
    create.update(per_part)
    with translated(s3, bucket, key):
        upload_id = s3.create_multipart_upload(**create)["UploadId"]
        pool = ThreadPoolExecutor(max_workers=IN_FLIGHT, thread_name_prefix="s3-part")
        try:
            futures: list[Future[Any]] = []
            size = 0
            while filled:
                if len(futures) == S3_MAX_PARTS:
                    raise S3Error(
                        f"s3://{bucket}/{key}: the stream needs more than {S3_MAX_PARTS} parts "
                        f"of {part_size // MiB} MiB",
                        "raise S3_PART_SIZE_MB",
                    )
                in_flight = [f for f in futures if not f.done()]
                if len(in_flight) >= IN_FLIGHT:  # a free slot first: then copy the part
                    wait(in_flight, return_when=FIRST_COMPLETED)
                for done in (f for f in futures if f.done()):
                    done.result()  # a failed part fails the upload now, not at the end
                part = bytes(memoryview(buffer)[:filled])  # one copy, not two
                digest.update(part)
                futures.append(pool.submit(
                    s3.upload_part, Bucket=bucket, Key=key, UploadId=upload_id,
                    PartNumber=len(futures) + 1, Body=part, **per_part,
                ))  # fmt: skip
                del part
                size += filled
                if on_progress is not None:
                    on_progress(size)
                filled = fill(reader, buffer) if filled == part_size else 0
            parts = [completed_part(n, f.result(), checksum) for n, f in enumerate(futures, 1)]
            if before_complete is not None:  # the producer's last word: it may still fail
                before_complete()
            s3.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException as exc:
            pool.shutdown(wait=True, cancel_futures=True)
            abort_upload(s3, bucket, key, upload_id, exc)
            raise
        finally:
            pool.shutdown(wait=True)
    return Uploaded(size, digest.hexdigest(), len(parts), time.monotonic() - started)


def completed_part(
    number: int, response: Mapping[str, Any], checksum: str | None = PART_CHECKSUM
) -> dict[str, Any]:
    """A part as CompleteMultipartUpload wants it: its ETag and the checksum the server
    computed and compared with the one sent (an upload created with a checksum algorithm is
    completed only with every part's checksum)."""
    part = {"ETag": response["ETag"], "PartNumber": number}
    value = response.get(f"Checksum{checksum}") if checksum else None
    if value:
        part[f"Checksum{checksum}"] = value
    return part


def abort_upload(s3: S3Client, bucket: str, key: str, upload_id: str, cause: BaseException) -> None:
    """Abort a multipart upload after `cause`; if that fails too, say so on `cause`."""
    try:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except Exception as exc:  # the original error matters more; keep it, note this one
        cause.add_note(
            f"the incomplete upload of s3://{bucket}/{key} could not be aborted "
            f"({type(exc).__name__}); abort_incomplete() removes it later"
        )


def download_stream(
    s3: S3Client,
    bucket: str,
    key: str,
    writer: Writer,
    chunk: int = MiB,
    on_progress: Callable[[int], None] | None = None,
    every: int = 64 * MiB,
) -> tuple[int, str]:
    """Stream s3://bucket/key into `writer`; its size and SHA-256 (hex). on_progress(bytes so
    far) after every `every` bytes and at the end."""
    digest = hashlib.sha256()
    size = reported = 0
    with translated(s3, bucket, key):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        try:
            for data in body.iter_chunks(chunk):
                writer.write(data)
                digest.update(data)
                size += len(data)
                if on_progress is not None and size - reported >= every:
                    on_progress(size)
                    reported = size
        finally:
            body.close()
    if on_progress is not None and size != reported:
        on_progress(size)
    return size, digest.hexdigest()
