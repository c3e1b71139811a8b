// user ls|show|me|create: accounts and their per-site roles.
import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import { ROLES, type Role, type User } from '@planetlite/api';
import type { Context } from '../context.js';
import { collect, oneOf } from '../parse.js';
import { resolveUserId } from '../resolve.js';
import { userRecord, userTable } from '../render.js';

/** 18 random bytes: 24 url-safe characters, easy to paste. */
export function generatePassword(): string {
  return randomBytes(18).toString('base64url');
}

export function registerUser(program: Command, ctx: Context): void {
  const user = program
    .command('user')
    .description('users: researchers (user), principal investigators (pi), technical contacts (tech), admins')
    .addHelpText('after', `
Examples:
  planetlite user ls --site princeton
  planetlite user create --email bob@princeton.edu --name "Bob Smith" --site princeton --role user
  planetlite user show bob@princeton.edu`);

  user
    .command('ls')
    .alias('list')
    .description('list the users you may see (admins: all; pi/tech: their site; others: themselves)')
    .option('--site <login_base>', 'only users of this site')
    .action(async (opts: { site?: string }) => {
      const users = await (await ctx.client()).listUsers(opts.site ? { site: opts.site } : {});
      ctx.emit(users, userTable);
    });

  user
    .command('show')
    .description('show one user')
    .argument('<user>', 'user id, email, or "me"')
    .action(async (ref: string) => {
      const client = await ctx.client();
      ctx.emit(await client.getUser(await resolveUserId(client, ref)), userRecord);
    });

  user
    .command('revoke-tokens')
    .description("end every login token of a user at once, on every replica (that user, admin): a lost laptop, a leaked token")
    .argument('<user>', 'email or id')
    .action(async (ref: string) => {
      const client = await ctx.client();
      const res = await client.revokeUserTokens(await resolveUserId(client, ref));
      ctx.emit(res, (r) => `${r.revoked} token(s) of ${ref} ended`);
    });

  user
    .command('me')
    .description('show your own account')
    .action(async () => {
      ctx.emit(await (await ctx.client()).me(), userRecord);
    });

  user
    .command('create')
    .description('create a user at a site (admin, or a pi of that site)')
    .requiredOption('--email <email>', 'login email')
    .requiredOption('--name <name>', 'full name')
    .requiredOption('--site <login_base>', 'the site the user belongs to')
    .option('--role <role>', `a role at the site, repeatable: ${ROLES.join(', ')} (default: user)`, (v: string, prev: Role[] | undefined) => collect(oneOf(ROLES)(v), prev) as Role[])
    .option('--password <password>', 'initial password (else PLANETLITE_NEW_PASSWORD, else one is generated and printed)')
    .action(async (opts: { email: string; name: string; site: string; role?: Role[]; password?: string }) => {
      const client = await ctx.client();
      let password = opts.password ?? ctx.io.env.PLANETLITE_NEW_PASSWORD;
      const generated = !password;
      password ||= generatePassword();
      const roles: Role[] = [...new Set<Role>(opts.role ?? ['user'])];
      const created = await client.createUser({ email: opts.email, name: opts.name, site: opts.site, roles, password });
      ctx.emit(created, (u: User) => userRecord(u, generated ? [['password', `${password} (generated: pass it on to ${u.email})`]] : []));
      // With --json stdout is the API object only, so a generated password goes to stderr.
      if (generated && ctx.json) ctx.note(`generated password for ${created.email}: ${password}`);
    });
}
