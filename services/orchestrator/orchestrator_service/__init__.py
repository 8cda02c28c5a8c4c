"""Orchestrator service of My-SaaS-Chat: accepts background jobs and queues them."""
