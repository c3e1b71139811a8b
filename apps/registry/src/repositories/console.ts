// The tail of each sliver's console log, as its node last uploaded it.
import type { Queryable } from '@planetlite/db';
import { iso } from './columns.js';

/** Stores the log if the sliver is on this node (one statement, so it must still exist); null otherwise. */
export async function storeConsole(q: Queryable, sliverId: string, nodeId: string, text: string, bytes: number): Promise<{ updated_at: string } | null> {
  const { rows } = await q.query(
    `INSERT INTO sliver_console (sliver_id, text, bytes, updated_at)
     SELECT id, $3, $4, now() FROM slivers WHERE id = $1 AND node_id = $2
     ON CONFLICT (sliver_id) DO UPDATE SET text = EXCLUDED.text, bytes = EXCLUDED.bytes, updated_at = EXCLUDED.updated_at
     RETURNING updated_at`,
    [sliverId, nodeId, text, bytes],
  );
  return rows[0] ? { updated_at: iso(rows[0].updated_at) } : null;
}

export async function findConsole(q: Queryable, sliverId: string): Promise<{ text: string; updated_at: string } | null> {
  const { rows } = await q.query('SELECT text, updated_at FROM sliver_console WHERE sliver_id = $1', [sliverId]);
  return rows[0] ? { text: rows[0].text as string, updated_at: iso(rows[0].updated_at) } : null;
}
