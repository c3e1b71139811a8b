-- The spare slivers the node's agent keeps ready (its warm pool), as its last written report
-- listed them: [{id, image, image_sha256, kind}]. A new sliver of a slice whose image and kind match one
-- takes that spare's id, so the agent hands the spare out instead of building one; the spare
-- leaves this list in the same transaction. Not null: a node that reports no pool has [].
ALTER TABLE nodes ADD COLUMN spares jsonb NOT NULL DEFAULT '[]'::jsonb;
