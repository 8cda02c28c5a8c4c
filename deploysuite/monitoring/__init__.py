"""Alerting: Prometheus's alert rules and Alertmanager's routing, rendered from an environment's
configuration, and the promtool and amtool commands that prove them."""
