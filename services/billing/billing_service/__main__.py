import sys

from billing_service.main import migrate, serve
from saaschat.cli import run_cli

if __name__ == "__main__":
    sys.exit(
        run_cli("billing_service", "billing", sys.argv[1:], {"serve": serve, "migrate": migrate})
    )
