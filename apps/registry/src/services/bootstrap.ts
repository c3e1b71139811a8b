// First start: create the admin from PLANETLITE_ADMIN_EMAIL / PLANETLITE_ADMIN_PASSWORD.
import { randomUUID } from 'node:crypto';
import type { RegistryContext } from '../context.js';
import { hashPassword } from './secrets.js';

/** Creates the admin only when no admin exists yet, so restarts and replicas change nothing. */
export async function ensureAdmin(ctx: RegistryContext): Promise<void> {
  const { adminEmail, adminPassword } = ctx.config;
  const { rows } = await ctx.db.query("SELECT 1 FROM users WHERE 'admin' = ANY(roles) LIMIT 1");
  if (rows[0]) return;
  if (!adminEmail || !adminPassword) {
    ctx.log.warn('no admin user exists; set PLANETLITE_ADMIN_EMAIL and PLANETLITE_ADMIN_PASSWORD and restart to create one');
    return;
  }
  const hash = await hashPassword(adminPassword);
  await ctx.db.query(
    "INSERT INTO users (id, email, name, password_hash, roles) VALUES ($1, $2, 'Administrator', $3, '{admin}') ON CONFLICT (email) DO NOTHING",
    [randomUUID(), adminEmail.toLowerCase(), hash],
  );
  ctx.log.info({ email: adminEmail }, 'admin user created');
}
