-- Plans offered to customers; prices in the smallest currency unit.
CREATE TABLE IF NOT EXISTS plans (
    id               text        PRIMARY KEY,
    name             text        NOT NULL,
    price_cents      integer     NOT NULL CHECK (price_cents >= 0),
    currency         char(3)     NOT NULL,
    billing_interval text        NOT NULL CHECK (billing_interval IN ('month', 'year')),
    created_at       timestamptz NOT NULL DEFAULT now()
);
