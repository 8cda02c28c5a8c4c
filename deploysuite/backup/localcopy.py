"""Local copies of dump backups, for a restore when S3 cannot be reached.

    <DIR>/<env>/postgres/<db>/<YYYYMMDD>/<id>.dump.zst        the same bytes as the S3 object
    <DIR>/<env>/postgres/<db>/<YYYYMMDD>/<id>.manifest.json   written last (mode 0600 both)

A copy is written while the dump streams to S3 (no second dump, no temporary file); a restore
`--from local` checks its size and SHA-256 against its manifest before anything else.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from deploysuite.backup import catalog as bk
from deploysuite.core.errors import SuiteError
from deploysuite.core.files import write_private


def data_path(folder: Path, env: str, db: str, backup_id: str) -> Path:
    rel = bk.keys_for("", env, db, backup_id).data.lstrip("/")
    return folder / rel


def manifest_path(data: Path) -> Path:
    return data.with_name(data.name.removesuffix(".dump.zst") + ".manifest.json")


class Tee:
    """A reader that also writes what it reads into a private local file."""

    def __init__(self, reader: Any, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.reader = reader
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.out: BinaryIO = os.fdopen(fd, "wb")

    def read(self, size: int = -1, /) -> bytes:
        data = self.reader.read(size)
        if data:
            self.out.write(data)
        return data

    def close(self, keep: bool) -> None:
        self.out.close()
        if not keep:
            self.path.unlink(missing_ok=True)


def write_manifest(data: Path, record: Mapping[str, object]) -> dict[str, object]:
    local = {**record, "object": str(data), "location": "local"}
    write_private(manifest_path(data), json.dumps(local, indent=2, sort_keys=True) + "\n")
    return local


def list_backups(folder: Path, env: str, db: str) -> list[dict[str, object]]:
    """Every complete local copy of `db` (with a manifest), newest first."""
    base = folder / env / "postgres" / db
    found = []
    for path in sorted(base.glob("*/*.manifest.json")):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return [dict(m) for m in bk.complete(found)]


def verified(record: Mapping[str, object]) -> Path:
    """The copy's file, its size and SHA-256 checked against its manifest."""
    path = Path(str(record["object"]))
    name = record["backup_id"]
    if not path.is_file():
        raise bk.BackupError(f"local copy {path} of backup {name} is missing; nothing changed",
                             "inv backup.list --from local shows the copies there are")  # fmt: skip
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    if size != record["size"]:
        raise bk.BackupError(
            f"local copy of {name} is truncated: {size} of {record['size']} bytes; nothing changed",
            "pick another backup (inv backup.list --from local)",
        )
    if digest.hexdigest() != record["sha256"]:
        raise bk.BackupError(
            f"local copy of {name} fails its checksum; nothing changed",
            "pick another backup (inv backup.list --from local)",
        )
    return path


def prune(folder: Path, env: str, db: str, days: int, keep: int, dry_run: bool) -> list[str]:
    """Local copies older than `days`, beyond the newest `keep` (the same rule as S3's); the
    manifest goes first, so a half-deleted copy is never listed."""
    gone = bk.to_prune(list_backups(folder, env, db), dt.datetime.now(dt.UTC), days, keep)
    for record in gone:
        data = Path(str(record["object"]))
        if not dry_run:
            manifest_path(data).unlink(missing_ok=True)
            data.unlink(missing_ok=True)
    return [str(r["backup_id"]) for r in gone]


def source_folder(from_: str, local_dir: str) -> Path | None:
    """--from s3 (None) or --from local with the folder of the copies."""
    if from_ not in ("s3", "local"):
        raise SuiteError(f"--from {from_!r} is neither s3 nor local", "use --from s3 or local")
    if from_ == "s3":
        return None
    if not local_dir:
        raise SuiteError("--from local needs the folder of the copies", "add --local-dir DIR")
    folder = Path(local_dir)
    if not folder.is_dir():
        raise SuiteError(f"{folder} is not a folder", "give the --local-dir of inv backup")
    return folder
