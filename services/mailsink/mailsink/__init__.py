"""SMTP sink for the local stack: accepts all mail, keeps it in memory, shows it over HTTP."""
