"""inv env.rotate: a new value for a secret, set first in the store that checks it, then in the
environment's secrets file, then in the services that use it (a deploy: each reader's
containers are replaced beside the old ones, so no request is dropped). If a later step fails,
the earlier ones are put back: the store gets the old value again, the file its old text, and a
deploy returns the services to it.

Store by store, no new password crosses a process boundary where it could be seen:
- PostgreSQL: ALTER ROLE with a SCRAM-SHA-256 verifier computed here (the server never sees
  the password), through psql's standard input;
- RabbitMQ: rabbitmqctl change_password, the password on its standard input;
- Redis: ACL SETUSER adds the new password's SHA-256 beside the old one; the old one is removed
  once the services run with the new (Redis is the one store that accepts both meanwhile);
- AUTH_TOKEN_SECRET has no store: the old key becomes AUTH_TOKEN_SECRET_PREVIOUS, which the
  services still accept for verification, so tokens signed before keep working until they expire.
PostgreSQL and RabbitMQ take one password per user: between the store's change and the new
containers, a connection the old containers open anew is refused. Open connections stay (both
stores check a password at log-in only), and the services' pools keep theirs.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from deploysuite.backup.postgres import ident, literal
from deploysuite.config.envcheck import new_secret
from deploysuite.config.layers import Config
from deploysuite.config.service_env import SERVICE_VARIABLES, STORE_SECRETS
from deploysuite.config.session import Session
from deploysuite.core.errors import ConfigError, SuiteError
from deploysuite.core.files import write_private
from deploysuite.core.runner import Command, Runner
from deploysuite.deploy.drift import (
    find_drift,
    redis_cli_argv,
    running_containers,
    scram_keys,
)

COLUMNS = ["secret", "store", "how", "readers", "result"]


@dataclass(frozen=True)
class Rotation:
    name: str
    store: str | None  # the compose service that checks the value; None: nothing but services
    how: str


ROTATIONS: Mapping[str, Rotation] = {
    "POSTGRES_PASSWORD": Rotation(
        "POSTGRES_PASSWORD", "postgres", "ALTER ROLE with a SCRAM verifier made here"),
    "MONITORING_DB_PASSWORD": Rotation(
        "MONITORING_DB_PASSWORD", "postgres", "ALTER ROLE with a SCRAM verifier made here"),
    "RABBITMQ_PASSWORD": Rotation(
        "RABBITMQ_PASSWORD", "rabbitmq", "rabbitmqctl change_password (on standard input)"),
    "REDIS_PASSWORD": Rotation(
        "REDIS_PASSWORD", "redis", "ACL SETUSER: new beside old, old removed after the roll"),
    "AUTH_TOKEN_SECRET": Rotation(
        "AUTH_TOKEN_SECRET", None, "old key kept as AUTH_TOKEN_SECRET_PREVIOUS until its tokens "
        "expire"),
}  # fmt: skip

NOT_HERE: Mapping[str, str] = {
    "BILLING_WEBHOOK_SECRET": "the payment provider signs its webhooks with it: set the new "
    "value at the provider and in {file}, then inv deploy --env={env}",
    "MONGODB_PASSWORD": "MongoDB does not run in the stacks this suite deploys: change it with "
    "mongosh first, then in {file}",
    "AUTH_TOKEN_SECRET_PREVIOUS": "it is set by rotating AUTH_TOKEN_SECRET",
}

ROTATED_RE = re.compile(
    r"^# AUTH_TOKEN_SECRET rotated (\S+); the previous key verifies until (\S+)"
)


def readers(name: str) -> list[str]:
    """The services that read the secret (and so are replaced when it changes)."""
    found = [s for s, names in SERVICE_VARIABLES.items() if name in names]
    found += [s for s, m in STORE_SECRETS.items() if name in m.values() and s not in
              ("postgres", "redis", "rabbitmq", "mongodb")]  # fmt: skip
    return found


def plan(config: Config, names: Sequence[str]) -> list[Rotation]:
    """The rotations asked for (all that this environment uses, when none is named); refused,
    before anything happens, for a name this command cannot rotate."""
    where = str(config.paths.env_secrets)
    schema = config.schema
    for name in names:
        if name in ROTATIONS:
            continue
        if name in NOT_HERE:
            raise ConfigError(f"{name} is not rotated by inv env.rotate",
                              NOT_HERE[name].format(file=where, env=config.env))  # fmt: skip
        spec = schema.get(name)
        if spec is not None and spec.is_secret:
            raise ConfigError(
                f"{name} is issued elsewhere: inv env.rotate cannot make a new one",
                f"rotate it where it is issued, put the new value in {where}, then "
                f"inv deploy --env={config.env}",
            )
        raise ConfigError(f"{name} is not a secret of this suite",
                          f"one of: {', '.join(ROTATIONS)}")  # fmt: skip
    chosen = list(dict.fromkeys(names)) or [n for n in ROTATIONS if config.get(n)]
    missing = [n for n in chosen if not config.get(n)]
    if missing:
        raise ConfigError(f"{', '.join(missing)} has no value to rotate in environment "
                          f"'{config.env}'", f"inv env.secrets --env={config.env}")  # fmt: skip
    return [ROTATIONS[n] for n in chosen]


# --- what the stores are told (pure) -------------------------------------------------------


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """PostgreSQL's stored form of a SCRAM-SHA-256 password (what `\\password` sends)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    stored_key, server_key = scram_keys(password, salt, iterations)
    stored = base64.b64encode(stored_key).decode()
    server = base64.b64encode(server_key).decode()
    return f"SCRAM-SHA-256${iterations}:{base64.b64encode(salt).decode()}${stored}:{server}"


def alter_role_sql(role: str, verifier: str) -> str:
    return f"ALTER ROLE {ident(role)} PASSWORD {literal(verifier)};\n"


def psql_argv(container: str, superuser: str) -> tuple[str, ...]:
    return ("docker", "exec", "-i", container, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-U", superuser, "-d", "postgres")  # fmt: skip


def rabbit_password_argv(container: str, user: str) -> tuple[str, ...]:
    """The new password is read from standard input (no argument: no process list shows it)."""
    return ("docker", "exec", "-i", container, "rabbitmqctl", "--quiet", "change_password", user)


def redis_acl_argv(container: str, user: str, rule: str) -> tuple[str, ...]:
    """ACL SETUSER for the stack's user with one password rule: "#<sha256>" adds that password,
    "!<sha256>" removes it."""
    return redis_cli_argv(container, "ACL", "SETUSER", user, rule)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def set_secret_lines(text: str, values: Mapping[str, str], comment: str | None = None) -> str:
    """The secrets file's text with each NAME=value replaced in place (or added), and an
    optional comment line about the rotation put before AUTH_TOKEN_SECRET."""
    lines = [ln for ln in text.splitlines() if not (comment and ROTATED_RE.match(ln))]
    todo = dict(values)
    out = []
    for line in lines:
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith(
            "#") else None  # fmt: skip
        if key in todo:
            if comment and key == "AUTH_TOKEN_SECRET":
                out.append(comment)
            out.append(f"{key}={todo.pop(key)}")
        else:
            out.append(line)
    for key, value in todo.items():
        if comment and key == "AUTH_TOKEN_SECRET":
            out.append(comment)
        out.append(f"{key}={value}")
    return "\n".join(out) + "\n"


def token_overlap_until(text: str) -> dt.datetime | None:
    """When the previous token key of the last rotation stops mattering (its tokens expired)."""
    for line in text.splitlines():
        match = ROTATED_RE.match(line)
        if match:
            try:
                return dt.datetime.fromisoformat(match.group(2))
            except ValueError:
                return None
    return None


# --- doing it --------------------------------------------------------------------------------


@dataclass
class Store:
    """The running stores of the environment, reached through `runner` (local or a host)."""

    runner: Runner
    config: Config
    running: Mapping[str, str]

    def container(self, service: str) -> str:
        name = self.running.get(service)
        if name is None:
            raise SuiteError(
                f"{service} does not run in environment '{self.config.env}': nothing to rotate "
                "its secret in", f"inv deploy --env={self.config.env} first")  # fmt: skip
        return name

    def set(self, rotation: Rotation, old: str, new: str) -> None:
        """The store accepts `new` from now on (Redis: `old` too, until finish())."""
        c, name = self.config, rotation.name
        if name in ("POSTGRES_PASSWORD", "MONITORING_DB_PASSWORD"):
            role = (c.require("POSTGRES_USER") if name == "POSTGRES_PASSWORD"
                    else c.get("MONITORING_DB_USER") or "monitoring")  # fmt: skip
            argv = psql_argv(self.container("postgres"), c.require("POSTGRES_USER"))
            sql = alter_role_sql(role, scram_verifier(new))
            self.runner.run(Command(argv, input=sql.encode(), timeout=60))
        elif name == "RABBITMQ_PASSWORD":
            user = c.get("RABBITMQ_USER") or "guest"
            self.runner.run(Command(rabbit_password_argv(self.container("rabbitmq"), user),
                                    input=(new + "\n").encode(), timeout=120))  # fmt: skip
        elif name == "REDIS_PASSWORD":
            self.redis_rule(f"#{sha256_hex(new)}")

    def redis_rule(self, rule: str) -> None:
        user = self.config.get("REDIS_USER") or "mysaaschat"
        argv = redis_acl_argv(self.container("redis"), user, rule)
        result = self.runner.run(Command(argv, timeout=60))
        if result.stdout.strip() != "OK" and not self.runner.dry_run:
            raise SuiteError(f"Redis refused ACL SETUSER: {result.stdout.strip()[:200]}",
                             f"inv logs --env={self.config.env} --service redis")  # fmt: skip

    def finish(self, rotation: Rotation, old: str) -> None:
        if rotation.name == "REDIS_PASSWORD":
            self.redis_rule(f"!{sha256_hex(old)}")

    def undo(self, rotation: Rotation, old: str, new: str) -> None:
        if rotation.name == "REDIS_PASSWORD":
            self.redis_rule(f"!{sha256_hex(new)}")
        else:
            self.set(rotation, new, old)


def rotate(
    s: Session,
    rotations: Sequence[Rotation],
    host: Callable[[], AbstractContextManager[Runner]],
    deploy: Callable[[bool], BaseException | None],
    *,
    force: bool = False,
) -> list[dict[str, str]]:
    """Store, file, services; every step put back when a later one fails. Returns the rows of
    the closing table. `host()` opens the runner on the stores' host; `deploy(putting_back)`
    runs the environment's deploy with the file as it then is and returns its failure, if any.
    """
    config, events = s.config, s.events
    path = config.paths.env_secrets
    before = path.read_text(encoding="utf-8") if path.exists() else ""
    now = dt.datetime.now(dt.UTC)
    if any(r.name == "AUTH_TOKEN_SECRET" for r in rotations) and not force:
        until = token_overlap_until(before)
        if until is not None and until > now:
            raise ConfigError(
                f"AUTH_TOKEN_SECRET was rotated less than a token's lifetime ago: tokens signed "
                f"with the key before it verify until {until.isoformat(timespec='seconds')}",
                "rotate it again after that (a new rotation now would log those users out), "
                "or pass --force",
            )
    old = {r.name: config.require(r.name) for r in rotations}
    new = {r.name: new_secret() for r in rotations}
    for value in new.values():
        s.runner.masker.add(value)
    rows = [{"secret": r.name, "store": r.store or "-", "how": r.how,
             "readers": ", ".join(readers(r.name)) or "-", "result": "planned"}
            for r in rotations]  # fmt: skip
    if s.runner.dry_run:
        events.info(f"would write {len(new)} new value(s) into {path}, then inv deploy "
                    f"--env={config.env} replaces the readers' containers")  # fmt: skip
    done: list[Rotation] = []
    with host() as runner:
        running = running_containers(runner, config.require("COMPOSE_PROJECT_NAME"), check=True)
        store = Store(runner, config, running)
        with events.step("the stores accept today's values"):
            drifts = find_drift(runner, config)
        if drifts:
            raise ConfigError(
                f"{drifts[0].describe()}: a rotation starts from the value the store holds",
                drifts[0].fix,
            )
        try:
            for r in rotations:
                if r.store is not None:
                    with events.step(f"{r.name}: new value into {r.store}"):
                        store.container(r.store)
                        store.set(r, old[r.name], new[r.name])
                done.append(r)
        except BaseException:
            undo_stores(store, done, old, new)
            raise
    if s.runner.dry_run:
        return rows
    ttl = int(config.get("AUTH_TOKEN_TTL_SECONDS") or 3600)
    values = dict(new)
    comment = None
    if "AUTH_TOKEN_SECRET" in new:
        values["AUTH_TOKEN_SECRET_PREVIOUS"] = old["AUTH_TOKEN_SECRET"]
        until = (now + dt.timedelta(seconds=ttl)).isoformat(timespec="seconds")
        comment = (f"# AUTH_TOKEN_SECRET rotated {now.isoformat(timespec='seconds')}; the "
                   f"previous key verifies until {until}")  # fmt: skip
    write_private(path, set_secret_lines(before, values, comment))
    failure: BaseException | None
    try:
        with events.step(f"deploy: the readers take the new value{'s' if len(new) > 1 else ''}"):
            failure = deploy(False)
    except KeyboardInterrupt as exc:  # Ctrl-C: put back as for a failure (again: stop at once)
        events.info("interrupted: putting the old values back (Ctrl-C again to stop at once)")
        failure = exc
    if failure is not None:
        events.warn("the deploy failed: the stores and the secrets file get the old values "
                    "back, and a deploy returns the services to them")  # fmt: skip
        write_private(path, before)
        with host() as runner:
            undo_stores(Store(runner, config, running), done, old, new)
        again = deploy(True)
        if again is None:
            events.info("put back: the stores, the secrets file and the services have the old "
                        "values again")  # fmt: skip
        else:
            events.warn(f"the deploy that puts the services back failed too ({again}): some may "
                        "run with a value the stores no longer accept; inv status --env="
                        f"{config.env}, then inv deploy --env={config.env}")  # fmt: skip
        raise failure
    with host() as runner:
        store = Store(runner, config, running)
        for r in rotations:
            store.finish(r, old[r.name])
    for row in rows:
        row["result"] = "rotated"
    return rows


def undo_stores(
    store: Store, done: Sequence[Rotation], old: Mapping[str, str], new: Mapping[str, str]
) -> None:
    for r in reversed(done):
        if r.store is None:
            continue
        try:
            store.undo(r, old[r.name], new[r.name])
        except SuiteError as exc:  # say it, and go on with the others
            store.runner.events.warn(f"{r.name}: the old value could not be put back into "
                                     f"{r.store}: {exc}")  # fmt: skip


def host_of(s: Session, connect: Callable[[Session], AbstractContextManager]) -> Callable[
        [], AbstractContextManager[Runner]]:  # fmt: skip
    """The runner on the stores' host: this machine's for local, the first host's otherwise."""

    @contextmanager
    def opened() -> Iterator[Runner]:
        if s.config.env == "local":
            yield s.runner
            return
        with connect(s) as target:
            yield target.runner

    return opened
