-- Bounded context. A turn whose request was re-anchored (the history grew past the budget)
-- keeps here the self-contained user turn it actually sent: the head image as a reference, a
-- short text of the decisions so far and its own instruction. Later turns on its path replay
-- from this turn on (a new segment) instead of from the root. NULL: an ordinary turn.
ALTER TABLE turns ADD COLUMN anchor_content TEXT;
