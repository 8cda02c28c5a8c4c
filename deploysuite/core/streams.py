"""Byte streams between processes on this machine and on a host over SSH, for the data paths
(backups, restores) that must not go through memory or a temporary file.

A Process has `stdout` (readable), `stdin` (writable), close_stdin(), wait() -> exit code,
error_text() and kill(), whether it is a local subprocess or a command on a host's channel.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from typing import Any, Protocol

CHUNK = 1024 * 1024


class Process(Protocol):
    stdout: Any
    stdin: Any

    def close_stdin(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def error_text(self) -> str: ...
    def kill(self) -> None: ...


class LocalProcess:
    def __init__(self, argv: Sequence[str], stdin: Any = subprocess.DEVNULL) -> None:
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 (closed in wait/kill)
        self.proc = subprocess.Popen(
            list(argv), stdin=stdin, stdout=subprocess.PIPE, stderr=self._err
        )
        self.stdout = self.proc.stdout
        self.stdin = self.proc.stdin

    def close_stdin(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout=timeout)

    def error_text(self) -> str:
        self._err.seek(0)
        return self._err.read().decode(errors="replace").strip()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class RemoteProcess:
    """A command on a host's SSH channel; stdout/stdin are the channel's binary streams."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.stdout = channel.makefile("rb")
        self.stdin = channel.makefile_stdin("wb")
        self._err = channel.makefile_stderr("rb")

    def close_stdin(self) -> None:
        self.channel.shutdown_write()

    def wait(self, timeout: float | None = None) -> int:
        return int(self.channel.recv_exit_status())

    def error_text(self) -> str:
        if not self.channel.exit_status_ready():
            return ""
        return self._err.read().decode(errors="replace").strip()

    def kill(self) -> None:
        self.channel.close()


def pump(source: Any, process: Process) -> threading.Thread:
    """Copy `source` into the process's stdin in a thread, then close it (EOF)."""

    def run() -> None:
        try:
            while chunk := source.read(CHUNK):
                process.stdin.write(chunk)
        except (BrokenPipeError, OSError):
            pass  # the reader died: its own exit code says why
        finally:
            with contextlib.suppress(OSError):
                process.close_stdin()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def feeding(argv: Sequence[str], source: Process) -> tuple[LocalProcess, threading.Thread | None]:
    """A local process reading `source`'s output: straight from its pipe when `source` is a
    local process, else through a pump thread (an SSH channel has no file descriptor)."""
    if isinstance(source, LocalProcess):
        return LocalProcess(argv, stdin=source.stdout), None
    process = LocalProcess(argv, stdin=subprocess.PIPE)
    return process, pump(source.stdout, process)
