-- Expand-only: a nullable column, so the previous release keeps working.
ALTER TABLE users ADD COLUMN IF NOT EXISTS last_login_at timestamptz;
