"""The secret files of a stack on this machine: written where they changed, handed to the user
that reads each one, and put back as they were when a deploy stops half-way.

The folder (build/<env>/<project>/secrets, 0700) keeps a state file (0600, the writer's alone)
with what each file holds and who owns it: a file handed to its reader (mode 0400) is no longer
readable by a deploy user without root, and a failed deploy must still know what to put back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploysuite.config.service_env import READERS, SecretFile, reader_of
from deploysuite.core import commands
from deploysuite.core.files import secret_folders, write_private, write_secret_file
from deploysuite.core.runner import Command, Runner

STATE_FILE = "state.json"

# path -> (content, owner); None: the file did not exist
Previous = dict[str, tuple[bytes, str] | None]


def read_state(folder: Path) -> dict[str, tuple[bytes, str]]:
    path = folder / STATE_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {p: (base64.b64decode(e["content"]), e["owner"]) for p, e in data.items()}


def write_state(folder: Path, state: Mapping[str, tuple[bytes, str]]) -> None:
    data = {p: {"content": base64.b64encode(c).decode(), "owner": o} for p, (c, o) in state.items()}
    write_private(folder / STATE_FILE, json.dumps(data, indent=1, sort_keys=True) + "\n")


def sync(runner: Runner, base: Path, files: Sequence[SecretFile], image: str) -> Previous:
    """Write the files whose content or owner changed (base/<file.path>); returns what each
    changed one held before, for put_back()."""
    folder = base / "secrets"
    state = read_state(folder)
    previous: Previous = {}
    for f in files:
        secret_folders(base / f.path)
        old = state.get(f.path)
        if old == (f.content, f.owner) and (base / f.path).exists():
            continue
        previous[f.path] = old
        state[f.path] = (f.content, f.owner)
    apply(runner, base, {p: state[p] for p in previous}, image)
    if previous:
        write_state(folder, state)
    return previous


def put_back(runner: Runner, base: Path, previous: Previous, image: str) -> None:
    """The files as they were before sync(); those it created are removed."""
    if not previous:
        return
    folder = base / "secrets"
    state = read_state(folder)
    restore = {p: old for p, old in previous.items() if old is not None}
    for path, old in previous.items():
        if old is None:
            (base / path).unlink(missing_ok=True)
            state.pop(path, None)
        else:
            state[path] = old
    apply(runner, base, restore, image)
    write_state(folder, state)


def apply(runner: Runner, base: Path, files: Mapping[str, tuple[bytes, str]], image: str) -> None:
    if not files:
        return
    for path, (content, owner) in files.items():
        write_secret_file(base / path, content, owner)
    if os.geteuid() != 0:
        # without root here, the engine's root hands them over
        owners = {path: owner for path, (_, owner) in files.items()}
        runner.run(Command(commands.chown_secrets(image, str(base), owners), timeout=120))


# On a host: the stack's secret files live in $DEPLOY_ROOT/<env>/secrets, the same folder for
# every release (a container started again, or a rollback, reads the credentials the stores hold
# now). A 0600 file of the deploy user's records each one's SHA-256 and owner (the files
# themselves are their readers' once handed over); what a deploy replaces waits in .previous
# until the deploy is through, for put_back_on_host().
DIGESTS = ".digests.json"
ASIDE = ".previous"

SET_ASIDE_SCRIPT = (
    'cd "$1" && shift && rm -rf secrets/.previous && mkdir -p -m 0700 secrets && '
    'chmod 0700 secrets && for p; do d=${p%/*}; mkdir -p -m 0711 "$d" && chmod 0711 "$d" && '
    'if [ -e "$p" ]; then mkdir -p -m 0700 "secrets/.previous/${d#secrets/}" && '
    'mv "$p" "secrets/.previous/${p#secrets/}"; fi; done'
)
PUT_BACK_SCRIPT = (
    'cd "$1" && shift && for p; do a="secrets/.previous/${p#secrets/}"; '
    'if [ -e "$a" ]; then mv -f "$a" "$p"; else rm -f "$p"; fi; done && rm -rf secrets/.previous'
)


@dataclass(frozen=True)
class HostChange:
    changed: tuple[str, ...]
    digests_before: str  # the digests file's text before, "" when there was none


def digest_line(path: str, content: bytes) -> str:
    return f"{hashlib.sha256(content).hexdigest()} {reader_of(path)}"


def install_on_host(
    runner: Runner, root: str, files: Mapping[str, bytes], image: str
) -> HostChange:
    """Put the files that changed (relative paths secrets/<service>/<name> under `root`) in
    place, 0400, handed to their readers; the ones they replace set aside."""
    digests = f"{root}/secrets/{DIGESTS}"
    read = runner.run(Command(("cat", digests), mutates=False), check=False)
    before = read.stdout if read.ok else ""
    try:
        known = json.loads(before) if before.strip() else {}
    except ValueError:
        known = {}
    wanted = {p: digest_line(p, c) for p, c in files.items()}
    changed = tuple(sorted(p for p in wanted if known.get(p) != wanted[p]))
    if not changed:
        return HostChange((), before)
    runner.run(Command(("sh", "-c", SET_ASIDE_SCRIPT, "sh", root, *changed)))
    for path in changed:
        runner.put(files[path], f"{root}/{path}", 0o400)
    owners = {p: reader_of(p) for p in changed}
    runner.run(Command(commands.chown_secrets(image, root, owners), timeout=120),
               fix="the engine must run the image the release pulled")  # fmt: skip
    runner.put((json.dumps(wanted, indent=1, sort_keys=True) + "\n").encode(), digests, 0o600)
    return HostChange(changed, before)


def put_back_on_host(runner: Runner, root: str, change: HostChange) -> None:
    """The files as they were before install_on_host()."""
    if not change.changed:
        return
    runner.run(Command(("sh", "-c", PUT_BACK_SCRIPT, "sh", root, *change.changed)))
    digests = f"{root}/secrets/{DIGESTS}"
    if change.digests_before:
        runner.put(change.digests_before.encode(), digests, 0o600)
    else:
        runner.run(Command(("rm", "-f", digests)))


def forget_previous_on_host(runner: Runner, root: str) -> None:
    runner.run(Command(("rm", "-rf", f"{root}/secrets/{ASIDE}")), check=False)


# The edge's private key: nginx runs as its own user (101), which must read it. The TLS folder
# stays the deploy user's, 0711 (nginx opens its files by name and lists nothing).
NGINX_KEY = "privkey.pem"


def nginx_key_argv(tls_dir: str) -> tuple[str, ...]:
    return ("stat", "-c", "%u:%g", f"{tls_dir}/{NGINX_KEY}")


def hand_key_to_nginx(runner: Runner, tls_dir: str, image: str, local: bool) -> None:
    """privkey.pem to nginx's user, unless it is already; `local`: this machine, where root
    chowns it itself."""
    owner = READERS["nginx"]
    if runner.dry_run:
        runner.events.command(f"[{runner.host}] hand {tls_dir}/{NGINX_KEY} to {owner}",
                              run=False)  # fmt: skip
        return
    runner.run(Command(("chmod", "0711", tls_dir)))
    now = runner.run(Command(nginx_key_argv(tls_dir), mutates=False), check=False)
    if not now.ok or now.stdout.strip() == owner:
        return
    if local and os.geteuid() == 0:
        uid, _, gid = owner.partition(":")
        os.chown(Path(tls_dir) / NGINX_KEY, int(uid), int(gid))
        return
    runner.run(Command(commands.chown_secrets(image, tls_dir, {NGINX_KEY: owner}), timeout=120),
               fix="the engine must run the image the release pulled")  # fmt: skip
