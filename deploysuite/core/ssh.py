"""Hosts of an environment and the SSH transport to them (fabric over paramiko).

Host keys are verified against the environment's own known_hosts file, never the user's, and an
unknown key is refused: the error shows its fingerprint and the command that trusts it, after a
person has compared the two.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import yaml

from deploysuite.core.errors import ConfigError, SuiteError
from deploysuite.core.streams import RemoteProcess

# What a Swarm node runs, as its node labels: nginx; the six services; the data stores, the
# queue, Prometheus and the backup agent.
NODE_ROLES = ("edge", "app", "data")


def put_argv(path: str, mode: int) -> tuple[str, ...]:
    """The shell command behind SshConnection.put: stdin into a 0600 temporary file beside
    `path`, then its mode, then an atomic rename."""
    script = ('umask 077 && t=$(mktemp "$1.XXXXXX") && { cat > "$t" && chmod "$2" "$t" && '
              'mv -f "$t" "$1"; } || { rm -f "$t"; exit 1; }')  # fmt: skip
    return ("sh", "-c", script, "sh", path, f"{mode:04o}")


class SshError(SuiteError):
    exit_code = 7


class ConnectionLost(SshError):
    """An established connection died under a command (the host rebooted, the network or sshd
    dropped it): what the command did on the host is unknown."""


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    known_hosts: Path
    port: int = 22
    user: str = "deploy"
    key_file: Path | None = None
    # Swarm environments only: what the node runs (NODE_ROLES), whether it is a manager, and
    # the address the nodes reach each other on when it differs from the SSH address.
    roles: tuple[str, ...] = ()
    manager: bool = False
    advertise: str = ""

    @property
    def cluster_address(self) -> str:
        return self.advertise or self.address

    @property
    def target(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """How OpenSSH writes this host in known_hosts (with the port unless it is 22)."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


def parse_hosts(text: str, env_dir: Path, overrides: Mapping[str, str] | None = None) -> list[Host]:
    """environments/<env>/hosts.yml:

        known_hosts: known_hosts          # relative to the environment's folder
        hosts:
          - name: app1
            address: 203.0.113.10
            port: 22
            user: deploy
            key: ~/.ssh/mysaaschat_staging
            roles: [edge, app, data]     # swarm environments: the node's labels
            manager: true                # swarm environments: default the first host only
            advertise: 10.0.0.10         # swarm environments: the cluster address, if not this

    overrides: DEPLOY_SSH_KEY / DEPLOY_SSH_USER from the config win over the file.
    """
    overrides = overrides or {}
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{env_dir / 'hosts.yml'}: not YAML ({exc})", "fix the file") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("hosts"), list) or not doc["hosts"]:
        raise ConfigError(
            f"{env_dir / 'hosts.yml'}: needs a non-empty `hosts:` list",
            "see environments/staging/hosts.yml for the format",
        )
    known = Path(str(doc.get("known_hosts", "known_hosts"))).expanduser()
    known = known if known.is_absolute() else env_dir / known
    hosts = []
    for index, item in enumerate(doc["hosts"], start=1):
        if not isinstance(item, dict) or not item.get("address"):
            raise ConfigError(
                f"{env_dir / 'hosts.yml'}: host #{index} has no address", "add `address:`"
            )
        key = overrides.get("DEPLOY_SSH_KEY") or item.get("key")
        roles = item.get("roles") or []
        unknown = (
            sorted(set(map(str, roles)) - set(NODE_ROLES)) if isinstance(roles, list) else roles
        )
        if unknown:
            raise ConfigError(
                f"{env_dir / 'hosts.yml'}: host #{index} has unknown roles {unknown}",
                f"use a list of {', '.join(NODE_ROLES)}",
            )
        hosts.append(
            Host(
                name=str(item.get("name") or item["address"]),
                address=str(item["address"]),
                port=int(item.get("port", 22)),
                user=str(overrides.get("DEPLOY_SSH_USER") or item.get("user", "deploy")),
                key_file=Path(str(key)).expanduser() if key else None,
                known_hosts=known,
                roles=tuple(r for r in NODE_ROLES if r in roles),
                manager=bool(item.get("manager", index == 1)),
                advertise=str(item.get("advertise") or ""),
            )
        )
    return hosts


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint, as `ssh-keygen -lf` shows it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def offered_host_key(host: Host, timeout: float) -> paramiko.PKey:
    """The key the server presents, read without authenticating (for the error message)."""
    with socket.create_connection((host.address, host.port), timeout=timeout) as sock:
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=timeout)
            return transport.get_remote_server_key()
        finally:
            transport.close()


def trust_command(host: Host) -> str:
    return (
        f"ssh-keyscan -p {host.port} {host.address} >> {host.known_hosts} "
        "(after comparing the fingerprint with the host's own `ssh-keygen -lf "
        "/etc/ssh/ssh_host_ed25519_key.pub`)"
    )


class SshConnection:
    """One verified, authenticated connection; runs argv lists as shell-quoted commands."""

    def __init__(self, host: Host, timeout: float = 10) -> None:
        self.host = host
        self.timeout = timeout
        self.client = self._connect()

    def _connect(self) -> paramiko.SSHClient:
        host, timeout = self.host, self.timeout
        client = paramiko.SSHClient()
        if not host.known_hosts.exists():
            raise SshError(
                f"{host.name} ({host.target}): no known_hosts file at {host.known_hosts}",
                trust_command(host),
            )
        client.load_host_keys(str(host.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                host.address,
                port=host.port,
                username=host.user,
                key_filename=str(host.key_file) if host.key_file else None,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                allow_agent=host.key_file is None,
                look_for_keys=False,
            )
        except paramiko.BadHostKeyException as exc:
            raise SshError(
                f"{host.name} ({host.target}) presented host key {fingerprint(exc.key)}, "
                f"not the {fingerprint(exc.expected_key)} in {host.known_hosts}: refusing "
                "(possible man-in-the-middle, or the host was rebuilt)",
                "confirm with the host's owner, then replace its line in the known_hosts file",
            ) from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                key = offered_host_key(host, timeout)
                raise SshError(
                    f"{host.name} ({host.target}): unknown host key {key.get_name()} "
                    f"{fingerprint(key)}: refusing to connect",
                    trust_command(host),
                ) from None
            if isinstance(exc, paramiko.AuthenticationException):
                raise SshError(
                    f"{host.name} ({host.target}): the server refused the key "
                    f"{host.key_file or '(agent)'} for user {host.user}",
                    f"check DEPLOY_SSH_KEY and that its public key is in ~{host.user}/"
                    ".ssh/authorized_keys on the host",
                ) from None
            raise SshError(f"{host.name} ({host.target}): SSH failed: {exc}") from None
        except (OSError, TimeoutError) as exc:
            raise SshError(
                f"{host.name} ({host.target}) is not reachable: {exc}",
                "check the address and port in hosts.yml, the VPN, and the host's firewall",
            ) from None
        return client

    def alive(self) -> bool:
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def reconnect(self) -> None:
        """A new connection to the same host, verified the same way, in place of a dead one:
        every runner bound to this object goes on over it."""
        self.client.close()
        self.client = self._connect()

    def renew(self) -> None:
        """A new connection in place of one a Ctrl-C went through. The signal can land anywhere
        in paramiko's code, even between taking one of its locks and the `try` that gives it
        back, after which every later command on that connection waits forever. The old one is
        not reused: it is closed in the background, where a lock it may hold can stall no one."""
        old = self.client
        self.client = self._connect()
        threading.Thread(target=old.close, name="close interrupted ssh", daemon=True).start()

    def lost(self, exc: BaseException) -> ConnectionLost:
        return ConnectionLost(
            f"{self.host.name} ({self.host.target}): the SSH connection was lost under a command "
            f"({type(exc).__name__}: {exc or 'closed'})",
            "check the host and the network; inv status reads what runs once it answers",
        )

    def run(
        self,
        argv: tuple[str, ...],
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        timeout: float | None = None,
        cwd: str | None = None,
    ) -> tuple[int, str, str]:
        """Exit code, stdout, stderr. `env` is for non-secret values only: an `env K=V` prefix
        is visible in the host's process list while the command runs. Secrets travel as files
        written with put() (mode 0600)."""
        command = shlex.join(argv)
        if env:
            prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
            command = f"env {prefix} {command}"
        if cwd:
            command = f"cd {shlex.quote(cwd)} && {command}"
        try:
            stdin_file, stdout, stderr = self.client.exec_command(command, timeout=timeout)
            if stdin is not None:
                stdin_file.write(stdin)
                stdin_file.channel.shutdown_write()
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            status = stdout.channel.recv_exit_status()
        except TimeoutError:
            raise
        except Exception as exc:
            raise self.lost(exc) if not self.alive() else exc from None
        if status == -1 and not self.alive():  # closed without an exit status: the session died
            raise self.lost(EOFError("no exit status"))
        return status, out, err

    def start(self, argv: tuple[str, ...]) -> RemoteProcess:
        """A command whose stdin and stdout are streamed (backups, restores): bytes flow
        through the channel as they come, never held whole in memory."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise self.lost(EOFError("closed"))
        try:
            channel = transport.open_session()
            channel.exec_command(shlex.join(argv))
        except Exception as exc:
            raise self.lost(exc) if not self.alive() else exc from None
        return RemoteProcess(channel)

    def put(self, data: bytes, path: str, mode: int = 0o600) -> None:
        """Write a file on the host. No byte of it is ever readable by anyone else: it is made
        0600 by mktemp, filled from stdin, given `mode`, then renamed over `path`. (An SFTP
        open creates the file with the server's default mode first, and a chmod after it leaves
        a window.)"""
        code, _, err = self.run(put_argv(path, mode), stdin=data)
        if code != 0:
            raise SshError(
                f"{self.host.name}: cannot write {path}: {err.strip()[-300:] or f'exit {code}'}",
                "check the folder exists and the deploy user may write into it",
            )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> SshConnection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
