-- Sessions, turns (versions are turns that produced an image), approvals and the audit log.
CREATE TABLE sessions (
    id            INTEGER PRIMARY KEY,
    platform      TEXT NOT NULL,
    workspace     TEXT NOT NULL,
    channel       TEXT NOT NULL,
    thread        TEXT NOT NULL,
    model         TEXT NOT NULL,
    aspect_ratio  TEXT,
    image_size    TEXT,
    head_turn_id  INTEGER REFERENCES turns(id),
    started_by    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    UNIQUE (platform, workspace, channel, thread)
);

CREATE TABLE turns (
    id             INTEGER PRIMARY KEY,
    session_id     INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    parent_turn_id INTEGER REFERENCES turns(id),
    kind           TEXT NOT NULL CHECK (kind IN ('edit', 'retry', 'upscale')),
    instruction    TEXT NOT NULL,
    author         TEXT NOT NULL,
    -- The user content as sent to the model, image data replaced by blob references.
    user_content   TEXT NOT NULL,
    state          TEXT NOT NULL
                   CHECK (state IN ('queued', 'running', 'done', 'text', 'blocked', 'failed')),
    model          TEXT NOT NULL,
    aspect_ratio   TEXT,
    image_size     TEXT,
    -- candidates[0].content exactly as received, image data replaced by blob references.
    model_content  TEXT,
    version        INTEGER,
    image_blob     TEXT,
    image_mime     TEXT,
    text_reply     TEXT,
    reason         TEXT,
    message        TEXT,
    usage          TEXT,
    created_at     TEXT NOT NULL,
    started_at     TEXT,
    finished_at    TEXT,
    UNIQUE (session_id, version)
);
CREATE INDEX turns_by_session ON turns (session_id, id);
CREATE INDEX turns_by_state ON turns (state) WHERE state IN ('queued', 'running');

CREATE TABLE approvals (
    id            INTEGER PRIMARY KEY,
    session_id    INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    turn_id       INTEGER NOT NULL REFERENCES turns(id) ON DELETE CASCADE,
    approved_by   TEXT NOT NULL,
    approved_at   TEXT NOT NULL,
    withdrawn_by  TEXT,
    withdrawn_at  TEXT
);
CREATE INDEX approvals_by_turn ON approvals (turn_id);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    session_id  INTEGER REFERENCES sessions(id) ON DELETE SET NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('ok', 'refused')),
    detail      TEXT NOT NULL DEFAULT '{}',
    at          TEXT NOT NULL
);
CREATE INDEX audit_by_session ON audit_log (session_id, id);
