"""Writing files that hold secrets: atomically, and never readable by anyone but the owner."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    """Through a temporary file in the same folder and a rename, mode 0600 from the first byte:
    a crash leaves the old file whole, and no other user ever sees the content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def secret_folders(path: Path) -> None:
    """A secret file's folders, as write_secret_file() leaves them."""
    for folder, mode in ((path.parent.parent, 0o700), (path.parent, 0o711)):
        folder.mkdir(mode=mode, parents=True, exist_ok=True)
        if folder.stat().st_mode & 0o777 != mode:
            folder.chmod(mode)


def write_secret_file(path: Path, content: bytes, owner: str | None) -> None:
    """A secret a container reads: mode 0400, handed to `owner` ("uid:gid") when this process
    may (root); through a temporary file and a rename. Its folder (a service's, which the
    container mounts) may only be traversed (0711: the reader opens its files by name, lists
    nothing) and sits in one only the writer may enter (0700)."""
    secret_folders(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o400)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        if owner is not None and os.geteuid() == 0:
            uid, _, gid = owner.partition(":")
            os.chown(tmp, int(uid), int(gid))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
