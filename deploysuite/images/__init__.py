"""Base images from Debian packages, service builds, registry push and pull."""
