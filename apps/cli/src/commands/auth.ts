// login, logout, whoami: getting and keeping a user token.
import type { Command } from 'commander';
import type { Context } from '../context.js';
import { obtainPassword } from '../password.js';
import { formatRecord, relativeTime, when } from '../table.js';

export function registerAuth(program: Command, ctx: Context): void {
  program
    .command('login')
    .description('log in to a registry and save its token in the config file')
    .requiredOption('--email <email>', 'your account email')
    .option('--password <password>', 'password (else PLANETLITE_PASSWORD, piped stdin, or a prompt)')
    .addHelpText(
      'after',
      `
The registry comes from --registry, PLANETLITE_REGISTRY or the previous login.
The token, its expiry and the registry are saved to the config file (mode 0600).

Examples:
  planetlite --registry http://registry.example:8080 login --email alice@princeton.edu
  echo "$PASS" | planetlite login --email alice@princeton.edu`,
    )
    .action(async (opts: { email: string; password?: string }) => {
      const client = await ctx.anonymousClient();
      const password = await obtainPassword({
        flag: opts.password,
        env: ctx.io.env.PLANETLITE_PASSWORD,
        envName: 'PLANETLITE_PASSWORD',
        stdin: ctx.io.stdin,
        stderr: ctx.io.stderr,
        prompt: `password for ${opts.email} at ${client.registry}: `,
      });
      const answer = await client.login(opts.email, password);
      await ctx.saveConfig({
        registry: client.registry,
        token: answer.token,
        expires_at: answer.expires_at,
        email: answer.user.email,
        user_id: answer.user.id,
      });
      ctx.emit(answer, (a) => `logged in to ${client.registry} as ${a.user.email} (token expires ${relativeTime(a.expires_at) || a.expires_at})`);
    });

  program
    .command('logout')
    .description('forget the saved token (the registry and email are kept for the next login)')
    .action(async () => {
      const config = await ctx.config();
      if (!config.token) {
        if (!ctx.json) ctx.out('not logged in');
        return;
      }
      await ctx.saveConfig({ registry: config.registry, email: config.email });
      if (!ctx.json) ctx.out(`logged out of ${config.registry ?? 'the registry'}`);
    });

  program
    .command('whoami')
    .description('show who the current token belongs to')
    .action(async () => {
      const client = await ctx.client();
      const me = await client.me();
      const config = await ctx.config();
      const expires = config.token === client.token ? config.expires_at : undefined;
      ctx.emit(me, (u) =>
        formatRecord([
          ['email', u.email],
          ['name', u.name],
          ['id', u.id],
          ['site', u.site],
          ['roles', u.roles.join(', ')],
          ['registry', client.registry],
          ['token_expires', when(expires)],
        ]),
      );
    });
}
