-- The console log of a sliver (a VM's serial console; perhaps a container's console later): the tail
-- its node last uploaded, at most 64 KiB, replaced by each upload and gone with the sliver.
-- bytes: the UTF-8 length of text, so a listing need not read the text itself.
CREATE TABLE sliver_console (
  sliver_id  uuid PRIMARY KEY REFERENCES slivers (id) ON DELETE CASCADE,
  text       text NOT NULL,
  bytes      integer NOT NULL CHECK (bytes >= 0),
  updated_at timestamptz NOT NULL DEFAULT now()
);
