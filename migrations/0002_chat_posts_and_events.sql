-- Every message the bot posts, so a reaction or button on any of them maps back to its
-- session and turn (also after a restart), and inbound event keys, so a platform's retry of
-- the same event does nothing twice.
CREATE TABLE posts (
    id          INTEGER PRIMARY KEY,
    platform    TEXT NOT NULL,
    channel     TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    session_id  INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    turn_id     INTEGER REFERENCES turns(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('progress', 'version', 'text')),
    created_at  TEXT NOT NULL,
    UNIQUE (platform, channel, message_id)
);
CREATE INDEX posts_by_turn ON posts (turn_id, kind);

CREATE TABLE inbound_events (
    platform     TEXT NOT NULL,
    event_key    TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    PRIMARY KEY (platform, event_key)
);
