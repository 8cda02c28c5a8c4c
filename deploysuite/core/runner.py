"""The one place that runs commands.

Commands arrive as data (argv tuples built by pure functions). The runner masks them before any
line is printed, honours --dry-run (mutating commands are printed, not run; read-only commands
still run because the plan depends on what they read), and turns a failure into CommandFailed.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from deploysuite.core.errors import CommandFailed, SuiteError
from deploysuite.core.events import Events
from deploysuite.core.masking import Masker

if TYPE_CHECKING:
    from deploysuite.core.ssh import SshConnection

STDERR_TAIL_LINES = 40


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    description: str = ""
    host: str = "local"
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    mutates: bool = True
    timeout: float | None = None
    input: bytes | None = None
    # False: the process gets only the variables a tool needs (BASE_VARIABLES), not this
    # process's environment, which may hold the deploy's secrets (code of a package being built
    # runs in it)
    inherit_env: bool = True

    def display(self, masker: Masker) -> str:
        text = f"[{self.host}] $ {shlex.join(masker.argv(self.argv))}"
        if self.cwd:
            text = f"[{self.host}] $ cd {shlex.quote(self.cwd)} && {text.split('$ ', 1)[1]}"
        if self.env:
            text += f"   # with {len(self.env)} variables from the config in its environment"
        return text


@dataclass(frozen=True)
class Pipeline:
    """argv | argv | ...; fails when any stage fails (pipefail), not only the last."""

    stages: tuple[Command, ...]
    description: str = ""
    mutates: bool = True

    def display(self, masker: Masker) -> str:
        host = self.stages[0].host
        return f"[{host}] $ " + " | ".join(shlex.join(masker.argv(s.argv)) for s in self.stages)


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0


# What a tool run with inherit_env=False still gets: where programs, home and temporary files
# are, locale, certificates, proxies, and pip's and Python's own settings.
BASE_VARIABLES = re.compile(
    r"^(PATH|HOME|USER|LANG|LC_[A-Z]+|TZ|TMPDIR|TERM|SSL_CERT_(FILE|DIR)|REQUESTS_CA_BUNDLE"
    r"|(HTTP|HTTPS|NO)_PROXY|(http|https|no)_proxy|PIP_[A-Z_]+|PYTHON[A-Z_]*|VIRTUAL_ENV"
    r"|DOCKER_(HOST|CONFIG|TLS_VERIFY|CERT_PATH))$"
)


def local_environ(extra: Mapping[str, str], inherit: bool = True) -> dict[str, str]:
    env = dict(os.environ) if inherit else {
        k: v for k, v in os.environ.items() if BASE_VARIABLES.match(k)}  # fmt: skip
    env.update(extra)
    return env


class Runner:
    """Runs commands on this machine, or on a host through its SSH connection (`on(conn)`)."""

    def __init__(
        self,
        events: Events,
        masker: Masker | None = None,
        dry_run: bool = False,
        transport: SshConnection | None = None,
    ):
        self.events = events
        self.masker = masker or Masker()
        self.dry_run = dry_run
        self.transport = transport
        # printed paths: a --dry-run plans in a scratch folder and shows the real one instead
        self.aliases: dict[str, str] = {}

    @property
    def host(self) -> str:
        return self.transport.host.name if self.transport else "local"

    def on(self, transport: SshConnection) -> Runner:
        """The same runner (events, masking, --dry-run), executing on the connection's host."""
        return Runner(self.events, self.masker, self.dry_run, transport)

    def _display(self, text: str) -> str:
        for scratch, shown in self.aliases.items():
            text = text.replace(scratch, shown)
        return text

    def put(self, data: bytes, path: str, mode: int = 0o600) -> None:
        """Write a file on the runner's host, created with `mode` before any byte lands in it."""
        self.events.command(
            f"[{self.host}] write {path} (mode {mode:04o}, {len(data)} bytes)", run=not self.dry_run
        )
        if self.dry_run:
            return
        if self.transport is None:
            raise SuiteError("put() writes on a host: use files.write_private locally")
        self.transport.put(data, path, mode)

    def _remote(self, command: Command) -> tuple[int, str, str]:
        if command.env:
            # An `env K=V` prefix shows in the host's process list: secrets go as files.
            raise SuiteError(
                f"refusing to send environment variables over SSH for {command.argv[0]}",
                "write them to a 0600 file on the host (Runner.put) and point the command at it",
            )
        assert self.transport is not None
        try:
            return self.transport.run(
                command.argv, stdin=command.input, timeout=command.timeout, cwd=command.cwd
            )
        except TimeoutError:  # the same failure as a local command's, reported by run()
            raise subprocess.TimeoutExpired(command.argv, command.timeout or 0) from None

    def run(
        self,
        command: Command,
        *,
        check: bool = True,
        on_line: Callable[[str], None] | None = None,
        fix: str | None = None,
    ) -> Result:
        """Run one command. on_line receives each masked output line as it arrives (progress)."""
        if command.host != self.host:
            command = replace(command, host=self.host)
        self.events.command(
            self._display(command.display(self.masker)), run=not (self.dry_run and command.mutates)
        )
        if self.dry_run and command.mutates:
            return Result(command.argv, 0, "", "", dry_run=True)
        started = time.monotonic()
        try:
            if self.transport is not None:
                code, stdout, stderr = self._remote(command)
                for line in self.masker(stdout + stderr).splitlines() if on_line else ():
                    on_line(line)
            elif on_line is None:
                proc = subprocess.run(
                    command.argv,
                    input=command.input,
                    capture_output=True,
                    env=local_environ(command.env, command.inherit_env),
                    cwd=command.cwd,
                    timeout=command.timeout,
                    check=False,
                )
                stdout = proc.stdout.decode(errors="replace")
                stderr = proc.stderr.decode(errors="replace")
                code = proc.returncode
            else:
                code, stdout, stderr = self._stream(command, on_line)
        except FileNotFoundError:
            raise SuiteError(
                f"`{command.argv[0]}` is not installed on {command.host}",
                "run ./scripts/quickstart to install what the suite needs",
            ) from None
        except subprocess.TimeoutExpired:
            raise CommandFailed(
                self.masker.argv(command.argv),
                -1,
                f"timed out after {command.timeout}s",
                self.host,
            ) from None
        result = Result(command.argv, code, stdout, stderr, seconds=time.monotonic() - started)
        if check and code != 0:
            raise CommandFailed(
                self.masker.argv(command.argv), code, self.masker(stderr or stdout), self.host, fix
            )
        return result

    def _stream(self, command: Command, on_line: Callable[[str], None]) -> tuple[int, str, str]:
        tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        with subprocess.Popen(
            command.argv,
            stdin=subprocess.PIPE if command.input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=local_environ(command.env, command.inherit_env),
            cwd=command.cwd,
        ) as proc:
            if command.input is not None and proc.stdin is not None:
                proc.stdin.write(command.input)
                proc.stdin.close()
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = self.masker(raw.decode(errors="replace").rstrip("\n"))
                tail.append(line)
                on_line(line)
            code = proc.wait(timeout=command.timeout)
        text = "\n".join(tail)
        return code, text, text

    def run_pipeline(self, pipeline: Pipeline, *, fix: str | None = None) -> Result:
        """Run stages connected by pipes; any stage failing fails the whole (pipefail)."""
        if self.transport is not None:
            raise SuiteError("pipelines run on this machine only", "run it with a local runner")
        self.events.command(
            pipeline.display(self.masker), run=not (self.dry_run and pipeline.mutates)
        )
        argv = tuple(a for s in pipeline.stages for a in (*s.argv, "|"))[:-1]
        if self.dry_run and pipeline.mutates:
            return Result(argv, 0, "", "", dry_run=True)
        started = time.monotonic()
        procs: list[subprocess.Popen[bytes]] = []
        # stderr to files: a pipe nobody reads could fill up and deadlock the pipeline
        errs = [tempfile.TemporaryFile() for _ in pipeline.stages]  # noqa: SIM115
        previous: subprocess.Popen[bytes] | None = None
        out = b""
        try:
            for stage, err_file in zip(pipeline.stages, errs, strict=True):
                proc = subprocess.Popen(
                    stage.argv,
                    stdin=previous.stdout if previous else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=err_file,
                    env=local_environ(stage.env),
                    cwd=stage.cwd,
                )
                if previous is not None and previous.stdout is not None:
                    previous.stdout.close()  # the writer gets SIGPIPE if the reader dies
                procs.append(proc)
                previous = proc
            out, _ = procs[-1].communicate()
        except FileNotFoundError as exc:
            for p in procs:
                p.kill()
            raise SuiteError(
                f"`{exc.filename}` is not installed", "run ./scripts/quickstart"
            ) from None
        codes = [p.wait() for p in procs]
        texts = []
        for err_file in errs:
            err_file.seek(0)
            texts.append(err_file.read().decode(errors="replace"))
            err_file.close()
        for stage, code, text in zip(pipeline.stages, codes, texts, strict=True):
            if code != 0:
                raise CommandFailed(self.masker.argv(stage.argv), code, self.masker(text), fix=fix)
        return Result(
            argv,
            0,
            out.decode(errors="replace"),
            self.masker(texts[-1]),
            seconds=time.monotonic() - started,
        )
