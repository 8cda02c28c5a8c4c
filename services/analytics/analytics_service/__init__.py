"""Analytics service of My-SaaS-Chat: event ingestion and counts."""
