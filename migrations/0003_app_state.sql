-- Small facts an adapter must remember across restarts (e.g. a digest of the slash commands
-- last registered with Discord, so they are synced only when they change).
CREATE TABLE app_state (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
