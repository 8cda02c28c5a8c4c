"""Certificates made in the tests with `cryptography`: a CA and a leaf it signs, the leaf naming
an OCSP responder or not."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID


@dataclass(frozen=True)
class Chain:
    leaf: x509.Certificate
    ca: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey
    ca_key: ec.EllipticCurvePrivateKey

    @property
    def fullchain_pem(self) -> bytes:
        """What nginx serves: the leaf, then its issuer."""
        return pem(self.leaf) + pem(self.ca)

    @property
    def leaf_key_pem(self) -> bytes:
        return key_pem(self.leaf_key)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _access(method: x509.ObjectIdentifier, url: str) -> x509.AccessDescription:
    return x509.AccessDescription(method, x509.UniformResourceIdentifier(url))


def issue_chain(
    names: tuple[str, ...] = ("localhost",),
    ocsp: str | None = None,
    ca_issuers: str | None = None,
    days: int = 2,
) -> Chain:
    """A CA and a server certificate for `names`; Authority Information Access holds an OCSP
    responder when `ocsp` is given and a CA-issuers URL when `ca_issuers` is (none without
    either)."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test CA"))
        .issuer_name(_name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    )
    access = []
    if ocsp is not None:
        access.append(_access(AuthorityInformationAccessOID.OCSP, ocsp))
    if ca_issuers is not None:
        access.append(_access(AuthorityInformationAccessOID.CA_ISSUERS, ca_issuers))
    if access:
        builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
    return Chain(builder.sign(ca_key, hashes.SHA256()), ca, leaf_key, ca_key)
