"""TLS material: a local CA and the certificate it signs for local stacks, the ffdhe2048 DH
group that Mozilla's intermediate profile asks for, and the certbot command for real
certificates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID

from deploysuite.core.commands import Argv, compose

CERT = "fullchain.pem"
KEY = "privkey.pem"
DHPARAM = "dhparam.pem"
CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
CSR = "leaf.csr"
NAMES = "names"
RENEW_BEFORE = dt.timedelta(days=7)


def subject_alt_names(names: Sequence[str]) -> str:
    entries = []
    for name in names:
        kind = "IP" if name.replace(".", "").isdigit() or ":" in name else "DNS"
        entries.append(f"{kind}:{name}")
    return ",".join(entries)


def local_names(names: Sequence[str]) -> list[str]:
    """The certificate's names: the server names, plus 127.0.0.1 for loopback clients."""
    return list(dict.fromkeys([*names, "127.0.0.1"]))


def local_ca_argv(tls_dir: Path, days: int = 3650) -> Argv:
    """A CA of this machine's own: trust ca.pem once (browser, curl --cacert, sslyze) and every
    leaf it signs validates, which a self-signed leaf never does."""
    return (
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(tls_dir / CA_KEY), "-out", str(tls_dir / CA_CERT),
        "-days", str(days), "-subj", "/CN=My-SaaS-Chat local CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip


def leaf_request_argv(tls_dir: Path, names: Sequence[str]) -> Argv:
    all_names = local_names(names)
    return (
        "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(tls_dir / KEY), "-out", str(tls_dir / CSR),
        "-subj", f"/CN={all_names[0]}",
        "-addext", f"subjectAltName={subject_alt_names(all_names)}",
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "keyUsage=critical,digitalSignature",
        "-addext", "extendedKeyUsage=serverAuth",
    )  # fmt: skip


def leaf_sign_argv(tls_dir: Path, serial: str, days: int = 30) -> Argv:
    """Signs the request with the local CA; 30 days, well inside Mozilla's 366-day limit."""
    return (
        "openssl", "x509", "-req", "-in", str(tls_dir / CSR),
        "-CA", str(tls_dir / CA_CERT), "-CAkey", str(tls_dir / CA_KEY),
        "-set_serial", f"0x{serial}", "-days", str(days), "-copy_extensions", "copyall",
        "-out", str(tls_dir / CERT),
    )  # fmt: skip


def dhparam_argv(tls_dir: Path) -> Argv:
    """The RFC 7919 ffdhe2048 group: published parameters, nothing secret, nothing to compute."""
    return (
        "openssl", "genpkey", "-genparam", "-algorithm", "DH",
        "-pkeyopt", "dh_param:ffdhe2048", "-out", str(tls_dir / DHPARAM),
    )  # fmt: skip


def cert_enddate_argv(cert: Path) -> Argv:
    return ("openssl", "x509", "-noout", "-enddate", "-in", str(cert))


def parse_enddate(text: str) -> dt.datetime:
    """`notAfter=Dec 25 17:00:00 2026 GMT` -> aware datetime."""
    value = text.strip().removeprefix("notAfter=")
    return dt.datetime.strptime(value, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=dt.UTC)


def needs_renewal(not_after: dt.datetime, now: dt.datetime) -> bool:
    return not_after - now < RENEW_BEFORE


def ocsp_url(pem: bytes) -> str | None:
    """The OCSP responder URL in the Authority Information Access of the first certificate of
    a PEM chain (the leaf of fullchain.pem); None when it names none, as the local CA's leaf
    and, since 2025, Let's Encrypt's certificates."""
    leaf = x509.load_pem_x509_certificates(pem)[0]
    try:
        access = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for description in access:
        location = description.access_location
        if description.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
            location, x509.UniformResourceIdentifier
        ):
            return location.value
    return None


def certbot_issue_argv(
    project: str, files: Sequence[Path], domains: Sequence[str], email: str, staging: bool = False
) -> Argv:
    """certbot in webroot mode through the stack's certbot service: nginx serves the challenge
    from the shared acme-webroot volume, so nothing stops while a certificate is issued."""
    args = [
        "run", "--rm", "--entrypoint", "certbot", "certbot",
        "certonly", "--webroot", "-w", "/var/www/certbot", "--email", email, "--agree-tos",
        "--non-interactive", "--keep-until-expiring",
    ]  # fmt: skip
    for domain in domains:
        args += ["-d", domain]
    if staging:
        args.append("--staging")
    return compose(project, files, *args, profiles=("acme",))
