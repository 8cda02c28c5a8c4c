"""Credential drift: a data store whose volume was initialised with another password than the
environment's, found before a deploy changes anything.

PostgreSQL and RabbitMQ take their first password from the environment only when their data
volume is new; afterwards the volume's copy wins. A new secrets file (a fresh clone, a rotated
secret) then gives the services a password the store no longer accepts, and a deploy that goes
ahead leaves a half-changed stack. So, while the stores run, the deploy reads each one's stored
verifier (PostgreSQL's SCRAM or md5 entry in pg_authid, RabbitMQ's salted SHA-256 in its
definitions) and checks the environment's password against it here: no password crosses a
process boundary, and none is tried against the store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

from deploysuite.config.layers import Config
from deploysuite.core.errors import ConfigError
from deploysuite.core.runner import Command, Runner


def scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """(StoredKey, ServerKey) of a SCRAM-SHA-256 password (RFC 5802/7677)."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return hashlib.sha256(client_key).digest(), server_key


def scram_matches(verifier: str, password: str) -> bool:
    """`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (RFC 5802/7677)."""
    try:
        method, params, keys = verifier.split("$")
        iterations, salt = params.split(":")
        stored, server = keys.split(":")
        if method != "SCRAM-SHA-256":
            return False
        stored_key, server_key = scram_keys(password, base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(stored_key, base64.b64decode(stored)) and hmac.compare_digest(
        server_key, base64.b64decode(server)
    )


def postgres_matches(verifier: str, user: str, password: str) -> bool:
    """pg_authid.rolpassword: SCRAM, or the old `md5` + md5(password + user)."""
    if verifier.startswith("md5"):
        expected = "md5" + hashlib.md5((password + user).encode()).hexdigest()
        return hmac.compare_digest(verifier, expected)
    return scram_matches(verifier, password)


def rabbit_matches(password_hash: str, password: str, algorithm: str) -> bool:
    """RabbitMQ's definitions: base64(salt[4] + H(salt + password)), H after the algorithm."""
    name = {"rabbit_password_hashing_sha256": "sha256",
            "rabbit_password_hashing_sha512": "sha512",
            "rabbit_password_hashing_md5": "md5"}.get(algorithm)  # fmt: skip
    try:
        raw = base64.b64decode(password_hash)
    except ValueError:
        return False
    if name is None or len(raw) < 5:
        return False
    salt, digest = raw[:4], raw[4:]
    return hmac.compare_digest(hashlib.new(name, salt + password.encode()).digest(), digest)


def rabbit_user_hash(definitions: str, user: str) -> tuple[str, str] | None:
    """(password_hash, hashing_algorithm) of `user` in `rabbitmqctl export_definitions -`'s
    output (its first JSON object); None when the user is not there."""
    start = definitions.find("{")
    if start < 0:
        return None
    try:
        data = json.loads(definitions[start:])
    except ValueError:
        return None
    for entry in data.get("users", []):
        if entry.get("name") == user:
            return str(entry.get("password_hash", "")), str(entry.get("hashing_algorithm", ""))
    return None


def verifier_sql(user: str) -> str:
    return f"SELECT rolpassword FROM pg_authid WHERE rolname = '{user.replace(chr(39), '')}'"


@dataclass(frozen=True)
class Drift:
    store: str
    variable: str
    fix: str

    def describe(self) -> str:
        return f"{self.store}'s data volume holds another password than {self.variable}"


def running_argv(project: str) -> tuple[str, ...]:
    return ("docker", "ps", "--filter", f"label=com.docker.compose.project={project}",
            "--format", '{{.Label "com.docker.compose.service"}} {{.Names}}')  # fmt: skip


def running_containers(runner: Runner, project: str, *, check: bool = False) -> dict[str, str]:
    """service -> name of the project's running containers (one a service: the stores')."""
    listing = runner.run(Command(running_argv(project), mutates=False, timeout=60), check=check)
    return dict(line.split(maxsplit=1) for line in listing.stdout.splitlines() if " " in line)


def find_drift(runner: Runner, config: Config) -> list[Drift]:
    """The running data stores of the environment's project whose stored password is not the
    environment's (read with `docker exec`: no compose file of any release is needed)."""
    running = running_containers(runner, config.require("COMPOSE_PROJECT_NAME"))
    found = []
    where = config.paths.env_secrets
    if "postgres" in running and config.get("POSTGRES_PASSWORD"):
        user = config.get("POSTGRES_USER") or "postgres"
        argv = ("docker", "exec", running["postgres"], "psql", "-X", "-tA", "-U", user, "-d",
                "postgres", "-c", verifier_sql(user))  # fmt: skip
        result = runner.run(Command(argv, mutates=False, timeout=60), check=False)
        verifier = result.stdout.strip()
        if (
            result.ok
            and verifier
            and not postgres_matches(verifier, user, config.require("POSTGRES_PASSWORD"))
        ):
            found.append(Drift("PostgreSQL", "POSTGRES_PASSWORD", (
                f"put the volume's password back in POSTGRES_PASSWORD ({where}), or set the new "
                f"one in the store first: docker exec -it {running['postgres']} psql -U {user} "
                f"-c '\\password {user}'"
            )))  # fmt: skip
    if "rabbitmq" in running and config.get("RABBITMQ_PASSWORD"):
        user = config.get("RABBITMQ_USER") or "guest"
        argv = ("docker", "exec", running["rabbitmq"], "rabbitmqctl", "--quiet",
                "export_definitions", "-")  # fmt: skip
        result = runner.run(Command(argv, mutates=False, timeout=120), check=False)
        stored = rabbit_user_hash(result.stdout, user) if result.ok else None
        if stored and not rabbit_matches(stored[0], config.require("RABBITMQ_PASSWORD"),
                                         stored[1]):  # fmt: skip
            found.append(Drift("RabbitMQ", "RABBITMQ_PASSWORD", (
                f"put the volume's password back in RABBITMQ_PASSWORD ({where}), or set the new "
                f"one in the store first: docker exec -it {running['rabbitmq']} rabbitmqctl "
                f"change_password {user} NEW"
            )))  # fmt: skip
    if "redis" in running and config.get("REDIS_PASSWORD"):
        user = config.get("REDIS_USER") or "mysaaschat"
        argv = redis_cli_argv(running["redis"], "ACL", "GETUSER", user)
        result = runner.run(Command(argv, mutates=False, timeout=60), check=False)
        stored = redis_password_hashes(result.stdout) if result.ok else None
        wanted = hashlib.sha256(config.require("REDIS_PASSWORD").encode()).hexdigest()
        if stored is not None and wanted not in stored:
            found.append(Drift("Redis", "REDIS_PASSWORD", (
                f"put the password Redis runs with back in REDIS_PASSWORD ({where}) and get a "
                f"new one with inv env.rotate --env={config.env} --secret REDIS_PASSWORD"
            )))  # fmt: skip
    return found


# redis-cli in Redis' container, logged in as the stack's user with the password Redis was
# started with (its file; a rotation adds the new one beside it), the command from "$@"
REDIS_CLI = ('REDISCLI_AUTH="${REDIS_PASSWORD:-$(cat "${REDIS_PASSWORD_FILE:-/dev/null}")}" '
             'exec redis-cli --user "$REDIS_USER" --no-auth-warning "$@"')  # fmt: skip


def redis_cli_argv(container: str, *args: str) -> tuple[str, ...]:
    return ("docker", "exec", container, "sh", "-c", REDIS_CLI, "sh", *args)


def redis_password_hashes(output: str) -> set[str] | None:
    """The SHA-256 hashes in `ACL GETUSER`'s reply (redis-cli's plain output: one field a line,
    the hashes after "passwords"); None when the reply is not one (a refused log-in)."""
    lines = [line.strip() for line in output.splitlines()]
    if "passwords" not in lines:
        return None
    hashes = set()
    for line in lines[lines.index("passwords") + 1 :]:
        if len(line) != 64 or any(c not in "0123456789abcdef" for c in line):
            break
        hashes.add(line)
    return hashes


def refuse_drift(runner: Runner, drifts: list[Drift], env_name: str) -> None:
    """One line per store above; the error says that nothing changed."""
    if not drifts:
        return
    for drift in drifts:
        runner.events.info(f"  {drift.describe()}: {drift.fix}")
    raise ConfigError(
        f"{' and '.join(d.describe() for d in drifts)}: the deploy stopped before changing "
        "anything",
        drifts[0].fix if len(drifts) == 1 else f"see each store's line above ({env_name})",
    )
