// site ls|show|create|update|token: sites, their quotas and node enrollment tokens.
import { Option, type Command } from 'commander';
import type { SitePatch } from '@planetlite/api';
import type { Context } from '../context.js';
import { integer } from '../parse.js';
import { siteRecord, siteTable } from '../render.js';
import { formatRecord, formatTable, when } from '../table.js';

export function registerSite(program: Command, ctx: Context): void {
  const site = program
    .command('site')
    .description('sites: the institutions that host nodes and own slices')
    .addHelpText('after', `
Examples:
  planetlite site ls
  planetlite site create princeton --name "Princeton University" --max-slices 10 --max-slivers 100
  planetlite site token princeton --ttl 3600
  planetlite site tokens princeton
  planetlite site token-revoke princeton TOKEN_ID`);

  site
    .command('ls')
    .alias('list')
    .description('list sites')
    .action(async () => {
      const sites = await (await ctx.client()).listSites();
      ctx.emit(sites, siteTable);
    });

  site
    .command('show')
    .description('show one site')
    .argument('<login_base>', 'the site prefix, e.g. princeton')
    .action(async (loginBase: string) => {
      ctx.emit(await (await ctx.client()).getSite(loginBase), siteRecord);
    });

  site
    .command('create')
    .description('create a site (admin)')
    .argument('<login_base>', 'site prefix: a lowercase letter then 1-19 letters or digits; slice names start with it')
    .requiredOption('--name <name>', 'the full name, e.g. "Princeton University"')
    .requiredOption('--max-slices <n>', 'how many slices the site may have', integer(0))
    .requiredOption('--max-slivers <n>', 'how many slivers its slices may have in all', integer(0))
    .action(async (loginBase: string, opts: { name: string; maxSlices: number; maxSlivers: number }) => {
      const client = await ctx.client();
      const created = await client.createSite({ login_base: loginBase, name: opts.name, max_slices: opts.maxSlices, max_slivers: opts.maxSlivers });
      ctx.emit(created, siteRecord);
    });

  site
    .command('update')
    .description('change a site\'s name, quotas or whether it is enabled (admin)')
    .argument('<login_base>', 'the site prefix')
    .option('--name <name>', 'new full name')
    .option('--max-slices <n>', 'new slice quota', integer(0))
    .option('--max-slivers <n>', 'new sliver quota', integer(0))
    .addOption(new Option('--enable', 'enable the site').conflicts('disable'))
    .addOption(new Option('--disable', 'disable the site: its slivers stop being scheduled').conflicts('enable'))
    .action(async (loginBase: string, opts: { name?: string; maxSlices?: number; maxSlivers?: number; enable?: boolean; disable?: boolean }, cmd: Command) => {
      const patch: SitePatch = {};
      if (opts.name !== undefined) patch.name = opts.name;
      if (opts.maxSlices !== undefined) patch.max_slices = opts.maxSlices;
      if (opts.maxSlivers !== undefined) patch.max_slivers = opts.maxSlivers;
      if (opts.enable) patch.enabled = true;
      if (opts.disable) patch.enabled = false;
      if (Object.keys(patch).length === 0) cmd.error('error: nothing to change: give --name, --max-slices, --max-slivers, --enable or --disable', { exitCode: 2 });
      ctx.emit(await (await ctx.client()).updateSite(loginBase, patch), siteRecord);
    });

  site
    .command('token')
    .description('make a single-use enrollment token so a new node can join the site (tech, pi, admin)')
    .argument('<login_base>', 'the site prefix')
    .option('--ttl <seconds>', 'how long the token stays valid (60 to 2592000; registry default 86400)', integer(60, 30 * 86400))
    .action(async (loginBase: string, opts: { ttl?: number }) => {
      const client = await ctx.client();
      const token = await client.createEnrollmentToken(loginBase, opts.ttl !== undefined ? { ttl_seconds: opts.ttl } : {});
      ctx.emit(token, (t) =>
        [
          formatRecord([
            ['token', t.token],
            ['site', t.site],
            ['expires_at', when(t.expires_at)],
            ['registry', t.registry ?? client.registry],
            ['ca_pin', t.ca_pin ?? '(none: the system CAs vouch for the registry)'],
          ]),
          '',
          'On the new node (Debian 12), as root, in the unpacked release bundle (once; the token is single use):',
          `  ./install-node.sh --registry ${t.registry ?? client.registry} --token ${t.token}${t.ca_pin ? ` --ca-pin ${t.ca_pin}` : ''} --address NODE_ADDRESS`,
          'or, where planetlite-agent is already installed:',
          `  planetlite-agent enroll --registry ${t.registry ?? client.registry} --token ${t.token}${t.ca_pin ? ` --ca-pin ${t.ca_pin}` : ''} --address NODE_ADDRESS --state-dir /var/lib/planetlite-agent`,
          'then start the daemon with: planetlite-agent run --state-dir /var/lib/planetlite-agent',
        ].join('\n'),
      );
    });

  site
    .command('tokens')
    .description("list the site's enrollment tokens that can still enroll a node (tech, pi, admin; the secrets are never shown again)")
    .argument('<login_base>', 'the site prefix')
    .action(async (loginBase: string) => {
      const tokens = await (await ctx.client()).listEnrollmentTokens(loginBase);
      ctx.emit(tokens, (ts) => (ts.length ? formatTable(['ID', 'CREATED_AT', 'EXPIRES_AT', 'CREATED_BY'], ts.map((t) => [t.id, t.created_at, when(t.expires_at), t.created_by])) : `site ${loginBase} has no unused enrollment token`));
    });

  site
    .command('token-revoke')
    .description('revoke an enrollment token before it is used (tech, pi, admin)')
    .argument('<login_base>', 'the site prefix')
    .argument('<id>', 'the token id, from site tokens')
    .action(async (loginBase: string, id: string) => {
      await (await ctx.client()).deleteEnrollmentToken(loginBase, id);
      ctx.emit({ revoked: id }, () => `enrollment token ${id} of site ${loginBase} revoked`);
    });
}
