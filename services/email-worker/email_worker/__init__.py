"""Email worker of My-SaaS-Chat: delivers queued email jobs over SMTP."""
