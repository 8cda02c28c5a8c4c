"""S3 storage of backups: streaming multipart uploads and downloads, memory bounded by one part.

The suite keeps its own SHA-256 of every object it writes, so boto3's default CRC checksums
(which many S3-compatible servers reject) are only sent where the API requires one, and on the
parts of a multipart upload as S3_PART_CHECKSUM says (CRC32 unless set to none). Every
botocore error leaves this module as one S3Error line that never holds a credential.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol, cast

from deploysuite.config.layers import Config
from deploysuite.core.errors import ConfigError, S3Error

MiB = 1024 * 1024
S3_MIN_PART = 5 * MiB  # S3 refuses smaller parts, except the last
DELETE_BATCH = 1_000  # DeleteObjects takes at most this many keys

Sse = Literal["AES256", "aws:kms", "none"]
SSE_MODES: tuple[Sse, ...] = ("AES256", "aws:kms", "none")
PART_CHECKSUMS = ("CRC32", "NONE")
CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidClientTokenId",
     "InvalidToken", "ExpiredToken"}
)  # fmt: skip
MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class S3Client(Protocol):
    """The S3 API calls the suite makes; boto3's client has them (keyword arguments only, plain
    dicts back), and so does anything a test puts in its place."""

    def create_multipart_upload(self, **kwargs: Any) -> dict[str, Any]: ...
    def upload_part(self, **kwargs: Any) -> dict[str, Any]: ...
    def complete_multipart_upload(self, **kwargs: Any) -> dict[str, Any]: ...
    def abort_multipart_upload(self, **kwargs: Any) -> dict[str, Any]: ...
    def get_object(self, **kwargs: Any) -> dict[str, Any]: ...
    def put_object(self, **kwargs: Any) -> dict[str, Any]: ...
    def delete_objects(self, **kwargs: Any) -> dict[str, Any]: ...
    def get_paginator(self, operation_name: str) -> Any: ...
    def get_bucket_lifecycle_configuration(self, **kwargs: Any) -> dict[str, Any]: ...
    def put_bucket_lifecycle_configuration(self, **kwargs: Any) -> dict[str, Any]: ...


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None  # None = AWS
    region: str
    bucket: str
    prefix: str  # without slashes at either end; keys are "<prefix>/..."
    access_key_id: str | None = field(repr=False)
    secret_access_key: str | None = field(repr=False)
    sse: Sse
    part_size_mb: int
    part_checksum: str | None = None  # S3's additional checksum per part (CRC32), or none

    def key(self, *parts: str) -> str:
        """The object key of `parts` under the suite's prefix."""
        return "/".join([self.prefix, *(p.strip("/") for p in parts)])

    @property
    def folder(self) -> str:
        """The prefix as a folder ("mysaaschat/"), for listings that must not match siblings."""
        return self.prefix + "/"


class ObjectInfo(NamedTuple):
    key: str
    size: int
    last_modified: datetime


class IncompleteUpload(NamedTuple):
    key: str
    upload_id: str
    initiated: datetime


# Environments whose backups hold users' data: no unencrypted objects without a written override.
ENCRYPTED_ENVIRONMENTS = ("staging", "production")


def settings(config: Config) -> S3Settings:
    """The S3 settings of `config`'s environment; a missing bucket or bad value is a ConfigError."""
    bucket = config.require("S3_BUCKET")
    env_file = config.paths.env_config
    prefix = (config.get("S3_PREFIX") or "").strip("/")
    if not prefix:
        raise ConfigError(
            "S3_PREFIX is empty: the suite keeps its objects under a prefix of the bucket",
            f"set S3_PREFIX=mysaaschat in {env_file}",
        )
    sse = config.get("S3_SSE", "AES256")
    if sse not in SSE_MODES:
        raise ConfigError(
            f"S3_SSE={sse!r} is not one of {', '.join(SSE_MODES)}", f"fix S3_SSE in {env_file}"
        )
    if (
        sse == "none"
        and config.env in ENCRYPTED_ENVIRONMENTS
        and (config.get("S3_ALLOW_UNENCRYPTED") or "").lower() not in ("yes", "true", "1")
    ):
        raise ConfigError(
            f"S3_SSE=none in '{config.env}': its backups would lie in the bucket unencrypted",
            f"set S3_SSE=AES256 or aws:kms in {env_file}; for an endpoint without server-side "
            "encryption, say so with S3_ALLOW_UNENCRYPTED=yes",
        )
    raw_part = config.get("S3_PART_SIZE_MB", "16") or "16"
    if not raw_part.isdigit() or int(raw_part) < S3_MIN_PART // MiB:
        raise ConfigError(
            f"S3_PART_SIZE_MB={raw_part!r} is not a whole number of at least 5 (S3's floor)",
            f"fix S3_PART_SIZE_MB in {env_file}",
        )
    checksum = (config.get("S3_PART_CHECKSUM", "CRC32") or "CRC32").upper()
    if checksum not in PART_CHECKSUMS:
        raise ConfigError(
            f"S3_PART_CHECKSUM={checksum!r} is not one of {', '.join(PART_CHECKSUMS)}",
            f"fix S3_PART_CHECKSUM in {env_file} (NONE only for a server that refuses them)",
        )
    access_key_id = config.get("S3_ACCESS_KEY_ID")
    secret_access_key = config.get("S3_SECRET_ACCESS_KEY")
    if (access_key_id is None) != (secret_access_key is None):
        raise ConfigError(
            "only one of S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY is set",
            f"set both in {config.paths.env_secrets}, or neither to use boto3's credential chain",
        )
    return S3Settings(
        endpoint_url=config.get("S3_ENDPOINT_URL"),
        region=config.get("S3_REGION", "us-east-1") or "us-east-1",
        bucket=bucket,
        prefix=prefix,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        sse=cast(Sse, sse),
        part_size_mb=int(raw_part),
        part_checksum=None if checksum == "NONE" else checksum,
    )


def client_options(endpoint_url: str | None, supported: Sequence[str]) -> dict[str, Any]:
    """The botocore Config of the suite's client; `supported` = that botocore's option names
    (botocore before 1.36 has no checksum options, and sends no CRC checksums either)."""
    options: dict[str, Any] = {
        "retries": {"max_attempts": 5, "mode": "standard"},
        "connect_timeout": 5,
        "read_timeout": 60,
    }
    for name in ("request_checksum_calculation", "response_checksum_validation"):
        if name in supported:
            options[name] = "when_required"
    if endpoint_url:
        # S3-compatible servers rarely have a DNS name per bucket.
        options["s3"] = {"addressing_style": "path"}
    return options


def client(s: S3Settings) -> S3Client:
    import boto3
    from botocore.config import Config as BotoConfig

    options = client_options(s.endpoint_url, list(BotoConfig.OPTION_DEFAULTS))
    return boto3.client(
        "s3",
        endpoint_url=s.endpoint_url,
        region_name=s.region,
        aws_access_key_id=s.access_key_id,
        aws_secret_access_key=s.secret_access_key,
        config=BotoConfig(**options),
    )


def s3_error(
    code: str, operation: str, message: str, bucket: str, key: str | None, endpoint: str
) -> S3Error:
    """One S3Error line for an error code the S3 API answered with."""
    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if code == "NoSuchBucket":
        fix = "create it or fix S3_BUCKET"
        return S3Error(f"bucket {bucket} does not exist at {endpoint}", fix)
    if code in CREDENTIAL_CODES:
        return S3Error(
            f"S3 refused the credentials ({code}) for {where} at {endpoint}",
            "check S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY",
        )
    if code in MISSING_KEY_CODES:
        return S3Error(f"{where} does not exist at {endpoint}", f"list what is under s3://{bucket}")
    detail = " ".join(message.split()) or "no message"
    return S3Error(f"S3 {operation} of {where} at {endpoint} failed: {code}: {detail}")


@contextmanager
def translated(s3: S3Client, bucket: str, key: str | None = None) -> Iterator[None]:
    """Turn a botocore error raised inside into an S3Error line."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
    )

    endpoint = s3.meta.endpoint_url
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise s3_error(
            str(error.get("Code", "unknown")),
            exc.operation_name,
            str(error.get("Message", "")),
            bucket,
            key,
            endpoint,
        ) from None
    except (EndpointConnectionError, ConnectTimeoutError):
        raise S3Error(
            f"S3 endpoint not reachable: {endpoint}", "check S3_ENDPOINT_URL and the network"
        ) from None
    except NoCredentialsError:
        raise S3Error(
            "no S3 credentials found", "set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY"
        ) from None
    except BotoCoreError as exc:
        raise S3Error(f"S3 request to {endpoint} failed: {exc}") from None


def put_bytes(
    s3: S3Client, bucket: str, key: str, body: bytes, *, sse: Sse, **options: Any
) -> None:
    """One small object in one request, with the suite's server-side encryption."""
    extra = {"ServerSideEncryption": sse} if sse != "none" else {}
    with translated(s3, bucket, key):
        s3.put_object(Bucket=bucket, Key=key, Body=body, **extra, **options)


def put_json(s3: S3Client, bucket: str, key: str, value: object, *, sse: Sse) -> None:
    body = json.dumps(value, indent=2, sort_keys=True).encode() + b"\n"
    put_bytes(s3, bucket, key, body, sse=sse, ContentType="application/json")


def get_json(s3: S3Client, bucket: str, key: str) -> Any:
    with translated(s3, bucket, key):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        try:
            data = body.read()
        finally:
            body.close()
    try:
        return json.loads(data)
    except ValueError as exc:
        raise S3Error(
            f"s3://{bucket}/{key} is not valid JSON ({exc})",
            "it was not written by the suite: check S3_PREFIX",
        ) from None


def list_keys(s3: S3Client, bucket: str, prefix: str, page_size: int = 1000) -> list[ObjectInfo]:
    """Every object under `prefix`, in key order."""
    found: list[ObjectInfo] = []
    with translated(s3, bucket):
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}
        )
        for page in pages:
            for item in page.get("Contents", []):
                found.append(ObjectInfo(item["Key"], item["Size"], item["LastModified"]))
    return found


def require_folder(prefix: str, keys: Sequence[str] = ()) -> None:
    """Destructive calls act inside one folder of the bucket, never on the whole of it."""
    if not prefix.strip("/") or not prefix.endswith("/"):
        raise ValueError(f"not a folder prefix: {prefix!r} (want e.g. 'mysaaschat/')")
    outside = [k for k in keys if not k.startswith(prefix)]
    if outside:
        raise ValueError(f"keys outside {prefix}: {outside[:3]}")


def delete_keys(s3: S3Client, bucket: str, keys: Sequence[str], prefix: str) -> int:
    """Delete `keys`, which must all be under the folder `prefix`; the number deleted."""
    require_folder(prefix, keys)
    deleted = 0
    for start in range(0, len(keys), DELETE_BATCH):
        batch = keys[start : start + DELETE_BATCH]
        with translated(s3, bucket):
            response = s3.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
        errors = response.get("Errors", [])
        if errors:
            first = errors[0]
            raise s3_error(
                str(first.get("Code", "unknown")),
                "DeleteObjects",
                str(first.get("Message", "")),
                bucket,
                first.get("Key"),
                s3.meta.endpoint_url,
            )
        deleted += len(batch)
    return deleted


def incomplete_uploads(s3: S3Client, bucket: str, prefix: str) -> list[IncompleteUpload]:
    """Multipart uploads under `prefix` that were started and neither completed nor aborted."""
    found: list[IncompleteUpload] = []
    with translated(s3, bucket):
        pages = s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Uploads", []):
                found.append(IncompleteUpload(item["Key"], item["UploadId"], item["Initiated"]))
    return found


def abort_incomplete(s3: S3Client, bucket: str, prefix: str) -> int:
    """Abort every incomplete upload under the folder `prefix`; the number aborted."""
    from botocore.exceptions import ClientError

    require_folder(prefix)
    aborted = 0
    for upload in incomplete_uploads(s3, bucket, prefix):
        with translated(s3, bucket, upload.key):
            try:
                s3.abort_multipart_upload(Bucket=bucket, Key=upload.key, UploadId=upload.upload_id)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                    raise
                continue  # completed or aborted by someone else meanwhile
        aborted += 1
    return aborted


def apply_lifecycle(s3: S3Client, bucket: str, rules: Sequence[Mapping[str, Any]]) -> int:
    """Put `rules` into the bucket's lifecycle configuration, replacing rules of the same ID
    and keeping everyone else's (the configuration is one document per bucket); the number
    of rules kept from others."""
    from botocore.exceptions import ClientError

    ours = {str(rule["ID"]) for rule in rules}
    try:
        with translated(s3, bucket):
            current = s3.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
    except S3Error as exc:
        if "NoSuchLifecycleConfiguration" not in exc.what:
            raise
        current = []
    except ClientError:  # pragma: no cover - translated() turns these into S3Error
        current = []
    others = [r for r in current if r.get("ID") not in ours]
    with translated(s3, bucket):
        s3.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": [*others, *rules]}
        )
    return len(others)


def lifecycle(s3: S3Client, bucket: str) -> list[dict[str, Any]]:
    try:
        with translated(s3, bucket):
            return list(s3.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", []))
    except S3Error as exc:
        if "NoSuchLifecycleConfiguration" in exc.what:
            return []
        raise
