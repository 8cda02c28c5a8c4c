"""Shared library of the My-SaaS-Chat reference services."""

__all__ = ["__version__"]

__version__ = "0.1.0"
