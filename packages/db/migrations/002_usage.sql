-- Per-sliver accounting history: about one sample a minute taken from the node's reports, pruned
-- after the retention period by a sweep. slivers.usage keeps only the latest figures.

CREATE TABLE sliver_usage (
  sliver       uuid NOT NULL REFERENCES slivers (id) ON DELETE CASCADE,
  at           timestamptz NOT NULL DEFAULT now(),
  cpu_seconds  double precision,
  memory_bytes bigint,
  disk_bytes   bigint,
  net_rx_bytes bigint,
  net_tx_bytes bigint
);
-- The history endpoint reads one sliver's samples in time order.
CREATE INDEX sliver_usage_sliver_at ON sliver_usage (sliver, at);
-- The hourly prune deletes by age across every sliver.
CREATE INDEX sliver_usage_at ON sliver_usage (at);
