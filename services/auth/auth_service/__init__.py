"""Auth service of My-SaaS-Chat: registration, login, bearer tokens."""
