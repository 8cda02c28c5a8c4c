-- Users of My-SaaS-Chat. Emails are unique regardless of case.
CREATE TABLE IF NOT EXISTS users (
    id            bigserial   PRIMARY KEY,
    email         text        NOT NULL,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX IF NOT EXISTS users_email_lower_key ON users (lower(email));
