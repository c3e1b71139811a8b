-- Node lifecycle and credential revocation: a site can drain, undrain and decommission a node; a
-- node key can be revoked, or rotated: the new key waits in next_key_hash until its first use,
-- then the old one is kept a short grace for requests already under way. Unused enrollment
-- tokens get an id so their site can list and delete them.
ALTER TABLE nodes ADD COLUMN admin_state text NOT NULL DEFAULT 'active'
  CHECK (admin_state IN ('active', 'draining', 'decommissioning', 'decommissioned'));
ALTER TABLE nodes ADD COLUMN key_revoked_at timestamptz;
ALTER TABLE nodes ADD COLUMN next_key_hash text UNIQUE;
ALTER TABLE nodes ADD COLUMN prev_key_hash text UNIQUE;
ALTER TABLE nodes ADD COLUMN prev_key_until timestamptz;
ALTER TABLE enrollment_tokens ADD COLUMN id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid();
