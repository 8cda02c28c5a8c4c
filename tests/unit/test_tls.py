import datetime as dt
from pathlib import Path

from deploysuite import tls


def test_selfsigned_covers_names_and_loopback():
    argv = tls.selfsigned_argv(Path("/t"), ["localhost", "chat.local"], days=30)
    assert argv == (
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", "/t/privkey.pem", "-out", "/t/fullchain.pem", "-days", "30",
        "-subj", "/CN=localhost",
        "-addext", "subjectAltName=DNS:localhost,DNS:chat.local,IP:127.0.0.1",
    )  # fmt: skip


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
