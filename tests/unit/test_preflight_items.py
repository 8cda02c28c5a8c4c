"""The preflight items' evaluators, fed by hand: each failure names its item and carries a fix;
the registry and DEPLOYMENT-CHECKLIST.md do not drift."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paramiko.hostkeys import HostKeys

from deploysuite.backup.catalog import lifecycle_rules
from deploysuite.config.envfile import parse_env_text
from deploysuite.core.errors import ConfigError
from deploysuite.core.ssh import Host
from deploysuite.deploy.preflight_items import checks, records
from deploysuite.deploy.preflight_items import evaluate as ev
from deploysuite.deploy.preflight_items.registry import ITEMS, render_checklist
from tests.unit.envtree import config_in

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
STRONG = {
    name: hashlib.sha256(name.encode()).hexdigest() + "Zq"  # 66 characters of two alphabets
    for name in ("POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "AUTH_TOKEN_SECRET",
                 "BILLING_WEBHOOK_SECRET", "MONGODB_PASSWORD", "REDIS_PASSWORD")
}  # fmt: skip


def item(item_id: str):
    return next(i for i in ITEMS if i.id == item_id)


def assert_fails(finding: ev.Finding, item_id: str, *words: str) -> None:
    """Failed, with a fix; the closing line names the item and carries that fix."""
    assert finding.result == "failed", finding
    assert finding.fix
    for word in words:
        assert word in finding.evidence, (word, finding.evidence)
    error = ev.closing_error("test", [ev.row(item(item_id), finding)])
    assert error is not None
    assert error.what == f"preflight of 'test' failed: {item_id}"
    assert finding.fix in (error.fix or "")


# --- the registry and the generated checklist


def test_every_automated_item_names_a_check_and_every_check_has_an_item():
    ids = [i.id for i in ITEMS]
    assert len(ids) == len(set(ids))
    used = [i.check for i in ITEMS if i.automated]
    assert sorted(used) == sorted(checks.CHECKS)
    for entry in ITEMS:
        assert entry.group in ("must", "should")
        assert bool(entry.why) != entry.automated, entry.id  # manual items say why, only they


def test_the_checklist_file_is_what_the_registry_renders():
    text = (REPO / "DEPLOYMENT-CHECKLIST.md").read_text(encoding="utf-8")
    assert text == render_checklist(), "run: inv preflight.checklist --write"


def test_the_checklist_marks_each_item_automated_or_manual():
    text = render_checklist()
    assert "- [ ] **tls**: " in text and "*automated: `tls_certificate`*" in text
    assert "*manual: The rota lives in the paging tool" in text
    assert text.index("## Must complete") < text.index("**on-call**") < text.index(
        "## Should complete") < text.index("**status-page**")  # fmt: skip


def test_several_failures_close_with_one_line_naming_each():
    rows = [ev.row(item("tls"), ev.failed("expired", "renew")),
            ev.row(item("dns"), ev.passed("ok")),
            ev.row(item("backups"), ev.failed("old", "back up"))]  # fmt: skip
    error = ev.closing_error("prod", rows)
    assert error is not None and error.what == "preflight of 'prod' failed: tls, backups"
    assert "FIX column" in (error.fix or "") and "inv preflight --env=prod" in (error.fix or "")
    assert ev.closing_error("prod", [ev.row(item("dns"), ev.skipped("no"))]) is None


def test_an_unknown_item_is_refused_with_the_nearest_name():
    with pytest.raises(ConfigError, match="--only tsl: no automated checklist item") as info:
        checks.chosen_items(["tsl"])
    assert info.value.fix == "did you mean tls?"
    assert [i.id for i in checks.chosen_items(["dns", "tls"])] == ["dns", "tls"]


# --- configuration and secrets


def test_strong_secrets_pass(tmp_path):
    finding = ev.secrets_finding(config_in(tmp_path, **STRONG), {})
    assert finding.result == "passed" and "6 secrets set" in finding.evidence
    assert not any(value in finding.evidence for value in STRONG.values())


def test_a_weak_secret_fails_by_name_without_its_value(tmp_path):
    weak = {**STRONG, "AUTH_TOKEN_SECRET": "abcd" * 10}  # 40 characters, 2 bits each
    finding = ev.secrets_finding(config_in(tmp_path, **weak), {})
    assert_fails(finding, "secrets", "AUTH_TOKEN_SECRET: weak secret")
    assert "inv env.secrets --env=test" in finding.fix and "abcdabcd" not in finding.evidence


def test_a_placeholder_and_a_missing_secret_fail(tmp_path):
    values = {**STRONG, "POSTGRES_PASSWORD": "changeme"}  # pragma: allowlist secret
    del values["RABBITMQ_PASSWORD"]
    finding = ev.secrets_finding(config_in(tmp_path, **values), {})
    assert_fails(finding, "secrets", "POSTGRES_PASSWORD: holds a placeholder value",
                 "RABBITMQ_PASSWORD: required but not set")  # fmt: skip


def test_the_example_value_of_env_example_fails_even_when_strong(tmp_path):
    config = config_in(tmp_path, **STRONG)
    example = parse_env_text(f"POSTGRES_PASSWORD={STRONG['POSTGRES_PASSWORD']}\nPORT=8000\n"
                             "REDIS_PASSWORD=\n", Path(".env.example"))  # fmt: skip
    examples = ev.example_values(example, config.schema)
    assert examples == {"POSTGRES_PASSWORD": STRONG["POSTGRES_PASSWORD"]}  # secrets only, set
    finding = ev.secrets_finding(config, examples)
    assert_fails(finding, "secrets", "POSTGRES_PASSWORD: the example value of .env.example")
    assert finding.fix == "delete the line, then inv env.secrets --env=test"


def test_config_problems_other_than_secrets_fail_the_config_item(tmp_path):
    assert ev.config_finding(config_in(tmp_path, **STRONG)).result == "passed"
    finding = ev.config_finding(config_in(tmp_path, **STRONG, COMPOSE_PROJECT_NAME=""))
    assert_fails(finding, "config", "COMPOSE_PROJECT_NAME: required but not set")
    assert "POSTGRES" not in finding.evidence


def test_secret_files_must_be_private():
    assert ev.parse_stat("600 /a/secrets.env\n644 /a/b.env\nbogus\n") == {
        "/a/secrets.env": 0o600, "/a/b.env": 0o644}  # fmt: skip
    finding = ev.modes_finding({"/e/secrets.env": 0o644, "/b/key.pem": 0o600, "/x": None})
    assert_fails(finding, "secret-files", "/e/secrets.env is mode 0644")
    assert finding.fix == "chmod 600 /e/secrets.env"
    remote = ev.modes_finding({"app1:/srv/x/current/.env": 0o640})
    assert remote.fix == "chmod 600 /srv/x/current/.env"
    assert ev.modes_finding({"/e/secrets.env": 0o600, "/k": 0o400}).result == "passed"
    assert ev.modes_finding({"/e/secrets.env": None}).result == "skipped"


def test_stat_and_df_commands_are_data():
    assert checks.stat_argv(["/a", "/b c"]) == (
        "sh", "-c", 'for f in "$@"; do [ -e "$f" ] && stat -L -c "%a %n" "$f"; done; true',
        "sh", "/a", "/b c")  # fmt: skip
    assert ev.disk_argv("/srv/m") == (
        "sh", "-c", 'd=$1; while [ ! -d "$d" ]; do d=$(dirname "$d"); done; '
        'df -Pk "$d" && df -Pi "$d"', "sh", "/srv/m")  # fmt: skip


# --- hosts, engine, disk


def host(tmp_path: Path, port: int = 22) -> Host:
    return Host("app1", "203.0.113.10", tmp_path / "known_hosts", port=port)


def test_host_keys_pinned_plain_with_port_and_hashed(tmp_path):
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB"
    assert ev.is_pinned(f"203.0.113.10 {key}\n", "203.0.113.10")
    assert ev.is_pinned(f"a.example,[203.0.113.10]:2222 {key}\n", "[203.0.113.10]:2222")
    assert not ev.is_pinned(f"203.0.113.10 {key}\n", "[203.0.113.10]:2222")
    hashed = HostKeys.hash_host("203.0.113.10")
    assert ev.is_pinned(f"{hashed} {key}\n", "203.0.113.10")
    assert not ev.is_pinned(f"@revoked 203.0.113.10 {key}\n# 203.0.113.10 {key}\n",
                            "203.0.113.10")  # fmt: skip
    h = host(tmp_path)
    assert ev.host_keys_finding([h], {h.known_hosts: f"203.0.113.10 {key}\n"}).result == "passed"


def test_an_unpinned_host_fails_with_the_keyscan_command(tmp_path):
    h = host(tmp_path, port=2222)
    finding = ev.host_keys_finding([h], {h.known_hosts: None})
    assert_fails(finding, "ssh-host-keys", "app1 ([203.0.113.10]:2222) has no key", "no such file")
    assert finding.fix.startswith(f"ssh-keyscan -p 2222 203.0.113.10 >> {h.known_hosts}")


def test_engine_and_compose_versions():
    assert ev.versions_finding((True, "20.10.24"), (True, "2.40.3")).result == "passed"
    old = ev.versions_finding((True, "19.03.1"), (True, "1.29.2"))
    assert_fails(old, "engine", "engine: need 20.10+", "compose: need v2.20+")
    down = ev.versions_finding((False, "Cannot connect to the Docker daemon"), (True, "2.40.3"))
    assert_fails(down, "engine", "Cannot connect")


DF = """Filesystem     1024-blocks      Used Available Capacity Mounted on
/dev/sda1         41152736  30000000   {avail}      73% /var/lib/docker
Filesystem       Inodes  IUsed   IFree IUse% Mounted on
/dev/sda1       2621440 {iused} {ifree}   12% /var/lib/docker
"""


def df(avail: int, iused: int, ifree: int) -> str:
    return DF.format(avail=avail, iused=iused, ifree=ifree)


def test_df_parsing_reads_both_tables():
    lines = ev.parse_df(df(9_000_000, 100, 2_621_340))
    assert [(line.available, line.mount) for line in lines] == [
        (9_000_000, "/var/lib/docker"), (2_621_340, "/var/lib/docker")]  # fmt: skip


def test_disk_space_and_inodes():
    ok = ev.disk_finding(df(9_000_000, 100, 2_621_340), "/var/lib/docker", 2048)
    assert ok.result == "passed" and "8789 MiB free" in ok.evidence and "100% inodes" in ok.evidence
    assert_fails(ev.disk_finding(df(1_000_000, 100, 2_621_340), "/srv", 2048), "disk",
                 "976 MiB free (need 2048)")  # fmt: skip
    assert_fails(ev.disk_finding(df(9_000_000, 2_500_000, 121_440), "/srv", 2048), "disk",
                 "5% inodes free")  # fmt: skip
    btrfs = DF.replace("2621440", "0").format(avail=9_000_000, iused=0, ifree=0)
    assert ev.disk_finding(btrfs, "/srv", 2048).result == "passed"
    assert_fails(ev.disk_finding("sh: df: not found", "/srv", 2048), "disk", "cannot read")


# --- DNS


def test_public_names_are_the_url_host_and_the_server_names():
    assert ev.public_names("https://chat.example.com:8443/x", ["chat.example.com", "www.ex"]) == [
        "chat.example.com", "www.ex"]  # fmt: skip


def test_dns_must_resolve_and_reach_a_host():
    good = ev.dns_finding({"chat.example.com": ["203.0.113.10", "2001:db8::1"]},
                          {"203.0.113.10"})  # fmt: skip
    assert good.result == "passed" and "chat.example.com -> 203.0.113.10" in good.evidence
    assert ev.dns_finding({"localhost": ["127.0.0.1"]}, None).result == "passed"
    assert_fails(ev.dns_finding({"chat.example.com": "[Errno -2] Name or service not known"},
                                None), "dns", "chat.example.com does not resolve")  # fmt: skip
    assert_fails(ev.dns_finding({"chat.example.com": ["198.51.100.7"]}, {"203.0.113.10"}), "dns",
                 "resolves to 198.51.100.7, none of them a host (203.0.113.10)")  # fmt: skip


# --- TLS: certificates made here


def make_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    names: tuple[str, ...] = (),
    days: float = 90,
    start: dt.datetime | None = None,
) -> x509.Certificate:
    """A certificate as a public CA makes them (key identifiers, key usage, names)."""
    start = start or NOW - dt.timedelta(days=1)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    signer_cert, signer_key = issuer or (None, key)
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(signer_cert.subject if signer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(authority, False)
        .add_extension(usage, critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    return builder.sign(signer_key, hashes.SHA256())


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def pki(
    names: tuple[str, ...] = ("localhost",), days: float = 90, start: dt.datetime | None = None
):
    """(root, intermediate, leaf, leaf key): a root CA, an intermediate it signs, a leaf
    the intermediate signs for `names`."""
    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = make_cert("test root", root_key, None, ca=True, days=3650, start=start)
    mid = make_cert("test intermediate", mid_key, (root, root_key), ca=True, days=1000,
                    start=start)  # fmt: skip
    leaf = make_cert(names[0], leaf_key, (mid, mid_key), ca=False, names=names, days=days,
                     start=start)  # fmt: skip
    return root, mid, leaf, leaf_key


def judge(chain: bytes | None, roots, names=("localhost",), now=NOW) -> ev.Finding:
    return ev.certificate_finding(chain, "fullchain.pem", roots, names, now, 14, "renew it")


def test_a_valid_full_chain_passes():
    root, mid, leaf, _ = pki(("localhost", "chat.example.com"))
    finding = judge(pem(leaf, mid), [root], ("localhost", "chat.example.com"))
    assert finding.result == "passed", finding
    assert "localhost by test intermediate, chain of 2" in finding.evidence
    assert "valid until 2025-08-29 (89 days)" in finding.evidence


def test_an_expired_certificate_fails():
    root, mid, leaf, _ = pki(days=30, start=NOW - dt.timedelta(days=40))
    assert_fails(judge(pem(leaf, mid), [root]), "tls", "expired on 2025-05-22")


def test_a_certificate_with_14_days_or_fewer_left_fails():
    root, mid, leaf, _ = pki(days=11)
    finding = judge(pem(leaf, mid), [root])
    assert_fails(finding, "tls", "expires on 2025-06-11, in 10 days (needs more than 14")
    assert finding.fix == "renew it"


def test_a_chain_without_its_intermediate_fails():
    root, _, leaf, _ = pki()
    finding = judge(pem(leaf), [root])
    assert_fails(finding, "tls", "no valid chain to a trusted root for localhost")
    assert "fullchain.pem, not cert.pem" in finding.fix


def test_a_chain_to_an_untrusted_root_fails():
    _, mid, leaf, _ = pki()
    other_root = pki()[0]
    assert_fails(judge(pem(leaf, mid), [other_root]), "tls", "no valid chain")


def test_a_certificate_that_does_not_cover_a_server_name_fails():
    root, mid, leaf, _ = pki(("localhost",))
    assert_fails(judge(pem(leaf, mid), [root], ("localhost", "chat.example.com")), "tls",
                 "does not cover chat.example.com")  # fmt: skip


def test_a_missing_or_unreadable_certificate_fails():
    assert_fails(judge(None, []), "tls", "no certificate at fullchain.pem")
    assert_fails(judge(b"not a certificate", []), "tls", "holds no PEM certificate")


def test_a_certificate_not_yet_valid_fails():
    root, mid, leaf, _ = pki(start=NOW + dt.timedelta(days=1))
    assert_fails(judge(pem(leaf, mid), [root]), "tls", "not valid before 2025-06-02")


# --- S3


def test_encryption_by_the_bucket_or_by_every_upload():
    rules = [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]
    assert "default encryption aws:kms" in ev.encryption_finding(rules, "none", "b").evidence
    assert ev.encryption_finding(None, "AES256", "b").result == "passed"
    assert_fails(ev.encryption_finding(None, "none", "b"), "s3-bucket", "stored unencrypted")


def test_the_suites_own_lifecycle_rule_passes_and_others_do_not():
    ours = lifecycle_rules("mysaaschat", 30, None, "GLACIER")
    finding = ev.lifecycle_finding(ours, "mysaaschat/", "b", "prod")
    assert finding.result == "passed" and "aborts stale uploads" in finding.evidence
    whole_bucket = [{"ID": "all", "Status": "Enabled", "Filter": {}, "Expiration": {"Days": 9}}]
    assert ev.lifecycle_finding(whole_bucket, "mysaaschat/", "b", "prod").result == "passed"
    elsewhere = [{**ours[0], "Filter": {"Prefix": "logs/"}}]
    disabled = [{**ours[0], "Status": "Disabled"}]
    for rules in ([], elsewhere, disabled):
        finding = ev.lifecycle_finding(rules, "mysaaschat/", "b", "prod")
        assert_fails(finding, "s3-lifecycle", "no enabled expiry rule covers mysaaschat/")
        assert finding.fix == "inv backup.lifecycle --env=prod"


# --- backups, drills, alert tests


def manifest(backup_id: str, hours_ago: float, verified: bool = True) -> dict[str, object]:
    finished = NOW - dt.timedelta(hours=hours_ago)
    return {"backup_id": backup_id, "finished": finished.isoformat(), "verified": verified}


def test_fresh_verified_backups_pass():
    by_db = {"auth": [manifest("a1", 30), manifest("a2", 2)], "chat": [manifest("c1", 1)]}
    finding = ev.backups_finding(by_db, NOW, 6, "prod")
    assert finding.result == "passed" and "auth a2 2.0 h old" in finding.evidence


def test_a_stale_missing_or_unverified_backup_fails():
    by_db = {"auth": [manifest("a1", 7)], "chat": [], "billing": [manifest("b1", 1, False)]}
    finding = ev.backups_finding(by_db, NOW, 6, "prod")
    assert_fails(finding, "backups", "auth a1 7.0 h old", "chat: no verified backup",
                 "billing: no verified backup (1 unverified)", "(RPO 6 h)")  # fmt: skip
    assert finding.fix.startswith("inv backup --env=prod --verify")


def drill_record(days_ago: float, passed: bool = True, missed: list[str] | None = None):
    finished = NOW - dt.timedelta(days=days_ago)
    return {"finished": finished.isoformat(timespec="seconds"), "passed": passed,
            "failed": missed or [], "rpo_hours": 6.0, "rto_hours": 2.0}  # fmt: skip


def test_a_recent_passed_drill_passes():
    finding = ev.drill_finding(drill_record(3), "s3://b/p/prod/drills/", NOW, 30, "prod")
    assert finding.result == "passed" and "RPO 6.0 h, RTO 2.0 h" in finding.evidence


@pytest.mark.parametrize(
    ("record", "words"),
    [
        (None, "no restore drill on record in s3://b/p/prod/drills/"),
        (drill_record(31), "older than 30 days"),
        (drill_record(1, False, ["auth rto"]), "failed: auth rto"),
    ],
)
def test_a_missing_old_or_failed_drill_fails(record, words):
    finding = ev.drill_finding(record, "s3://b/p/prod/drills/", NOW, 30, "prod")
    assert_fails(finding, "dr-drill", words)
    assert finding.fix == "inv dr.drill --env=prod"


def test_alert_test_records_age_the_same_way():
    assert ev.alerts_test_finding(drill_record(2), "x", NOW, 7, "prod").result == "passed"
    finding = ev.alerts_test_finding(drill_record(8), "x", NOW, 7, "prod")
    assert_fails(finding, "alerts-test", "alert routing test", "older than 7 days")
    assert finding.fix == "inv alerts.test --env=prod"


def test_records_round_trip_in_the_build_folder_newest_first(tmp_path):
    place = records.RecordPlace("prod", tmp_path)
    assert records.newest(place, "drills") is None
    older = {**drill_record(3), "n": 1}
    newer = {**drill_record(1), "n": 2}
    records.save(place, "drills", newer)
    where = records.save(place, "drills", older)
    assert where == str(tmp_path / "drills" / "20250529T120000Z.json")
    assert (tmp_path / "drills" / "20250529T120000Z.json").stat().st_mode & 0o777 == 0o600
    assert records.newest(place, "drills")["n"] == 2
    assert records.record_name(NOW) == "20250601T120000Z.json"


# --- registry login, tree, migrations


def test_registry_login_outcomes():
    assert ev.login_finding(True, "Login Succeeded", "reg:5000", "ci").result == "passed"
    refused = ev.login_finding(False, "Error response from daemon: login attempt to "
                               "http://reg:5000/v2/ failed with status: 401 Unauthorized",
                               "reg:5000", "ci")  # fmt: skip
    assert_fails(refused, "registry-login", "reg:5000 refused the login of ci", "401")
    assert "REGISTRY_PASSWORD" in refused.fix
    down = ev.login_finding(False, "dial tcp 127.0.0.1:1: connect: connection refused",
                            "127.0.0.1:1", "ci")  # fmt: skip
    assert_fails(down, "registry-login", "127.0.0.1:1 is not reachable")


def test_clean_and_dirty_trees():
    head = "0123456789abcdef0123456789abcdef01234567"  # pragma: allowlist secret
    clean = ev.tree_finding(head, "", Path("/src"))
    assert clean.result == "passed" and "images are tagged 0123456789ab" in clean.evidence
    dirty = ev.tree_finding(head, " M .env.example\nM  tasks.py\n?? notes.txt\n", Path("/src"))
    assert_fails(dirty, "clean-tree", "3 uncommitted change(s) in /src: .env.example; tasks.py; "
                 "notes.txt", "0123456789ab-dirty")  # fmt: skip
    assert_fails(ev.tree_finding(None, "", Path("/src")), "clean-tree", "not a git checkout")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_code_migrations_follow_the_services_naming_and_checksum():
    files = {"0001_create_users.sql": "CREATE TABLE users();\n", "0002_x.sql": "SELECT 1;\n",
             "README.md": "no", "1_bad.sql": "no"}  # fmt: skip
    assert ev.code_migrations(files) == {
        1: ("0001_create_users.sql", sha("CREATE TABLE users();\n")),
        2: ("0002_x.sql", sha("SELECT 1;\n")),
    }
    assert ev.parse_applied(f"1 {sha('a')}\n2 {sha('b')}\n\n") == {1: sha("a"), 2: sha("b")}


CODE = {"auth": {1: ("0001_a.sql", sha("a")), 2: ("0002_b.sql", sha("b"))}}


def test_applied_migrations_matching_or_pending_pass():
    assert ev.migrations_finding(CODE, {"auth": {1: sha("a"), 2: sha("b")}}, "p").result == "passed"
    pending = ev.migrations_finding(CODE, {"auth": {1: sha("a")}}, "p")
    assert pending.result == "passed" and "auth: schema 1, 1 pending" in pending.evidence
    new = ev.migrations_finding(CODE, {"auth": None}, "p")
    assert new.result == "passed" and "auth: no database yet, 2 to apply" in new.evidence


def test_an_edited_migration_or_a_database_ahead_of_the_code_fails():
    edited = ev.migrations_finding(CODE, {"auth": {1: sha("a"), 2: sha("changed")}}, "p")
    assert_fails(edited, "migrations", "auth: 0002_b.sql changed after it was applied")
    ahead = ev.migrations_finding(CODE, {"auth": {1: sha("a"), 2: sha("b"), 3: sha("c")}}, "p")
    assert_fails(ahead, "migrations", "auth: schema 3 is ahead of the code (no migration 0003")


def test_a_deploy_names_the_items_it_leaves_to_preflight():
    from deploysuite.deploy.preflight_items.registry import CHECKED_BY_DEPLOY, skipped_by_deploy

    skipped = skipped_by_deploy()
    assert {"tls", "backups", "secrets", "dr-drill"} <= set(skipped)
    assert not set(CHECKED_BY_DEPLOY) & set(skipped)
    assert set(CHECKED_BY_DEPLOY) | set(skipped) == {i.id for i in ITEMS if i.automated}
