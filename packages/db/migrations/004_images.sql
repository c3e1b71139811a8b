-- Images uploaded to the registry (issue 4). An image is immutable: a new version is a new name
-- (debian12-2026.11), so name stays the key and an upload never replaces a row.
-- file: the archive's name inside the registry's images directory (its sha256); NULL for rows
-- made before uploads existed, which have no archive to serve or seed.
-- torrent_info: the bencoded BitTorrent info dictionary (its sha1 is infohash), kept so the
-- seeder can start again without hashing every archive anew.
ALTER TABLE images ADD COLUMN version text;
ALTER TABLE images ADD COLUMN arch text NOT NULL DEFAULT 'x86_64';
ALTER TABLE images ADD COLUMN created_by uuid REFERENCES users (id) ON DELETE SET NULL;
ALTER TABLE images ADD COLUMN file text;
ALTER TABLE images ADD COLUMN torrent_info bytea;
-- The tracker admits an announce by its infohash.
CREATE UNIQUE INDEX images_infohash ON images (infohash) WHERE infohash IS NOT NULL;
