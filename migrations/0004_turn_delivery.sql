-- When a chat adapter has shown a turn's outcome in its thread (the version posted, or the
-- sentence saying why not). A crash between storing a result and showing it leaves this empty,
-- and the adapter shows it at its next start. Turns finished before this column existed count
-- as shown.
ALTER TABLE turns ADD COLUMN delivered_at TEXT;
UPDATE turns SET delivered_at = finished_at WHERE state NOT IN ('queued', 'running');
