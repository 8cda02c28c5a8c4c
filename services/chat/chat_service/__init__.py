"""Chat service of My-SaaS-Chat: rooms, messages, WebSocket push fanned out through Redis."""
