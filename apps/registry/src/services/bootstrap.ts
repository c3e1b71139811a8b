// First start: create the admin from PLANETLITE_ADMIN_EMAIL / PLANETLITE_ADMIN_PASSWORD.
import { randomUUID } from 'node:crypto';
import type { Logger } from '@planetlite/core';
import type { Queryable } from '@planetlite/db';
import { anyAdmin, insertAdmin } from '../repositories/users.js';
import { hashPassword } from './secrets.js';

/** Creates the admin only when no admin exists yet, so restarts and replicas change nothing. */
export async function ensureAdmin(deps: { db: Queryable; log: Logger; config: { adminEmail?: string | undefined; adminPassword?: string | undefined } }): Promise<void> {
  const { adminEmail, adminPassword } = deps.config;
  if (await anyAdmin(deps.db)) return;
  if (!adminEmail || !adminPassword) {
    deps.log.warn('no admin user exists; set PLANETLITE_ADMIN_EMAIL and PLANETLITE_ADMIN_PASSWORD and restart to create one');
    return;
  }
  await insertAdmin(deps.db, { id: randomUUID(), email: adminEmail, passwordHash: await hashPassword(adminPassword) });
  deps.log.info({ email: adminEmail }, 'admin user created');
}
