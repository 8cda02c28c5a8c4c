"""Command-line entry shared by the services: ``python -m <package> <command>``."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence

from saaschat.config import ConfigError, env
from saaschat.jsonlog import configure_logging

log = logging.getLogger("saaschat.cli")

Command = Callable[[], Awaitable[int]]


def run_cli(program: str, service: str, argv: Sequence[str], commands: dict[str, Command]) -> int:
    usage = f"usage: python -m {program} {{{','.join(commands)}}}"
    if len(argv) != 1 or argv[0] not in commands:
        if argv and argv[0] in ("-h", "--help"):
            print(usage)
            return 0
        print(usage, file=sys.stderr)
        return 2
    try:
        name = env("SERVICE_NAME", service) or service
        level = (env("LOG_LEVEL", "INFO") or "INFO").upper()
        configure_logging(name, level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO")
        return asyncio.run(commands[argv[0]]())
    except ConfigError as exc:
        # One clear line naming the variable, on stderr for humans and as JSON on stdout.
        print(f"{program}: configuration error: {exc}", file=sys.stderr)
        print(
            json.dumps(
                {"level": "error", "service": service, "message": f"configuration error: {exc}"}
            )
        )
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception:
        log.exception("command failed", extra={"command": argv[0]})
        return 1
