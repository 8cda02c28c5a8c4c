"""nginx rendering and reload, TLS certificates."""
