-- Spend per model call: reserved before the call at the estimated price, then charged at the
-- actual price when an image came back, or refunded when none did. One row per turn.
CREATE TABLE usage (
    id            INTEGER PRIMARY KEY,
    turn_id       INTEGER NOT NULL UNIQUE REFERENCES turns(id) ON DELETE CASCADE,
    session_id    INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    platform      TEXT NOT NULL,
    workspace     TEXT NOT NULL,
    user          TEXT NOT NULL,
    model         TEXT NOT NULL,
    image_size    TEXT,
    reserved_usd  REAL NOT NULL,
    cost_usd      REAL NOT NULL DEFAULT 0,
    state         TEXT NOT NULL CHECK (state IN ('reserved', 'charged', 'refunded')),
    day           TEXT NOT NULL,  -- the UTC date of the reservation: the budget's day
    created_at    TEXT NOT NULL,
    settled_at    TEXT
);
CREATE INDEX usage_by_workspace_day ON usage (platform, workspace, day);
CREATE INDEX turns_by_author_time ON turns (author, created_at);
