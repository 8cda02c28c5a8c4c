"""Layered configuration, env files, env.check, service environments, the session."""
