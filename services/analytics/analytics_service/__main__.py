import sys

from analytics_service.main import migrate, serve
from saaschat.cli import run_cli

if __name__ == "__main__":
    sys.exit(
        run_cli(
            "analytics_service", "analytics", sys.argv[1:], {"serve": serve, "migrate": migrate}
        )
    )
