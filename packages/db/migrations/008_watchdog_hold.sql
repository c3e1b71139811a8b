-- The memory watchdog's freeze: a node reports a sliver it froze because of memory pressure (the
-- figures behind it, null when none), and a thaw action is counted so that the node lets go of
-- such a sliver even though its desired state ('running') did not change.
ALTER TABLE slivers ADD COLUMN watchdog_hold jsonb;
ALTER TABLE slivers ADD COLUMN thaw_seq integer NOT NULL DEFAULT 0;
