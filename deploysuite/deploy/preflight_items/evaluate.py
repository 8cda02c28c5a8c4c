"""Pure evaluators of the preflight items: what was read (command output, files, S3 listings,
certificates) in, one Finding out (passed, failed or skipped, the evidence, the fix). No I/O:
checks.py reads, these judge, and tests/unit/test_preflight_items.py feeds them by hand."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store

from deploysuite.backup.catalog import finished_at
from deploysuite.config.envcheck import MIN_SECRET_BITS, Problem, check_config
from deploysuite.config.envfile import EnvFile, VarSpec
from deploysuite.config.layers import Config
from deploysuite.core.errors import ChecksFailed
from deploysuite.core.ssh import Host, trust_command
from deploysuite.deploy.preflight import MIN_COMPOSE, MIN_DOCKER, parse_version
from deploysuite.deploy.preflight_items.registry import Item
from deploysuite.images.services import version_tag

Outcome = Literal["passed", "failed", "skipped"]
COLUMNS = ["item", "result", "evidence", "fix"]
# What deploy/preflight.py asks of a host's Compose, asked of this machine's too.
# Below this share of free inodes a host full of small files (image layers, WAL segments)
# refuses new files while df -k still shows space.
MIN_FREE_INODES_PERCENT = 10
SHOWN = 4  # things named in one evidence cell (the four databases); the rest are counted


@dataclass(frozen=True)
class Finding:
    result: Outcome
    evidence: str
    fix: str = ""


def passed(evidence: str) -> Finding:
    return Finding("passed", evidence)


def failed(evidence: str, fix: str) -> Finding:
    return Finding("failed", evidence, fix)


def skipped(why: str) -> Finding:
    return Finding("skipped", why)


def row(item: Item, finding: Finding) -> dict[str, str]:
    return {
        "item": item.id, "result": finding.result, "evidence": finding.evidence,
        "fix": finding.fix, "group": item.group, "title": item.title, "check": item.check or "",
    }  # fmt: skip


def closing_error(env: str, rows: Sequence[Mapping[str, str]]) -> ChecksFailed | None:
    """The one line a failed preflight ends with: every failed item, and the fix."""
    bad = [r for r in rows if r["result"] == "failed"]
    if not bad:
        return None
    fix = bad[0]["fix"] if len(bad) == 1 else "see the FIX column of each failed item above"
    return ChecksFailed(
        f"preflight of '{env}' failed: {', '.join(r['item'] for r in bad)}",
        f"{fix}; then inv preflight --env={env} again",
    )


def listed(things: Sequence[str]) -> str:
    more = len(things) - SHOWN
    return "; ".join(things[:SHOWN]) + (f"; and {more} more" if more > 0 else "")


# --- configuration and secrets


def is_secret(schema: Mapping[str, VarSpec], key: str) -> bool:
    return key in schema and schema[key].is_secret


def config_finding(config: Config) -> Finding:
    """Everything `inv env.check` reports about the non-secret variables."""
    problems = [p for p in check_config(config) if not is_secret(config.schema, p.key)]
    if not problems:
        return passed(f"inv env.check finds no problem in {len(config.schema)} variables")
    fix = problems[0].fix if len(problems) == 1 else f"inv env.check --env={config.env}"
    return failed(listed([f"{p.key}: {p.message} ({p.location})" for p in problems]), fix)


def example_values(example: EnvFile, schema: Mapping[str, VarSpec]) -> dict[str, str]:
    """The values .env.example gives its secrets: published with the code, so never real."""
    return {e.key: e.value for e in example.entries if e.value and is_secret(schema, e.key)}


def secrets_finding(config: Config, examples: Mapping[str, str]) -> Finding:
    """Secrets set where required, no placeholder, generated ones strong (env.check's rules),
    and none equal to the example value .env.example publishes. Names only, never values."""
    problems: list[Problem] = [p for p in check_config(config)
                               if is_secret(config.schema, p.key)]  # fmt: skip
    regenerate = f"delete the line, then inv env.secrets --env={config.env}"
    kinds = {key: config.schema[key].secret for key in examples}
    reused = [
        Problem("error", key, "the example value of .env.example", config.settings[key].location,
                regenerate if kinds[key] == "generated" else f"set the real {key}")
        for key, value in sorted(examples.items()) if config.get(key) == value
    ]  # fmt: skip
    bad = problems + reused
    if bad:
        fixes = list(dict.fromkeys(p.fix for p in bad))
        return failed(listed([f"{p.key}: {p.message} ({p.location})" for p in bad]),
                      "; ".join(fixes[:2]))  # fmt: skip
    count = sum(1 for spec in config.schema.values() if spec.is_secret and config.get(spec.name))
    return passed(f"{count} secrets set; generated ones hold at least {MIN_SECRET_BITS} bits; "
                  "no placeholder, no example value")  # fmt: skip


def parse_stat(text: str) -> dict[str, int]:
    """`stat -c '%a %n'` lines -> path -> permission bits."""
    modes = {}
    for line in text.splitlines():
        mode, _, path = line.strip().partition(" ")
        if path and re.fullmatch(r"[0-7]{3,4}", mode):
            modes[path] = int(mode, 8)
    return modes


def modes_finding(modes: Mapping[str, int | None]) -> Finding:
    """modes: each secret file -> its permission bits, None when it does not exist."""
    present = {path: mode for path, mode in modes.items() if mode is not None}
    if not present:
        return skipped("no secret file exists yet (the secrets come from the process "
                       "environment, and nothing was deployed)")  # fmt: skip
    loose = {path: mode for path, mode in present.items() if mode & 0o077}
    if loose:
        return failed(
            listed([f"{path} is mode {mode:04o}: others than its owner can read it"
                    for path, mode in loose.items()]),
            "chmod 600 " + " ".join(path.rpartition(":")[2] for path in loose),
        )  # fmt: skip
    return passed(f"{len(present)} file(s) readable by their owner only: {listed(list(present))}")


# --- hosts


def is_pinned(known_hosts: str, name: str) -> bool:
    """Whether a known_hosts text holds a key for `name` (OpenSSH's `host` or `[host]:port`,
    hashed or not). Marker lines (@revoked, @cert-authority) pin nothing."""
    from paramiko.hostkeys import HostKeys

    for line in known_hosts.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith(("#", "@")):
            continue
        for entry in fields[0].split(","):
            hashed = entry.startswith("|1|")
            if entry == name or (hashed and HostKeys.hash_host(name, entry) == entry):
                return True
    return False


def host_keys_finding(hosts: Sequence[Host], texts: Mapping[Path, str | None]) -> Finding:
    """texts: each known_hosts file -> its text, None when it does not exist."""
    unpinned = [h for h in hosts if not is_pinned(texts.get(h.known_hosts) or "",
                                                  h.known_hosts_name)]  # fmt: skip
    if unpinned:
        return failed(
            listed([f"{h.name} ({h.known_hosts_name}) has no key in {h.known_hosts}"
                    + ("" if texts.get(h.known_hosts) is not None else " (no such file)")
                    for h in unpinned]),
            trust_command(unpinned[0]),
        )  # fmt: skip
    files = sorted({str(h.known_hosts) for h in hosts})
    return passed(f"{len(hosts)} host(s) pinned in {', '.join(files)}")


def versions_finding(docker: tuple[bool, str], compose: tuple[bool, str]) -> Finding:
    """(answered, output) of `docker version` and `docker compose version --short`."""
    (docker_ok, docker_text), (compose_ok, compose_text) = docker, compose
    problems = []
    if not docker_ok or parse_version(docker_text) < MIN_DOCKER:
        problems.append(f"engine: need 20.10+ answering this user: {docker_text[:120]}")
    if not compose_ok or parse_version(compose_text) < MIN_COMPOSE:
        problems.append(f"compose: need v2.20+: {compose_text[:120]}")
    if problems:
        return failed("; ".join(problems), "start the engine and install Compose v2 as the "
                      "README's set-up does (./scripts/quickstart)")  # fmt: skip
    return passed(f"engine {docker_text}, compose {compose_text}")


def host_rows_evidence(rows: Sequence[Mapping[str, str]]) -> str:
    """deploy/preflight.py's rows (ssh, docker, compose, disk, lock) as one evidence cell."""
    return "; ".join(f"{r['check']} {r['detail']}" for r in rows)


@dataclass(frozen=True)
class DfLine:
    filesystem: str
    total: int
    used: int
    available: int
    mount: str


def parse_df(text: str) -> list[DfLine]:
    """The data lines of `df -P` output (-k and -i alike); headers skipped."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1].isdigit() and fields[3].isdigit():
            found.append(DfLine(fields[0], int(fields[1]), int(fields[2]), int(fields[3]),
                                " ".join(fields[5:])))  # fmt: skip
    return found


def disk_argv(path: str) -> tuple[str, ...]:
    """df -Pk, then df -Pi, of the nearest folder that exists on the way to `path`."""
    script = 'd=$1; while [ ! -d "$d" ]; do d=$(dirname "$d"); done; df -Pk "$d" && df -Pi "$d"'
    return ("sh", "-c", script, "sh", path)


def disk_finding(output: str, path: str, need_mb: int) -> Finding:
    """disk_argv's output: free space (MiB) against need_mb, free inodes against
    MIN_FREE_INODES_PERCENT. A filesystem without an inode table (btrfs) reports 0 inodes."""
    lines = parse_df(output)
    if len(lines) != 2:
        return failed(f"cannot read df's output for {path}: {output.strip()[:160]}",
                      f"run df -Pk {path} and df -Pi {path} there")  # fmt: skip
    space, inodes = lines
    free_mb = space.available // 1024
    free_inodes = 100 * inodes.available / inodes.total if inodes.total else 100.0
    evidence = (f"{free_mb} MiB free (need {need_mb}), {free_inodes:.0f}% inodes free "
                f"(need {MIN_FREE_INODES_PERCENT}%) on {space.mount} ({path})")  # fmt: skip
    if free_mb < need_mb or free_inodes < MIN_FREE_INODES_PERCENT:
        return failed(evidence, "free space there: docker system prune, old releases "
                      "(DEPLOY_KEEP_RELEASES), logs; or grow the volume")  # fmt: skip
    return passed(evidence)


# --- DNS


def public_names(public_url: str, server_names: Sequence[str]) -> list[str]:
    """The names users reach: PUBLIC_URL's host and every SERVER_NAMES entry."""
    host = urlsplit(public_url).hostname
    return list(dict.fromkeys([*([host] if host else []), *server_names]))


def dns_finding(
    resolved: Mapping[str, Sequence[str] | str], expected: Collection[str] | None
) -> Finding:
    """resolved: each name -> its addresses, or the resolver's error. expected: the hosts'
    addresses (remote environments), None when any answer will do. A name passes when one of
    its addresses is a host's: a name may also point at more (IPv6, a second edge)."""
    problems, shown = [], []
    for name, answer in resolved.items():
        if isinstance(answer, str):
            problems.append(f"{name} does not resolve ({answer})")
        elif expected is not None and not set(answer) & set(expected):
            problems.append(f"{name} resolves to {', '.join(answer)}, none of them a host "
                            f"({', '.join(sorted(expected))})")  # fmt: skip
        else:
            shown.append(f"{name} -> {', '.join(answer)}")
    if problems:
        return failed(listed(problems), "add or correct the A/AAAA records of the names at the "
                      "DNS provider (or fix PUBLIC_URL / SERVER_NAMES)")  # fmt: skip
    return passed(listed(shown))


# --- TLS


def verify_name(name: str) -> DNSName | IPAddress:
    try:
        return IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return DNSName(name)


def common_name(name: x509.Name) -> str:
    found = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(found[0].value) if found else name.rfc4514_string()


def certificate_finding(
    chain_pem: bytes | None,
    where: str,
    roots: Sequence[x509.Certificate],
    names: Sequence[str],
    now: dt.datetime,
    min_days: int,
    renew: str,
) -> Finding:
    """The leaf (first in the chain) valid now and for more than `min_days`, and, for every
    name, a path from it through the chain's intermediates to one of `roots` (RFC 5280 path
    validation, names included). `renew`: the command that makes a new one."""
    if chain_pem is None:
        return failed(f"no certificate at {where}", renew)
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        return failed(f"{where} holds no PEM certificate", renew)
    leaf = chain[0]
    until = leaf.not_valid_after_utc
    if now < leaf.not_valid_before_utc:
        start = leaf.not_valid_before_utc
        return failed(f"{where}: not valid before {start:%Y-%m-%d %H:%M} UTC (this machine's "
                      "clock, or a certificate issued ahead)", renew)  # fmt: skip
    if until <= now:
        return failed(f"{where}: expired on {until:%Y-%m-%d}", renew)
    left = until - now
    if left <= dt.timedelta(days=min_days):
        return failed(f"{where}: expires on {until:%Y-%m-%d}, in {left.days} days (needs more "
                      f"than {min_days}: ALERT_CERT_EXPIRY_DAYS)", renew)  # fmt: skip
    if not roots:
        return failed("no trusted root certificate to check the chain against",
                      "install the system's CA bundle (ca-certificates)")  # fmt: skip
    for name in names:
        verifier = PolicyBuilder().store(Store(list(roots))).time(now)
        try:
            verifier.build_server_verifier(verify_name(name)).verify(leaf, chain[1:])
        except Exception as exc:  # cryptography's VerificationError, and bad names
            reason = str(exc).split(" (encountered", 1)[0]
            if "subjectAltName" in reason:
                return failed(f"{where} does not cover {name} ({reason})",
                              f"{renew} (for every name in SERVER_NAMES)")  # fmt: skip
            return failed(f"{where}: no valid chain to a trusted root for {name} ({reason})",
                          "serve the full chain, leaf then intermediates (certbot's "
                          f"fullchain.pem, not cert.pem); {renew}")  # fmt: skip
    return passed(f"{common_name(leaf.subject)} by {common_name(leaf.issuer)}, chain of "
                  f"{len(chain)} to a trusted root, valid until {until:%Y-%m-%d} ({left.days} "
                  f"days), covers {', '.join(names)}")  # fmt: skip


# --- S3


def encryption_finding(rules: Sequence[Mapping[str, Any]] | None, sse: str, bucket: str) -> Finding:
    """rules: the bucket's default-encryption rules (None: it sets none); sse: S3_SSE, what the
    suite asks for on every object it writes."""
    algorithms = [str(r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm"))
                  for r in rules or []]  # fmt: skip
    if algorithms:
        return passed(f"s3://{bucket} reachable; default encryption {', '.join(algorithms)}; "
                      f"the suite writes with S3_SSE={sse}")  # fmt: skip
    if sse != "none":
        return passed(f"s3://{bucket} reachable; every object the suite writes asks for "
                      f"S3_SSE={sse} (the bucket sets no default encryption)")  # fmt: skip
    return failed(f"s3://{bucket}: objects are stored unencrypted (S3_SSE=none and no default "
                  "encryption on the bucket)", "set S3_SSE=AES256 (or aws:kms), or turn on the "
                  "bucket's default encryption")  # fmt: skip


def rule_prefix(rule: Mapping[str, Any]) -> str:
    """The key prefix a lifecycle rule applies to ("" = the whole bucket)."""
    rule_filter = rule.get("Filter") or {}
    return str(rule_filter.get("Prefix") or rule_filter.get("And", {}).get("Prefix")
               or rule.get("Prefix") or "")  # fmt: skip


def lifecycle_finding(
    rules: Sequence[Mapping[str, Any]], folder: str, bucket: str, env: str
) -> Finding:
    """An enabled rule that expires objects and whose prefix holds the suite's folder."""
    covering = [r for r in rules if r.get("Status") == "Enabled" and r.get("Expiration")
                and folder.startswith(rule_prefix(r))]  # fmt: skip
    if not covering:
        return failed(f"s3://{bucket}: no enabled expiry rule covers {folder} "
                      f"({len(rules)} rule(s) on the bucket)",
                      f"inv backup.lifecycle --env={env}")  # fmt: skip
    rule = covering[0]
    aborts = "aborts" if rule.get("AbortIncompleteMultipartUpload") else "does not abort"
    return passed(f"rule {rule.get('ID', '?')} on '{rule_prefix(rule) or '(bucket)'}': expiry "
                  f"{rule['Expiration']}, {aborts} stale uploads")  # fmt: skip


# --- backups, drills, alert tests


def age_hours(record: Mapping[str, object], now: dt.datetime) -> float:
    return (now - finished_at(record)).total_seconds() / 3600


def backups_finding(
    by_db: Mapping[str, Sequence[Mapping[str, object]]],
    now: dt.datetime,
    rpo_hours: float,
    env: str,
) -> Finding:
    """by_db: each database -> its complete backups' manifests. The newest with "verified"
    (read back from S3 after upload) must be younger than the RPO."""
    problems, fresh = [], []
    for db, manifests in by_db.items():
        verified = [m for m in manifests if m.get("verified")]
        if not verified:
            problems.append(f"{db}: no verified backup"
                            + (f" ({len(manifests)} unverified)" if manifests else ""))  # fmt: skip
            continue
        newest = max(verified, key=finished_at)
        age = age_hours(newest, now)
        text = f"{db} {newest['backup_id']} {age:.1f} h old"
        (problems if age > rpo_hours else fresh).append(text)
    if problems:
        return failed(listed(problems) + f" (RPO {rpo_hours:g} h)",
                      f"inv backup --env={env} --verify, then find why the schedule stopped: "
                      f"inv logs --env={env} --service backup")  # fmt: skip
    return passed(listed(fresh) + f" (RPO {rpo_hours:g} h)")


def record_age_finding(
    record: Mapping[str, Any] | None,
    where: str,
    now: dt.datetime,
    interval_days: float,
    what: str,
    fix: str,
) -> Finding:
    """The newest record of a drill or a test: there, passed, and younger than the interval."""
    if record is None:
        return failed(f"no {what} on record in {where}", fix)
    age = now - finished_at(record)
    when = f"{what} of {record.get('finished')} ({age.total_seconds() / 86400:.1f} days ago)"
    if not record.get("passed"):
        return failed(f"the last {when} failed: {', '.join(record.get('failed') or []) or '?'}",
                      fix)  # fmt: skip
    if age > dt.timedelta(days=interval_days):
        return failed(f"the last {when} is older than {interval_days:g} days", fix)
    return passed(f"the last {when} passed")


def drill_finding(
    record: Mapping[str, Any] | None, where: str, now: dt.datetime, interval_days: float, env: str
) -> Finding:
    finding = record_age_finding(record, where, now, interval_days, "restore drill",
                                 f"inv dr.drill --env={env}")  # fmt: skip
    if finding.result == "passed" and record is not None:
        return passed(f"{finding.evidence} (targets: RPO {record.get('rpo_hours')} h, RTO "
                      f"{record.get('rto_hours')} h)")  # fmt: skip
    return finding


def alerts_test_finding(
    record: Mapping[str, Any] | None, where: str, now: dt.datetime, interval_days: float, env: str
) -> Finding:
    return record_age_finding(record, where, now, interval_days, "alert routing test",
                              f"inv alerts.test --env={env}")  # fmt: skip


# --- registry, git tree, migrations


def login_finding(ok: bool, output: str, host: str, user: str) -> Finding:
    """`docker login`'s outcome; output is already masked."""
    if ok:
        return passed(f"{host} accepted the login of {user}")
    last = (output.strip().splitlines() or ["no output"])[-1][:200]
    lowered = last.lower()
    if any(word in lowered for word in ("refused", "no such host", "timeout", "unreachable")):
        return failed(f"{host} is not reachable: {last}", f"check that {host} is up and "
                      "reachable from here, and IMAGE_REPOSITORY")  # fmt: skip
    return failed(f"{host} refused the login of {user}: {last}", "check REGISTRY_USERNAME and "
                  "REGISTRY_PASSWORD (a token allowed to pull and push)")  # fmt: skip


def tree_finding(head: str | None, porcelain: str, tree: Path) -> Finding:
    """head: `git rev-parse HEAD` (None: not a checkout); porcelain: `git status --porcelain`."""
    if not head:
        return failed(
            f"{tree} is not a git checkout",
            "build and deploy from the repository's checkout (or point --tree at it)",
        )
    changes = [line[3:] for line in porcelain.splitlines() if line.strip()]
    if changes:
        return failed(f"{len(changes)} uncommitted change(s) in {tree}: {listed(changes)}; its "
                      f"images would be tagged {version_tag(head, True)}",
                      f"commit (or remove) them: git -C {tree} status")  # fmt: skip
    return passed(f"HEAD {head[:12]}, nothing uncommitted: images are tagged "
                  f"{version_tag(head, False)}")  # fmt: skip


# The services' own rule for migration files (services/lib/saaschat/db.py, MIGRATION_FILE).
MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9][a-z0-9_]*)\.sql$")


def code_migrations(files: Mapping[str, str]) -> dict[int, tuple[str, str]]:
    """A service's migration files (name -> text) -> version -> (file name, SHA-256), the
    checksum the migration runner records in schema_migrations."""
    found = {}
    for name, text in files.items():
        match = MIGRATION_FILE.match(name)
        if match:
            found[int(match["version"])] = (name, hashlib.sha256(text.encode()).hexdigest())
    return found


def parse_applied(text: str) -> dict[int, str]:
    """`version checksum` lines (schema_migrations) -> version -> checksum."""
    applied = {}
    for line in text.splitlines():
        version, _, checksum = line.strip().partition(" ")
        if version.isdigit():
            applied[int(version)] = checksum.strip()
    return applied


def migrations_finding(
    code: Mapping[str, Mapping[int, tuple[str, str]]],
    applied: Mapping[str, Mapping[int, str] | None],
    env: str,
) -> Finding:
    """code: each database -> its service's migrations; applied: each database -> what its
    schema_migrations records (None: no such database yet). An applied migration whose file
    changed, or one the code does not have (the target is ahead of the release), fails;
    pending ones pass: the deploy applies them."""
    problems, states = [], []
    for db, files in code.items():
        done = applied.get(db)
        if done is None:
            states.append(f"{db}: no database yet, {len(files)} to apply")
            continue
        edited = [files[v][0] for v, checksum in sorted(done.items())
                  if v in files and files[v][1] != checksum]  # fmt: skip
        ahead = sorted(v for v in done if v not in files)
        if edited:
            problems.append(f"{db}: {', '.join(edited)} changed after it was applied")
        if ahead:
            problems.append(f"{db}: schema {max(done)} is ahead of the code (no migration "
                            f"{', '.join(f'{v:04d}' for v in ahead)} in it)")  # fmt: skip
        pending = len([v for v in files if v not in done])
        states.append(f"{db}: schema {max(done, default=0)}"
                      + (f", {pending} pending" if pending else ""))  # fmt: skip
    if problems:
        return failed(listed(problems), "never edit an applied migration: restore the file from "
                      "git and add a new one; a database ahead of the code needs the release that "
                      f"migrated it (inv releases --env={env} lists them)")  # fmt: skip
    return passed(listed(states) + " (pending ones are applied by the deploy)")
