-- Chat messages. Ids only grow; within a room they are committed in id order (inserts take a
-- per-room advisory lock), so "everything after id N" is a complete catch-up for a client.
CREATE TABLE IF NOT EXISTS messages (
    id          bigserial   PRIMARY KEY,
    room        text        NOT NULL,
    user_id     bigint      NOT NULL,
    author      text        NOT NULL,
    text        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS messages_room_id_idx ON messages (room, id);
