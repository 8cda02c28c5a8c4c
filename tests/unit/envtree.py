"""A suite root for unit tests: the real .env.example as schema, empty environments."""

from __future__ import annotations

import shutil
from pathlib import Path

from deploysuite.config.layers import Config, load_config

REPO = Path(__file__).resolve().parents[2]


def config_in(root: Path, env: str = "test", **values: str) -> Config:
    """`env`'s configuration under `root` (made on first use), with `values` given as --set."""
    if not (root / ".env.example").exists():
        shutil.copy(REPO / ".env.example", root / ".env.example")
    folder = root / "environments" / env
    if not folder.is_dir():
        folder.mkdir(parents=True)
        (folder / "config.env").write_text("")
    return load_config(env, root=root, process_env={}, cli=values)
