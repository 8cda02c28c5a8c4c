"""The SSH transport against a real sshd on 127.0.0.1: verified host keys, clear refusals."""

from __future__ import annotations

import dataclasses
import time

import pytest

from deploysuite.core.ssh import Host, SshConnection, SshError

pytestmark = pytest.mark.integration


def host_of(ssh_host, **changes) -> Host:
    host = Host(
        name="app1",
        address=ssh_host.address,
        port=ssh_host.port,
        user=ssh_host.user,
        key_file=ssh_host.key_file,
        known_hosts=ssh_host.known_hosts,
    )
    return dataclasses.replace(host, **changes)


def test_runs_commands_on_the_engine_behind_the_host(ssh_host):
    with SshConnection(host_of(ssh_host)) as conn:
        code, out, _ = conn.run(("docker", "version", "--format", "{{.Server.Version}}"))
        assert code == 0 and out.strip()
        code, out, _ = conn.run(("sh", "-c", 'echo "$GREETING"'), env={"GREETING": "a b'c"})
        assert (code, out) == (0, "a b'c\n")
        code, _, err = conn.run(("ls", "/no/such/path"))
        assert code != 0 and "No such file" in err


def test_put_writes_private_files(ssh_host):
    path = f"{ssh_host.home}/put-test.env"
    with SshConnection(host_of(ssh_host)) as conn:
        conn.put(b"SECRET=1\n", path)
        _, out, _ = conn.run(("stat", "-c", "%a %U", path))
        conn.run(("rm", "-f", path))
    assert out.split() == ["600", ssh_host.user]


def test_unknown_host_key_is_refused_with_its_fingerprint(ssh_host, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(SshError) as info:
        SshConnection(host_of(ssh_host, known_hosts=empty))
    assert f"unknown host key ssh-ed25519 {ssh_host.fingerprint}" in info.value.what
    assert info.value.fix.startswith(f"ssh-keyscan -p {ssh_host.port} 127.0.0.1 >> {empty}")


def test_changed_host_key_is_refused(ssh_host, tmp_path):
    import subprocess

    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, key = other.with_suffix(".pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{ssh_host.port} {kind} {key}\n")
    with pytest.raises(SshError, match=r"presented host key SHA256:\S+, not the SHA256:\S+ in "):
        SshConnection(host_of(ssh_host, known_hosts=wrong))


def test_wrong_client_key_is_a_clear_error(ssh_host):
    with pytest.raises(SshError) as info:
        SshConnection(host_of(ssh_host, key_file=ssh_host.other_key))
    assert "the server refused the key" in info.value.what
    assert "authorized_keys" in info.value.fix


def test_unreachable_host_is_a_clear_error(ssh_host):
    from conftest import free_port

    with pytest.raises(SshError, match="is not reachable"):
        SshConnection(host_of(ssh_host, port=free_port()), timeout=3)


def test_renew_replaces_an_interrupted_connection_and_closes_the_old_one(ssh_host):
    with SshConnection(host_of(ssh_host)) as conn:
        old = conn.client.get_transport()
        conn.renew()
        assert conn.client.get_transport() is not old
        code, out, _ = conn.run(("echo", "still here"))
        assert (code, out.strip()) == (0, "still here")
        deadline = time.monotonic() + 10
        while old is not None and old.is_active() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert old is not None and not old.is_active()


def test_put_replaces_a_file_whole_with_its_mode_and_refuses_a_missing_folder(ssh_host):
    path = f"{ssh_host.home}/put-replace.conf"
    with SshConnection(host_of(ssh_host)) as conn:
        conn.put(b"old\n", path, mode=0o644)
        conn.put(b"new\n", path, mode=0o644)
        script = 'stat -c %a "$1"; cat "$1"; ls "$1".* 2>/dev/null | wc -l'
        _, out, _ = conn.run(("sh", "-c", script, "sh", path))
        conn.run(("rm", "-f", path))
        assert out.split() == ["644", "new", "0"]  # no temporary file left beside it
        with pytest.raises(SshError, match="cannot write"):
            conn.put(b"x", f"{ssh_host.home}/no/such/folder/file", mode=0o600)
