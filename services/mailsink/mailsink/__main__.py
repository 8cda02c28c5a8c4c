import sys

from mailsink.main import migrate, serve
from saaschat.cli import run_cli

if __name__ == "__main__":
    sys.exit(
        run_cli(
            "mailsink", "mailsink", sys.argv[1:] or ["serve"], {"serve": serve, "migrate": migrate}
        )
    )
