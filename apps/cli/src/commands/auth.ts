// login, logout, whoami: getting and keeping a user token.
import type { Command } from 'commander';
import type { Context } from '../context.js';
import { CliError, RegistryUnreachableError, networkReason } from '../errors.js';
import { originOf, pinAtLogin } from '../trust.js';
import { obtainPassword } from '../password.js';
import { formatRecord, relativeTime, when } from '../table.js';

export function registerAuth(program: Command, ctx: Context): void {
  program
    .command('login')
    .description('log in to a registry and save its token in the config file')
    .requiredOption('--email <email>', 'your account email')
    .option('--password <password>', 'password (else PLANETLITE_PASSWORD, piped stdin, or a prompt)')
    .option('--ca-pin <sha256:hex>', "the registry CA's pin, as its admin gave it: refuse the registry unless its CA matches (default: ask on a terminal when the CA is unknown)")
    .addHelpText(
      'after',
      `
The registry comes from --registry, PLANETLITE_REGISTRY or the previous login.
The token, its expiry and the registry are saved to the config file (mode 0600).

Like ssh with a new host: a registry whose certificate the system's CAs do not vouch for (its own
CA, the default) shows its CA's pin, and on a terminal you are asked whether to trust it; without a
terminal pass --ca-pin. The answer is kept in the config file (known_registries), and from then on a
registry presenting a certificate that CA did not sign is refused.

Examples:
  planetlite --registry https://registry.example:8080 login --email alice@princeton.edu
  planetlite --registry https://registry.example:8080 login --email alice@princeton.edu --ca-pin sha256:…
  echo "$PASS" | planetlite login --email alice@princeton.edu`,
    )
    .action(async (opts: { email: string; password?: string; caPin?: string }) => {
      const registry = await ctx.registry();
      if (!registry) throw new CliError('no registry: pass --registry URL or set PLANETLITE_REGISTRY');
      const config = await ctx.config();
      const trusted = await pinAtLogin(config, registry, {
        caPin: opts.caPin,
        io: ctx.io,
        probe: () => fetch(new URL('/healthz', registry), { signal: AbortSignal.timeout(30_000) }),
      }).catch((err: unknown) => {
        if (err instanceof TypeError) throw new RegistryUnreachableError(registry, networkReason(err));
        throw err;
      });
      const known = { ...config.known_registries };
      if (trusted) known[originOf(registry)] = trusted;
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
        known_registries: known,
      });
      const via = trusted ? ` (CA ${trusted.ca_pin})` : '';
      ctx.emit(answer, (a) => `logged in to ${client.registry}${via} as ${a.user.email} (token expires ${relativeTime(a.expires_at) || a.expires_at})`);
    });

  program
    .command('logout')
    .description('end the saved token on the registry and forget it (the registry and email are kept for the next login)')
    .action(async () => {
      const config = await ctx.config();
      if (!config.token) {
        if (!ctx.json) ctx.out('not logged in');
        return;
      }
      // Ended on the registry first, so a copy of the token is worth nothing; an unreachable
      // registry or a token already dead still lets the user forget it here.
      const ended = await ctx.client().then((c) => c.logout()).then(() => true, () => false);
      if (!ended) ctx.note('note: the registry did not end the token (unreachable, or it had already ended); it is forgotten here');
      await ctx.saveConfig({ registry: config.registry, email: config.email, known_registries: config.known_registries });
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
