"""The task edge: the invoke Task class that turns SuiteError into one line, the common flags'
help text, and the confirmation before destructive work. Only this module and tasks/ know invoke."""

from __future__ import annotations

import faulthandler
import signal
import sys
from collections.abc import Callable
from typing import Any

import invoke

from deploysuite.core.errors import SuiteError

# `kill -USR1 PID` prints every thread's stack to stderr and the task goes on: where a deploy
# that seems stuck is waiting, without a debugger on the laptop or CI runner.
faulthandler.register(signal.SIGUSR1, all_threads=True)

# help= text shared by the flags most tasks take.
COMMON_HELP = {
    "env": "Environment to act on: a folder under environments/ (local, staging, production).",
    "dry_run": "Print the exact commands per host instead of running those that change anything.",
    "json": "Print the result as one JSON document on stdout (progress stays on stderr).",
    "verbose": "Also print read-only commands and each build line.",
    "set_": "Override one variable for this run, KEY=VALUE (highest precedence). Repeatable.",
    "yes": "Do not ask for confirmation (CI).",
}


class SuiteTask(invoke.Task):  # type: ignore[misc]
    """An invoke Task whose SuiteErrors end the run with one line and a non-zero exit code."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except SuiteError as exc:
            masker = getattr(exc, "masker", None)
            line = exc.one_line()
            print(masker(line) if masker else line, file=sys.stderr, flush=True)
            raise invoke.Exit(code=exc.exit_code) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr, flush=True)
            raise invoke.Exit(code=130) from None


def task(*args: Any, **kwargs: Any) -> Callable[..., Any]:
    """invoke's @task with the suite's Task class and the common flags' help text filled in."""

    def decorate(body: Callable[..., Any]) -> Any:
        names = body.__code__.co_varnames[: body.__code__.co_argcount]
        help_ = {k: v for k, v in COMMON_HELP.items() if k in names}
        help_.update(kwargs.pop("help", {}))
        return invoke.task(klass=SuiteTask, help=help_, **kwargs)(body)

    if len(args) == 1 and callable(args[0]) and not kwargs:
        return decorate(args[0])
    return decorate


def confirm(action: str, expected: str, *, yes: bool, read: Callable[[str], str] = input) -> None:
    """Destructive work needs the operator to type `expected` (or --yes, for CI). Without a
    terminal and without --yes, refuse rather than guess."""
    if yes:
        return
    if not sys.stdin.isatty() and read is input:
        raise SuiteError(f"{action} needs confirmation and there is no terminal", "add --yes")
    answer = read(f"{action}: type '{expected}' to go on: ").strip()
    if answer != expected:
        raise SuiteError(f"not confirmed ({answer!r} is not {expected!r}); nothing was changed")
