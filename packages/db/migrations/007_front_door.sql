-- The node's ssh front door as its agent last reported it: port, host public key and its SHA256
-- fingerprint (computed by the registry), so users can pin it in known_hosts. Null: none reported.
ALTER TABLE nodes ADD COLUMN front_door jsonb;
