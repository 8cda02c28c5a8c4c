"""A remote environment's host as the deploy sees it: the connection, the runner bound to it, the
release folders ($DEPLOY_ROOT/<env>/releases, current, live, tls, audit.log) and the commands
that read and change them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from deploysuite.config.layers import Config
from deploysuite.config.session import Session
from deploysuite.core.runner import Command, Runner
from deploysuite.core.ssh import SshConnection
from deploysuite.deploy import release as rel
from deploysuite.engines import hosts
from deploysuite.engines.compose import ComposeEngine, batch_size
from deploysuite.engines.stack import COMPOSE_FILE, Stack, compose_profiles


@dataclass
class Target:
    """One environment's host: its connection, the runner bound to it, its folders."""

    config: Config
    conn: SshConnection
    runner: Runner
    layout: rel.Layout
    # --dry-run plans against a scratch copy of the new release (removed afterwards)
    scratch: dict[str, str] = field(default_factory=dict)

    @property
    def project(self) -> str:
        return self.config.require("COMPOSE_PROJECT_NAME")

    def stack(self, release_id: str) -> Stack:
        folder = Path(self.scratch.get(release_id) or self.layout.release(release_id))
        profiles = compose_profiles(self.config)
        # compose reads `.env` from the first file's folder: the release's own variables
        return Stack(self.project, (folder / COMPOSE_FILE, folder / "services.env.yml"), profiles)

    def engine(self, release_id: str) -> ComposeEngine:
        """Compose on the host's engine, acting on the release's files (its own `.env`)."""
        return ComposeEngine(self.runner, self.stack(release_id), {}, self.config.env,
                             batch_size=batch_size(self.config))  # fmt: skip

    def reconnect_if_lost(self) -> None:
        """After a dropped connection: a new one, verified the same way, for what must still
        happen on the host (the rollback, the manifest, the lock, the audit)."""
        if not self.conn.alive():
            with self.runner.events.step(f"reconnect to {self.conn.host.name}"):
                self.conn.reconnect()

    def reconnect_after(self, failure: BaseException | None) -> None:
        """Before the rollback: a new connection when the old one died, or when a Ctrl-C
        interrupted a command on it (SshConnection.renew says why it is not reused)."""
        if isinstance(failure, KeyboardInterrupt) and self.conn.alive():
            step = f"reconnect to {self.conn.host.name} (the interrupted connection is not reused)"
            with self.runner.events.step(step):
                self.conn.renew()
        else:
            self.reconnect_if_lost()


@contextmanager
def connect(s: Session) -> Iterator[Target]:
    with hosts.connect(s.config, s.events, s.runner) as host:
        yield Target(
            s.config,
            host.conn,
            host.runner,
            rel.layout(s.config.require("DEPLOY_ROOT"), s.config.env),
        )


def upload(runner: Runner, folder: str, files: Mapping[str, bytes]) -> None:
    dirs = sorted({folder} | {f"{folder}/{Path(name).parent}" for name in files if "/" in name})
    runner.run(Command(("mkdir", "-p", "-m", "0700", *dirs)))
    for name, data in sorted(files.items()):
        mode = 0o600 if Path(name).name in rel.SECRET_FILES else 0o644
        if name.startswith(rel.SECRETS_FOLDER):
            mode = 0o400
        runner.put(data, f"{folder}/{name}", mode)


PLANNING_PREFIX = ".plan-"


def clean_planning_copies_argv(root: str) -> tuple[str, ...]:
    """Remove (and name) the environment's planning folders older than 10 minutes."""
    script = ('mkdir -p -m 0700 "$1" && find "$1" -mindepth 1 -maxdepth 1 -type d '
              f'-name "{PLANNING_PREFIX}*" -mmin +10 -print -exec rm -rf {{}} +')  # fmt: skip
    return ("sh", "-c", script, "sh", root)


@contextmanager
def planning_copy(t: Target, release_id: str, files: Mapping[str, bytes]) -> Iterator[None]:
    """--dry-run: the release's files in a private temporary folder on the host, so that the
    plan reads what the deploy would (compose resolves files there); removed afterwards."""
    if not t.runner.dry_run:
        yield
        return
    real = Runner(t.runner.events, t.runner.masker, dry_run=False, transport=t.conn)
    # A dry run killed outright (kill -9, a lost laptop) leaves its copy, secrets included:
    # the next run removes what is older than any dry run takes, and says so.
    cleaned = real.run(Command(clean_planning_copies_argv(t.layout.root), mutates=False),
                       check=False)  # fmt: skip
    left = cleaned.stdout
    if not cleaned.ok:
        t.runner.events.warn(f"leftover planning folders under {t.layout.root} could not all be "
                             f"removed: {cleaned.stderr.strip()[-200:]}")  # fmt: skip
    if left.split():
        t.runner.events.info(f"  removed {len(left.split())} leftover planning folder(s) of "
                             "an interrupted --dry-run")  # fmt: skip
    folder = real.run(
        Command(("mktemp", "-d", f"{t.layout.root}/{PLANNING_PREFIX}XXXXXX"), mutates=False)
    ).stdout.strip()
    try:
        upload(real, folder, files)
        t.scratch[release_id] = folder
        t.runner.aliases[folder] = t.layout.release(release_id)
        yield
    finally:
        t.scratch.pop(release_id, None)
        t.runner.aliases.pop(folder, None)
        real.run(Command(("rm", "-rf", folder)), check=False)


def activate_config(t: Target, release_id: str) -> None:
    """Copy the release's nginx and Prometheus configuration into the folders the running
    containers mount. Files are rewritten in place: nginx.conf is a single-file bind mount."""
    script = (
        'set -e; for part in nginx prometheus; do src="$1/$part"; dst="$2/$part"; '
        'mkdir -p "$dst"; for d in "$dst"/*/; do [ -d "$d" ] && find "$d" -mindepth 1 -delete; '
        'done; cp -R "$src"/. "$dst"/; chmod -R u=rwX,go=rX "$dst"; done; '
        # Alertmanager's secrets (the webhook URL) stay the deploy user's alone
        's="$2/prometheus/alertmanager/secrets"; if [ -d "$s" ]; then chmod -R go= "$s"; fi'
    )
    t.runner.run(Command(("sh", "-c", script, "sh", t.layout.release(release_id), t.layout.live)))


def nginx_running(t: Target) -> bool:
    argv = ("docker", "inspect", "--format", "{{.State.Running}}", f"{t.project}-nginx-1")
    result = t.runner.run(Command(argv, mutates=False), check=False)
    return result.ok and result.stdout.strip() == "true"


def check_nginx(t: Target) -> None:
    argv = ("docker", "exec", f"{t.project}-nginx-1", "nginx", "-t", "-q")
    t.runner.run(Command(argv), fix="the rendered nginx configuration does not load")


def read_releases(t: Target) -> tuple[list[dict[str, object]], str | None]:
    """Every release's manifest and the id `current` points to."""
    script = (
        'for m in "$1"/releases/*/manifest.json; do [ -f "$m" ] && cat "$m"; done; '
        'echo "{\\"current\\": \\"$(readlink "$1/current" | sed "s|.*/||")\\"}"'
    )
    out = t.runner.run(Command(("sh", "-c", script, "sh", t.layout.root), mutates=False)).stdout
    records = rel.parse_lines(out)
    current = next((str(r["current"]) for r in records if set(r) == {"current"}), "") or None
    return [r for r in records if "release" in r], current


def write_manifest(t: Target, record: Mapping[str, object]) -> None:
    t.runner.put(rel.encode(record), f"{t.layout.release(str(record['release']))}/manifest.json",
                 0o644)  # fmt: skip


def mark_current(t: Target, release_id: str) -> None:
    """Atomic: a new symlink renamed over the old one."""
    tmp = f"{t.layout.current}.tmp"
    t.runner.run(Command(("ln", "-sfn", f"releases/{release_id}", tmp)))
    t.runner.run(Command(("mv", "-T", tmp, t.layout.current)))


def audit(t: Target, record: Mapping[str, object]) -> None:
    argv = ("sh", "-c", 'umask 077; cat >> "$1"', "sh", t.layout.audit_log)
    t.runner.run(Command(argv, input=rel.encode(record)), check=False)


def read_audit(t: Target) -> list[dict[str, object]]:
    argv = ("sh", "-c", 'cat "$1" 2>/dev/null || true', "sh", t.layout.audit_log)
    return rel.parse_lines(t.runner.run(Command(argv, mutates=False)).stdout)


def prune(t: Target, releases: list[dict[str, object]], keep_also: list[str | None]) -> list[str]:
    keep = int(t.config.get("DEPLOY_KEEP_RELEASES") or 5)
    gone = rel.to_prune([str(r["release"]) for r in releases], keep, keep_also)
    if gone:
        t.runner.run(Command(("rm", "-rf", *(t.layout.release(r) for r in gone))))
    return gone
