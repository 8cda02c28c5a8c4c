import sys

from email_worker.main import migrate, run
from saaschat.cli import run_cli

if __name__ == "__main__":
    sys.exit(
        run_cli(
            "email_worker",
            "email-worker",
            sys.argv[1:],
            {"run": run, "serve": run, "migrate": migrate},
        )
    )
