// Sites: their rows and quotas.
import type { Queryable } from '@planetlite/db';
import type * as S from '@planetlite/api';
import { iso, type Row } from './columns.js';

export function toSite(r: Row): S.Site {
  return {
    login_base: r.login_base as string,
    name: r.name as string,
    max_slices: r.max_slices as number,
    max_slivers: r.max_slivers as number,
    enabled: r.enabled as boolean,
    created_at: iso(r.created_at),
    updated_at: iso(r.updated_at),
  };
}

/** The new site, or null when its login_base is taken. */
export async function insertSite(q: Queryable, b: S.SiteCreate): Promise<S.Site | null> {
  const { rows } = await q.query(
    `INSERT INTO sites (login_base, name, max_slices, max_slivers) VALUES ($1, $2, $3, $4)
     ON CONFLICT (login_base) DO NOTHING RETURNING *`,
    [b.login_base, b.name, b.max_slices, b.max_slivers],
  );
  return rows[0] ? toSite(rows[0]) : null;
}

export async function listSites(q: Queryable): Promise<S.Site[]> {
  const { rows } = await q.query('SELECT * FROM sites ORDER BY login_base');
  return rows.map(toSite);
}

export async function findSite(q: Queryable, loginBase: string): Promise<S.Site | null> {
  const { rows } = await q.query('SELECT * FROM sites WHERE login_base = $1', [loginBase]);
  return rows[0] ? toSite(rows[0]) : null;
}

export async function patchSite(q: Queryable, loginBase: string, b: S.SitePatch): Promise<S.Site | null> {
  const { rows } = await q.query(
    `UPDATE sites SET name = COALESCE($2, name), max_slices = COALESCE($3, max_slices),
       max_slivers = COALESCE($4, max_slivers), enabled = COALESCE($5, enabled), updated_at = now()
     WHERE login_base = $1 RETURNING *`,
    [loginBase, b.name ?? null, b.max_slices ?? null, b.max_slivers ?? null, b.enabled ?? null],
  );
  return rows[0] ? toSite(rows[0]) : null;
}
