-- Running count per event name, maintained by a trigger so that every release writing to
-- `events` (including the previous one during a rolling deploy) keeps it exact.
-- Inserts are blocked for the few milliseconds of this migration so the backfill is exact too.
LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE IF NOT EXISTS event_counts (
    name  text   PRIMARY KEY,
    count bigint NOT NULL DEFAULT 0
);

CREATE OR REPLACE FUNCTION events_count_insert() RETURNS trigger AS $$
BEGIN
    INSERT INTO event_counts (name, count) VALUES (NEW.name, 1)
    ON CONFLICT (name) DO UPDATE SET count = event_counts.count + 1;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS events_count_insert ON events;
CREATE TRIGGER events_count_insert AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_count_insert();

INSERT INTO event_counts (name, count)
SELECT name, count(*) FROM events GROUP BY name
ON CONFLICT (name) DO UPDATE SET count = EXCLUDED.count;
