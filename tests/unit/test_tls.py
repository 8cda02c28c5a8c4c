import datetime as dt
from pathlib import Path

import pytest

from deploysuite.edge import tls
from tests.unit.certs import issue_chain, pem


def test_local_ca_and_leaf_commands():
    assert tls.local_ca_argv(Path("/t"))[-4:] == (
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    request = tls.leaf_request_argv(Path("/t"), ["localhost", "chat.local"])
    assert "subjectAltName=DNS:localhost,DNS:chat.local,IP:127.0.0.1" in request
    assert "extendedKeyUsage=serverAuth" in request
    assert tls.leaf_sign_argv(Path("/t"), "ab12", days=30) == (
        "openssl", "x509", "-req", "-in", "/t/leaf.csr", "-CA", "/t/ca.pem",
        "-CAkey", "/t/ca-key.pem", "-set_serial", "0xab12", "-days", "30",
        "-copy_extensions", "copyall", "-out", "/t/fullchain.pem",
    )  # fmt: skip


def test_local_certificate_validates_against_the_local_ca(tmp_path: Path):
    # openssl itself is the "world" here: the commands must yield a chain that verifies.
    import subprocess

    for argv in (
        tls.local_ca_argv(tmp_path),
        tls.leaf_request_argv(tmp_path, ["localhost"]),
        tls.leaf_sign_argv(tmp_path, "0a1b2c"),
    ):
        subprocess.run(argv, check=True, capture_output=True)
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "fullchain.pem")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(tmp_path / "fullchain.pem")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "DNS:localhost, IP Address:127.0.0.1" in text and "TLS Web Server Authentication" in text


def test_dhparam_is_the_named_ffdhe2048_group():
    assert tls.dhparam_argv(Path("/t"))[-3:] == ("dh_param:ffdhe2048", "-out", "/t/dhparam.pem")


def test_enddate_parsing_and_renewal_window():
    end = tls.parse_enddate("notAfter=Dec 25 17:00:00 2026 GMT\n")
    assert end == dt.datetime(2026, 12, 25, 17, 0, tzinfo=dt.UTC)
    assert not tls.needs_renewal(end, end - dt.timedelta(days=8))
    assert tls.needs_renewal(end, end - dt.timedelta(days=6))


def test_certbot_runs_webroot_through_the_compose_service():
    argv = tls.certbot_issue_argv(
        "mysaaschat", [Path("/srv/c.yml")], ["chat.example.com", "www.example.com"], "ops@x.io",
        staging=True,
    )  # fmt: skip
    assert argv == (
        "docker", "compose", "--project-name", "mysaaschat", "--file", "/srv/c.yml",
        "--profile", "acme", "run", "--rm", "--entrypoint", "certbot", "certbot",
        "certonly", "--webroot", "-w", "/var/www/certbot", "--email", "ops@x.io", "--agree-tos",
        "--non-interactive", "--keep-until-expiring",
        "-d", "chat.example.com", "-d", "www.example.com", "--staging",
    )  # fmt: skip


def test_ocsp_url_is_the_leafs_responder():
    chain = issue_chain(ocsp="http://ocsp.example.net/", ca_issuers="http://ca.example.net/ca.der")
    assert tls.ocsp_url(chain.fullchain_pem) == "http://ocsp.example.net/"
    # The leaf comes first in fullchain.pem: the issuer's own extensions play no part.
    assert tls.ocsp_url(pem(chain.leaf)) == "http://ocsp.example.net/"


@pytest.mark.parametrize(
    "ca_issuers", [None, "http://ca.example.net/ca.der"], ids=["no-aia", "ca-issuers-only"]
)
def test_ocsp_url_is_none_without_a_responder(ca_issuers):
    chain = issue_chain(ca_issuers=ca_issuers)
    assert tls.ocsp_url(chain.fullchain_pem) is None


def test_the_local_ca_leaf_names_no_ocsp_responder(tmp_path: Path):
    # What a local stack serves: its nginx configuration must not ask for stapling.
    import subprocess

    for argv in (
        tls.local_ca_argv(tmp_path),
        tls.leaf_request_argv(tmp_path, ["localhost"]),
        tls.leaf_sign_argv(tmp_path, "0a1b2c"),
    ):
        subprocess.run(argv, check=True, capture_output=True)
    assert tls.ocsp_url((tmp_path / tls.CERT).read_bytes()) is None
