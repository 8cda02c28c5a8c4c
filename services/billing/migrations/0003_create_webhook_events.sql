-- Every payment-provider webhook event received, once: the primary key on event_id is what
-- makes processing idempotent (a replay conflicts and changes nothing).
CREATE TABLE IF NOT EXISTS webhook_events (
    event_id    text        PRIMARY KEY,
    type        text        NOT NULL,
    payload     jsonb       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Subscription state as last set by a webhook event.
CREATE TABLE IF NOT EXISTS subscriptions (
    customer_id   text        PRIMARY KEY,
    plan_id       text        NOT NULL REFERENCES plans (id),
    status        text        NOT NULL,
    last_event_id text        NOT NULL REFERENCES webhook_events (event_id),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
