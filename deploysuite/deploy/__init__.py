"""Releases and manifests, the lock, audit, hooks, local and remote deploys, smoke."""
