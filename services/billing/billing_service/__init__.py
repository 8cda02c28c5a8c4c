"""Billing service of My-SaaS-Chat: plans and the payment-provider webhook."""
