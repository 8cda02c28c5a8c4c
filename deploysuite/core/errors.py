"""Typed errors. Tasks catch SuiteError at the edge and print one line: what is wrong, the fix."""

from __future__ import annotations

from collections.abc import Sequence


class SuiteError(Exception):
    """An error a person can act on: `what` failed, `fix` is the next command to run."""

    exit_code = 1

    def __init__(self, what: str, fix: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix

    def one_line(self) -> str:
        return f"error: {self.what}" + (f" (fix: {self.fix})" if self.fix else "")


class ConfigError(SuiteError):
    """Bad environment name, unreadable or malformed env file, invalid value."""

    exit_code = 2


class EngineUnavailable(SuiteError):
    """The Docker engine does not answer."""

    exit_code = 3


class ResourceError(SuiteError):
    """Not enough disk space or another local resource to start the work."""

    exit_code = 4


class CommandFailed(SuiteError):
    """A command exited non-zero. Carries argv (masked), exit code and the stderr tail."""

    exit_code = 5

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int,
        stderr: str,
        host: str = "local",
        fix: str | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        self.host = host
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "no error output"
        cmd = " ".join(self.argv[:3]) + (" ..." if len(self.argv) > 3 else "")
        super().__init__(f"[{host}] `{cmd}` exited {returncode}: {last}", fix)


class S3Error(SuiteError):
    """The S3 API refused or could not be reached: missing bucket, refused credentials, an
    upload that could not complete. The message never holds a credential."""

    exit_code = 10


class ChecksFailed(SuiteError):
    """A validation found problems; they were already listed, this is the closing line."""

    exit_code = 1
