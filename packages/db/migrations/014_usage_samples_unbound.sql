-- Usage samples no longer bound to their sliver by a foreign key. Each sample's key check locked its
-- sliver's row (FOR KEY SHARE: a lock written into the row, and a check per row), and a replica's
-- flush, which writes about one sample per sliver a minute, spent a third of its time on it
-- (scripts/bench/usage-flush.ts, 200,000 slivers: 3.4–3.8 s a round with the key, 2.6 s without).
-- A sliver's delete removes its samples itself (deleteSliver); a sample a flush wrote while the
-- sliver was being deleted is left without a sliver, unseen, until the retention prune takes it.
ALTER TABLE sliver_usage DROP CONSTRAINT IF EXISTS sliver_usage_sliver_fkey;
