-- Room on each page of the tables every report and flush rewrites (a sliver's usage figures, a
-- node's last_seen), so that PostgreSQL writes the new row version on the same page (a HOT update)
-- instead of a new entry in each of the table's indexes: slivers has five. At fillfactor 100, 60 %
-- of the usage flush's updates touched every index (scripts/bench/usage-flush.ts, 200,000 slivers).
-- Pages written from now on keep the room; `VACUUM FULL slivers, nodes` rewrites the existing ones.
ALTER TABLE slivers SET (fillfactor = 80);
ALTER TABLE nodes SET (fillfactor = 80);
