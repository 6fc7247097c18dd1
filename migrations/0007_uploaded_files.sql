-- Reference images uploaded to Gemini's Files API, by blob: a user image is uploaded once and
-- sent as a fileData URI until shortly before the file's 48 h expiry, then uploaded again.
-- A cache only: losing a row costs one more upload.
CREATE TABLE uploaded_files (
    blob_key     TEXT PRIMARY KEY,  -- the image in the blob store (sha256.ext)
    name         TEXT NOT NULL,     -- files/<id>
    uri          TEXT NOT NULL,     -- what a fileData part names
    mime         TEXT NOT NULL,
    expires_at   TEXT NOT NULL,     -- ISO 8601 UTC, from the file's expirationTime
    uploaded_at  TEXT NOT NULL
);
CREATE INDEX uploaded_files_by_uri ON uploaded_files (uri);
