"""The checks behind the automated checklist items: each reads what its item needs (files,
commands through the runner, S3, DNS) and hands it to an evaluator (evaluate.py).

A part several items need (the host over SSH, the bucket) is reached once: the item that asks
first fails when it cannot be had, and the items after it are skipped naming that reason.
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import ssl
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from deploysuite.backup import s3 as s3store
from deploysuite.backup.context import open_bucket
from deploysuite.backup.dump import list_backups
from deploysuite.backup.postgres import Postgres, databases, postgres_for
from deploysuite.config.envfile import read_env_file
from deploysuite.config.layers import Config, closest
from deploysuite.config.session import Session
from deploysuite.core.errors import ChecksFailed, ConfigError, S3Error, SuiteError
from deploysuite.core.runner import Command, Runner
from deploysuite.deploy import target as targets
from deploysuite.deploy.local import deploy_paths, server_names, uses_local_ca
from deploysuite.deploy.preflight import preflight
from deploysuite.deploy.preflight_items import evaluate as ev
from deploysuite.deploy.preflight_items import records
from deploysuite.deploy.preflight_items.registry import Item, automated_items
from deploysuite.deploy.release import SECRET_FILES
from deploysuite.edge import tls
from deploysuite.engines.hosts import deploy_engine, hosts_for
from deploysuite.engines.stack import services_env_file
from deploysuite.images.registry import login_argv, registry_host
from deploysuite.monitoring.stack import monitoring_enabled

DNS_TIMEOUT = 10.0


class Unavailable(Exception):
    """A part the item needs could not be had, as an earlier item already reported."""


@dataclass
class Probe:
    """What the checks of one preflight run share: the session, the tree the release is built
    from, the time they judge against, and the parts reached once (closed by `resources`)."""

    s: Session
    tree: Path
    now: dt.datetime
    resources: ExitStack
    _target: targets.Target | None = None
    _bucket: tuple[s3store.S3Settings, s3store.S3Client] | None = None
    _lost: dict[str, str] = field(default_factory=dict)  # part -> why it could not be had

    @property
    def config(self) -> Config:
        return self.s.config

    @property
    def env(self) -> str:
        return self.config.env

    @property
    def remote(self) -> bool:
        return self.env != "local"

    def _reach(self, part: str, make: Callable[[], Any]) -> Any:
        if part in self._lost:
            raise Unavailable(f"{part} could not be reached ({self._lost[part]})")
        try:
            return make()
        except SuiteError as exc:
            self._lost[part] = exc.what
            raise

    def target(self) -> targets.Target:
        """The environment's host over SSH (remote environments)."""
        if self._target is None:
            connect = targets.connect(self.s)
            self._target = self._reach("the host", lambda: self.resources.enter_context(connect))
        return self._target

    def bucket(self) -> tuple[s3store.S3Settings, s3store.S3Client]:
        """The backup bucket, after one listing proved it answers."""
        if not self.config.get("S3_BUCKET"):
            raise Unavailable(f"S3_BUCKET is not set: '{self.env}' keeps no backups in S3")
        if self._bucket is None:
            self._bucket = self._reach("the bucket", lambda: reached(*open_bucket(self.s)))
        return self._bucket

    def runner(self) -> Runner:
        """The runner where the stack runs: the host's, or this machine's."""
        return self.target().runner if self.remote else self.s.runner

    def read(self, runner: Runner, argv: tuple[str, ...], timeout: float = 60) -> tuple[bool, str]:
        result = runner.run(Command(argv, mutates=False, timeout=timeout), check=False)
        # rstrip only: git status --porcelain starts lines with a space
        return result.ok, runner.masker((result.stdout or result.stderr).rstrip())


def reached(
    store: s3store.S3Settings, s3: s3store.S3Client
) -> tuple[s3store.S3Settings, s3store.S3Client]:
    """The bucket, once one listing of the suite's folder (one object at most) answered."""
    with s3store.translated(s3, store.bucket):
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=store.bucket, Prefix=store.folder, PaginationConfig={"MaxItems": 1}
        )
        next(iter(pages), None)
    return store, s3


# --- configuration and secrets


def config_valid(p: Probe) -> ev.Finding:
    return ev.config_finding(p.config)


def secrets_strong(p: Probe) -> ev.Finding:
    example = read_env_file(p.config.paths.schema)
    return ev.secrets_finding(p.config, ev.example_values(example, p.config.schema))


def file_mode(path: Path) -> int | None:
    return path.stat().st_mode & 0o777 if path.exists() else None


def stat_argv(paths: Sequence[str]) -> tuple[str, ...]:
    script = 'for f in "$@"; do [ -e "$f" ] && stat -L -c "%a %n" "$f"; done; true'
    return ("sh", "-c", script, "sh", *paths)


def secret_files_private(p: Probe) -> ev.Finding:
    tls_dir = deploy_paths(p.config).tls_dir
    local = [p.config.paths.env_secrets, services_env_file(p.config), tls_dir / tls.KEY,
             tls_dir / tls.CA_KEY]  # fmt: skip
    modes: dict[str, int | None] = {str(path): file_mode(path) for path in local}
    if p.remote:
        t = p.target()
        on_host = [f"{t.layout.current}/{name}" for name in SECRET_FILES]
        _, text = p.read(t.runner, stat_argv([*on_host, f"{t.layout.tls}/{tls.KEY}"]))
        host = t.conn.host.name
        modes.update({f"{host}:{path}": mode for path, mode in ev.parse_stat(text).items()})
    return ev.modes_finding(modes)


# --- hosts and engine


def ssh_host_keys_pinned(p: Probe) -> ev.Finding:
    if not p.remote:
        return ev.skipped("the local environment runs on this machine's engine: no SSH host")
    hosts = hosts_for(p.config)
    texts = {h.known_hosts: h.known_hosts.read_text(encoding="utf-8")
             if h.known_hosts.is_file() else None for h in hosts}  # fmt: skip
    return ev.host_keys_finding(hosts, texts)


def engine_versions(p: Probe) -> ev.Finding:
    if not p.remote:
        runner = p.s.runner
        docker = p.read(runner, ("docker", "version", "--format", "{{.Server.Version}}"), 30)
        compose = p.read(runner, ("docker", "compose", "version", "--short"), 30)
        return ev.versions_finding(docker, compose)
    try:
        rows = preflight(p.target())
    except ChecksFailed as exc:
        return ev.failed(exc.what, exc.fix or "")
    return ev.passed(ev.host_rows_evidence(rows))


def stack_folder(p: Probe) -> str:
    """Where the stack's data lives: the release root on a host; locally the engine's data
    root (images, volumes), or the build folder when the engine does not answer."""
    if p.remote:
        return p.target().layout.root
    ok, root = p.read(p.s.runner, ("docker", "info", "--format", "{{.DockerRootDir}}"), 30)
    return root if ok and root.startswith("/") else str(deploy_paths(p.config).build_dir)


def disk_free(p: Probe) -> ev.Finding:
    folder = stack_folder(p)
    ok, text = p.read(p.runner(), ev.disk_argv(folder), 30)
    need = int(p.config.get("DEPLOY_MIN_FREE_MB") or 2048)
    return ev.disk_finding(text if ok else "", folder, need)


# --- DNS and TLS


def resolve(names: Sequence[str], timeout: float = DNS_TIMEOUT) -> dict[str, list[str] | str]:
    """Each name's addresses through this machine's resolver, or why there are none."""
    pool = ThreadPoolExecutor(max_workers=max(1, len(names)))
    futures = {name: pool.submit(socket.getaddrinfo, name, None, type=socket.SOCK_STREAM)
               for name in names}  # fmt: skip
    answers: dict[str, list[str] | str] = {}
    for name, future in futures.items():
        try:
            answers[name] = sorted({str(info[4][0]) for info in future.result(timeout)})
        except FutureTimeout:
            answers[name] = f"no answer in {timeout:g} s"
        except OSError as exc:
            answers[name] = str(exc)
    pool.shutdown(wait=False, cancel_futures=True)
    return answers


def host_addresses(config: Config) -> set[str]:
    """The addresses users should reach: the hosts' (a swarm's edge nodes'), resolved."""
    hosts = hosts_for(config)
    if deploy_engine(config) == "swarm":
        hosts = [h for h in hosts if "edge" in h.roles] or hosts
    answers = resolve([h.address for h in hosts])
    return {a for answer in answers.values() if not isinstance(answer, str) for a in answer}


def dns_resolves(p: Probe) -> ev.Finding:
    names = ev.public_names(p.config.require("PUBLIC_URL"), server_names(p.config))
    expected = host_addresses(p.config) if p.remote else None
    return ev.dns_finding(resolve(names), expected)


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        return []


def system_roots() -> list[x509.Certificate]:
    """The CAs this machine trusts (its default CA bundle)."""
    roots = []
    with warnings.catch_warnings():
        # an old root or two in the bundle has a negative serial: parsed, with a warning
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        for der in ssl.create_default_context().get_ca_certs(binary_form=True):
            try:
                roots.append(x509.load_der_x509_certificate(der))
            except ValueError:
                continue  # an entry cryptography will not parse cannot anchor a path either
    return roots


def tls_certificate(p: Probe) -> ev.Finding:
    names = server_names(p.config)
    min_days = int(p.config.get("ALERT_CERT_EXPIRY_DAYS") or 14)
    if uses_local_ca(p.config):
        folder = deploy_paths(p.config).tls_dir
        if not (folder / tls.CERT).is_file():
            return ev.skipped(f"no certificate in {folder} yet: the deploy makes one signed "
                              f"by the suite's CA (inv certs.local --env={p.env} makes it "
                              "now)")  # fmt: skip
        ca = folder / tls.CA_CERT
        roots = load_certificates(ca.read_bytes()) if ca.is_file() else []
        return ev.certificate_finding((folder / tls.CERT).read_bytes(), str(folder / tls.CERT),
                                      roots, names, p.now, min_days,
                                      f"inv certs.local --env={p.env} (inv deploy renews it "
                                      "too)")  # fmt: skip
    t = p.target()
    path = f"{t.layout.tls}/{tls.CERT}"
    result = t.runner.run(Command(("cat", path), mutates=False, timeout=30), check=False)
    pem = result.stdout.encode() if result.ok and result.stdout.strip() else None
    return ev.certificate_finding(pem, f"{t.conn.host.name}:{path}", system_roots(), names,
                                  p.now, min_days, f"inv certs.issue --env={p.env}")  # fmt: skip


# --- S3, backups, records


def bucket_encryption(s3: Any, bucket: str) -> list[dict[str, Any]] | None:
    """The bucket's default-encryption rules; None when it has none."""
    try:
        with s3store.translated(s3, bucket):
            answer = s3.get_bucket_encryption(Bucket=bucket)
    except S3Error as exc:
        if "ServerSideEncryptionConfigurationNotFound" in exc.what:
            return None
        raise
    return list(answer.get("ServerSideEncryptionConfiguration", {}).get("Rules", []))


def s3_bucket(p: Probe) -> ev.Finding:
    store, s3 = p.bucket()
    return ev.encryption_finding(bucket_encryption(s3, store.bucket), store.sse, store.bucket)


def s3_lifecycle(p: Probe) -> ev.Finding:
    store, s3 = p.bucket()
    rules = s3store.lifecycle(s3, store.bucket)
    return ev.lifecycle_finding(rules, store.folder, store.bucket, p.env)


def backups_fresh(p: Probe) -> ev.Finding:
    store, s3 = p.bucket()
    by_db = {db: list_backups(store, s3, p.env, db) for db in databases(p.config)}
    rpo = float(p.config.get("BACKUP_RPO_HOURS") or 6)
    return ev.backups_finding(by_db, p.now, rpo, p.env)


def record_place(p: Probe, *, needs_bucket: bool) -> records.RecordPlace:
    folder = records.local_folder(p.s)
    if needs_bucket or p.config.get("S3_BUCKET"):
        store, s3 = p.bucket()
        return records.RecordPlace(p.env, folder, store, s3)
    return records.RecordPlace(p.env, folder)


def dr_drill_recent(p: Probe) -> ev.Finding:
    place = record_place(p, needs_bucket=True)
    interval = float(p.config.get("DR_DRILL_INTERVAL_DAYS") or 30)
    record = records.newest(place, "drills")
    return ev.drill_finding(record, place.describe("drills"), p.now, interval, p.env)


def alerts_test_recent(p: Probe) -> ev.Finding:
    if not monitoring_enabled(p.config):
        return ev.skipped("Alertmanager is not part of this stack (COMPOSE_PROFILES has no "
                          "monitoring)")  # fmt: skip
    place = record_place(p, needs_bucket=False)
    interval = float(p.config.get("ALERT_TEST_INTERVAL_DAYS") or 30)
    record = records.newest(place, "alert-tests")
    return ev.alerts_test_finding(record, place.describe("alert-tests"), p.now, interval, p.env)


# --- registry, tree, migrations


def registry_login(p: Probe) -> ev.Finding:
    repository = p.config.require("IMAGE_REPOSITORY")
    host = registry_host(repository)
    if host is None:
        return ev.skipped(f"IMAGE_REPOSITORY={repository} names no registry: the images stay "
                          "on this machine's engine")  # fmt: skip
    user, password = p.config.get("REGISTRY_USERNAME"), p.config.get("REGISTRY_PASSWORD")
    if not user or not password:
        return ev.skipped(f"REGISTRY_USERNAME / REGISTRY_PASSWORD are not set: {host} is used "
                          "without a login")  # fmt: skip
    # A throwaway DOCKER_CONFIG: the login proves the credentials and leaves nothing behind.
    folder = tempfile.mkdtemp(prefix="preflight-docker-")
    try:
        command = Command(login_argv(folder, user, host), input=password.encode(),
                          mutates=False, timeout=60)  # fmt: skip
        result = p.s.runner.run(command, check=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    output = p.s.runner.masker(result.stderr or result.stdout)
    return ev.login_finding(result.ok, output, host, user)


def clean_tree(p: Probe) -> ev.Finding:
    tree = str(p.tree)
    ok, head = p.read(p.s.runner, ("git", "-C", tree, "rev-parse", "HEAD"), 30)
    if not ok:
        return ev.tree_finding(None, "", p.tree)
    ok, status = p.read(p.s.runner, ("git", "-C", tree, "status", "--porcelain"), 60)
    if not ok:
        return ev.failed(f"git status in {tree} failed: {status[:160]}", f"git -C {tree} status")
    return ev.tree_finding(head, status, p.tree)


def service_migrations(tree: Path, service: str) -> dict[int, tuple[str, str]]:
    folder = tree / "services" / service / "migrations"
    files = sorted(folder.glob("*.sql")) if folder.is_dir() else []
    return ev.code_migrations({f.name: f.read_text(encoding="utf-8") for f in files})


def applied_migrations(pg: Postgres, db: str) -> dict[int, str] | None:
    if not pg.exists(db):
        return None
    if pg.sql("SELECT to_regclass('schema_migrations') IS NOT NULL", db) != "t":
        return {}
    return ev.parse_applied(pg.sql("SELECT version || ' ' || checksum FROM schema_migrations "
                                   "ORDER BY version", db))  # fmt: skip


def migrations_match(p: Probe) -> ev.Finding:
    owners = databases(p.config)
    code = {db: service_migrations(p.tree, service) for db, service in owners.items()}
    if p.remote:
        p.target()  # a host already found unreachable skips this item instead of failing it
    with postgres_for(p.s) as pg:
        argv = ("docker", "ps", "--quiet", "--filter", f"name=^{pg.container}$",
                "--filter", "status=running")  # fmt: skip
        ok, running = p.read(pg.runner, argv, 30)
        if not ok or not running:
            return ev.skipped(f"PostgreSQL does not run in '{p.env}' ({pg.container}): "
                              "nothing applied to compare yet; the deploy applies every "
                              "migration")  # fmt: skip
        applied = {db: applied_migrations(pg, db) for db in owners}
    return ev.migrations_finding(code, applied, p.env)


CHECKS: dict[str, Callable[[Probe], ev.Finding]] = {
    check.__name__: check
    for check in (
        config_valid, secrets_strong, secret_files_private, ssh_host_keys_pinned, engine_versions,
        disk_free, dns_resolves, tls_certificate, s3_bucket, s3_lifecycle, backups_fresh,
        dr_drill_recent, alerts_test_recent, registry_login, clean_tree, migrations_match,
    )
}  # fmt: skip


def chosen_items(only: Sequence[str]) -> list[Item]:
    items = automated_items()
    known = [item.id for item in items]
    for name in only:
        if name not in known:
            guess = closest(name, known)
            raise ConfigError(f"--only {name}: no automated checklist item of that name",
                              f"did you mean {guess}?" if guess else
                              f"choose from {', '.join(known)}")  # fmt: skip
    return [item for item in items if not only or item.id in only]


def run_item(p: Probe, item: Item) -> dict[str, str]:
    """One item's row; a SuiteError inside its check is its failure, with the error's fix."""
    assert item.check is not None
    try:
        finding = CHECKS[item.check](p)
    except Unavailable as exc:
        finding = ev.skipped(str(exc))
    except SuiteError as exc:
        finding = ev.failed(exc.what, exc.fix or "see docs/deployment/preflight.md")
    except OSError as exc:
        finding = ev.failed(f"{type(exc).__name__}: {exc}", "see docs/deployment/preflight.md")
    p.s.events.info(f"  {item.id}: {finding.result}")
    return ev.row(item, finding)


def run_checklist(
    s: Session, tree: Path, now: dt.datetime, only: Sequence[str] = ()
) -> list[dict[str, str]]:
    """Every automated item (or those in `only`), in the registry's order: one row each."""
    items = chosen_items(only)
    with ExitStack() as resources:
        probe = Probe(s, tree, now, resources)
        return [run_item(probe, item) for item in items]
