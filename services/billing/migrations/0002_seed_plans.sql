-- Seed plans; rows that already exist are left as they are.
INSERT INTO plans (id, name, price_cents, currency, billing_interval) VALUES
    ('free', 'Free', 0, 'EUR', 'month'),
    ('pro', 'Pro', 1200, 'EUR', 'month'),
    ('team', 'Team', 4900, 'EUR', 'month')
ON CONFLICT (id) DO NOTHING;
