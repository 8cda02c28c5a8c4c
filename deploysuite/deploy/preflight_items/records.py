"""Records of the last restore drill and the last alert routing test, for preflight to judge.

They live beside the backups in S3, `<S3_PREFIX>/<env>/<kind>/<YYYYMMDDTHHMMSSZ>.json`, so that a
drill run by CI is seen from a laptop; an environment without a bucket keeps them in its build
folder, `build/<env>/<project>/records/<kind>/`. Each is a small JSON object with at least
`finished` (ISO time) and `passed`, and `failed` naming what did not pass.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from deploysuite.backup import s3 as s3store
from deploysuite.backup.context import open_bucket
from deploysuite.config.session import Session
from deploysuite.core.errors import SuiteError
from deploysuite.core.files import write_private
from deploysuite.engines.stack import build_dir

Kind = Literal["drills", "alert-tests"]


@dataclass(frozen=True)
class RecordPlace:
    """Where an environment's records live: its bucket (store and client), else `folder`."""

    env: str
    folder: Path
    store: s3store.S3Settings | None = None
    s3: s3store.S3Client | None = None

    def describe(self, kind: Kind) -> str:
        if self.store is not None:
            return f"s3://{self.store.bucket}/{self.store.key(self.env, kind)}/"
        return f"{self.folder / kind}/"


def record_name(when: dt.datetime) -> str:
    return f"{when.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}.json"


def new_record(passed: bool, failed: list[str], **fields: Any) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    return {"finished": now.isoformat(timespec="seconds"), "passed": passed, "failed": failed,
            **fields}  # fmt: skip


def local_folder(s: Session) -> Path:
    return build_dir(s.config) / "records"


def place_for(s: Session) -> RecordPlace:
    """The bucket when the environment has one (S3_BUCKET), else the build folder."""
    if s.config.get("S3_BUCKET"):
        store, s3 = open_bucket(s)
        return RecordPlace(s.config.env, local_folder(s), store, s3)
    return RecordPlace(s.config.env, local_folder(s))


def save(place: RecordPlace, kind: Kind, record: Mapping[str, Any]) -> str:
    """Write one record; returns where it went."""
    name = record_name(dt.datetime.fromisoformat(str(record["finished"])))
    if place.store is not None and place.s3 is not None:
        key = place.store.key(place.env, kind, name)
        s3store.put_json(place.s3, place.store.bucket, key, dict(record), sse=place.store.sse)
        return f"s3://{place.store.bucket}/{key}"
    path = place.folder / kind / name
    write_private(path, json.dumps(dict(record), indent=2, sort_keys=True) + "\n")
    return str(path)


def newest(place: RecordPlace, kind: Kind) -> dict[str, Any] | None:
    """The newest record of `kind` (names sort by time), or None."""
    if place.store is not None and place.s3 is not None:
        folder = place.store.key(place.env, kind) + "/"
        keys = sorted(o.key for o in s3store.list_keys(place.s3, place.store.bucket, folder)
                      if o.key.endswith(".json"))  # fmt: skip
        return dict(s3store.get_json(place.s3, place.store.bucket, keys[-1])) if keys else None
    files = sorted((place.folder / kind).glob("*.json"))
    return json.loads(files[-1].read_text(encoding="utf-8")) if files else None


def record_result(s: Session, kind: Kind, record: Mapping[str, Any]) -> None:
    """Save a task's outcome where preflight reads it; a record that cannot be written is a
    warning, never the task's failure (the drill or the test itself already ran)."""
    try:
        where = save(place_for(s), kind, record)
    except (SuiteError, OSError) as exc:
        s.events.warn(f"could not record the result for inv preflight: {exc}")
        return
    s.events.detail(f"recorded for inv preflight: {where}")
