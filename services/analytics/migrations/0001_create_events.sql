-- Raw analytics events.
CREATE TABLE IF NOT EXISTS events (
    id          bigserial   PRIMARY KEY,
    name        text        NOT NULL,
    properties  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    received_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS events_name_received_at_idx ON events (name, received_at);
