-- A sliver's latest figures: the newer of those its row keeps (written with a report the registry
-- wrote) and its latest usage sample (the figures of reports a replica took from memory are written
-- only as samples). Rewriting every sliver's row once a sample interval, beside its sample, was
-- half of the usage flush and most of what kept autovacuum busy on `slivers` at 10,000 nodes.
-- One step down sliver_usage's (sliver, at) index.
CREATE FUNCTION planetlite_sliver_usage(sliver uuid, kept jsonb) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT CASE
    WHEN u.at IS NULL OR (kept IS NOT NULL AND (kept ->> 'at')::timestamptz >= u.at) THEN kept
    ELSE jsonb_strip_nulls(jsonb_build_object(
      'cpu_seconds', u.cpu_seconds, 'memory_bytes', u.memory_bytes, 'disk_bytes', u.disk_bytes,
      'net_rx_bytes', u.net_rx_bytes, 'net_tx_bytes', u.net_tx_bytes, 'at', u.at))
  END
  FROM (SELECT 1) one
  LEFT JOIN LATERAL (SELECT * FROM sliver_usage WHERE sliver_usage.sliver = planetlite_sliver_usage.sliver ORDER BY at DESC LIMIT 1) u ON true
$$;
