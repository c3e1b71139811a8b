-- What the node's memory watchdog does to a slice's sliver it resets: 'restart' it as it was, or
-- 'restore' it from a fresh copy of its image (the slice asks for that).
ALTER TABLE slices ADD COLUMN memory_reset text NOT NULL DEFAULT 'restart' CHECK (memory_reset IN ('restart', 'restore'));
