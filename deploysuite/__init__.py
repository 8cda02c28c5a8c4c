"""Core of the My-SaaS-Chat deployment suite: config -> plan -> runner -> events."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
