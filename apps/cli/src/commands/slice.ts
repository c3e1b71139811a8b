// slice ls|show|create|delete|renew|members: a slice is a named set of slivers across nodes.
import { Option, type Command } from 'commander';
import { MEMORY_RESETS, SLICE_KINDS, type SliceCreate, type SlicePatch } from '@planetlite/api';
import type { Context } from '../context.js';
import { integer, oneOf, timestamp } from '../parse.js';
import { resolveUserId } from '../resolve.js';
import { sliceRecord, sliceTable } from '../render.js';
import { CliError } from '../errors.js';

const DAY_MS = 86_400_000;

interface ResourceOptions {
  memoryReset?: SliceCreate['memory_reset'];
  memoryMb?: number;
  cpuShares?: number;
  diskMb?: number;
  netKbps?: number;
  cpuCap?: number | null;
}

interface CreateOptions extends ResourceOptions {
  description: string;
  url: string;
  kind?: SliceCreate['kind'];
  image?: string;
}

/** The per-sliver resource flags of `slice create` and `slice update`. */
function resourceOptions(cmd: Command): Command {
  return cmd
    .option('--memory-mb <n>', 'memory per sliver, MB', integer(16))
    .option('--cpu-shares <n>', 'cpu weight per sliver', integer(2))
    .option('--disk-mb <n>', 'disk per sliver, MB', integer(16))
    .option('--net-kbps <n>', 'network rate cap per sliver, kbit/s, each way', integer(8))
    .option('--cpu-cap <percent|none>', "hard cpu cap per sliver, % of one cpu (150 = one and a half), or 'none'", (v: string) => (v === 'none' ? null : integer(1, 12_800)(v)))
    .option('--memory-reset <what>', `when the node's memory watchdog resets a sliver: ${MEMORY_RESETS.join(' it as it was, or ')} it from a fresh copy of its image (default restart)`, oneOf(MEMORY_RESETS));
}

/** The resources the flags name, or undefined when none is given. */
function resourcesFrom(opts: ResourceOptions): NonNullable<SlicePatch['resources']> | undefined {
  const r: NonNullable<SlicePatch['resources']> = {};
  if (opts.memoryMb !== undefined) r.memory_mb = opts.memoryMb;
  if (opts.cpuShares !== undefined) r.cpu_shares = opts.cpuShares;
  if (opts.diskMb !== undefined) r.disk_mb = opts.diskMb;
  if (opts.netKbps !== undefined) r.net_kbps = opts.netKbps;
  if (opts.cpuCap !== undefined) r.cpu_cap_percent = opts.cpuCap;
  return Object.keys(r).length > 0 ? r : undefined;
}

export function registerSlice(program: Command, ctx: Context): void {
  const slice = program
    .command('slice')
    .description('slices: a research project\'s share of the testbed, named <login_base>_<suffix>')
    .addHelpText('after', `
Examples:
  planetlite slice create princeton_codeen --description "CoDeeN CDN" --url https://codeen.example
  planetlite slice members add princeton_codeen bob@princeton.edu
  planetlite slice renew princeton_codeen --days 28
  planetlite sliver create princeton_codeen node1.princeton.edu --wait`);

  slice
    .command('ls')
    .alias('list')
    .description('list the slices you may see')
    .option('--site <login_base>', 'only slices of this site')
    .action(async (opts: { site?: string }) => {
      ctx.emit(await (await ctx.client()).listSlices(opts.site ? { site: opts.site } : {}), sliceTable);
    });

  slice
    .command('show')
    .description('show one slice')
    .argument('<name>', 'slice name')
    .action(async (name: string) => {
      ctx.emit(await (await ctx.client()).getSlice(name), sliceRecord);
    });

  const create = slice
    .command('create')
    .description('create a slice (pi of the site, admin)')
    .argument('<name>', '<login_base>_<suffix>, suffix of 1-30 lowercase letters, digits or _')
    .requiredOption('--description <text>', 'what the slice is for (renewal needs it)')
    .requiredOption('--url <url>', 'a page about the project (renewal needs it)')
    .option('--kind <kind>', `${SLICE_KINDS.join(' or ')} (default lxc)`, oneOf(SLICE_KINDS))
    .option('--image <image>', 'image name (default: the registry\'s default image)');
  resourceOptions(create)
    .action(async (name: string, opts: CreateOptions) => {
      const body: SliceCreate = { name, description: opts.description, url: opts.url };
      if (opts.kind) body.kind = opts.kind;
      if (opts.image) body.image = opts.image;
      const resources = resourcesFrom(opts);
      if (resources) body.resources = resources;
      if (opts.memoryReset) body.memory_reset = opts.memoryReset;
      ctx.emit(await (await ctx.client()).createSlice(body), sliceRecord);
    });

  const update = slice
    .command('update')
    .description("change a slice's description or url (member, pi, admin), or its resources (pi, admin): running slivers take new limits without a restart")
    .argument('<name>', 'slice name')
    .option('--description <text>', 'what the slice is for')
    .option('--url <url>', 'a page about the project');
  resourceOptions(update)
    .action(async (name: string, opts: ResourceOptions & { description?: string; url?: string }) => {
      const body: SlicePatch = {};
      if (opts.description !== undefined) body.description = opts.description;
      if (opts.url !== undefined) body.url = opts.url;
      const resources = resourcesFrom(opts);
      if (resources) body.resources = resources;
      if (opts.memoryReset) body.memory_reset = opts.memoryReset;
      if (Object.keys(body).length === 0) throw new CliError('slice update needs --description, --url, --memory-reset or a resource (--memory-mb, --cpu-shares, --cpu-cap, --disk-mb, --net-kbps)');
      ctx.emit(await (await ctx.client()).updateSlice(name, body), sliceRecord);
    });

  slice
    .command('delete')
    .alias('rm')
    .description('delete a slice and tear down all its slivers (pi, admin)')
    .argument('<name>', 'slice name')
    .action(async (name: string) => {
      const deleted = await (await ctx.client()).deleteSlice(name);
      ctx.emit(deleted, () => `deleting slice ${name}: its slivers are being torn down`);
    });

  slice
    .command('renew')
    .description('push back a slice\'s expiry (at most 8 weeks ahead unless admin)')
    .argument('<name>', 'slice name')
    .addOption(new Option('--expires-at <time>', 'new expiry, RFC 3339, e.g. 2030-01-31T00:00:00Z').argParser(timestamp).conflicts('days'))
    .addOption(new Option('--days <n>', 'new expiry this many days from now').argParser(integer(1, 3650)).conflicts('expiresAt'))
    .action(async (name: string, opts: { expiresAt?: string; days?: number }, cmd: Command) => {
      const expiresAt = opts.expiresAt ?? (opts.days !== undefined ? new Date(Date.now() + opts.days * DAY_MS).toISOString() : undefined);
      if (!expiresAt) cmd.error('error: give either --expires-at TIME or --days N', { exitCode: 2 });
      ctx.emit(await (await ctx.client()).renewSlice(name, expiresAt), sliceRecord);
    });

  const members = slice.command('members').description('add or remove slice members (pi, admin)');

  members
    .command('add')
    .description('make a user a member: their keys open the slice\'s slivers')
    .argument('<name>', 'slice name')
    .argument('<user>', 'user id or email')
    .action(async (name: string, ref: string) => {
      const client = await ctx.client();
      ctx.emit(await client.addMember(name, await resolveUserId(client, ref)), sliceRecord);
    });

  members
    .command('rm')
    .alias('remove')
    .description('remove a member')
    .argument('<name>', 'slice name')
    .argument('<user>', 'user id or email')
    .action(async (name: string, ref: string) => {
      const client = await ctx.client();
      let userId = ref;
      if (ref.includes('@')) {
        // A member's id is on the slice itself; no need to be allowed to list users.
        const member = (await client.getSlice(name)).members.find((m) => m.email.toLowerCase() === ref.toLowerCase());
        userId = member ? member.id : await resolveUserId(client, ref);
      } else {
        userId = await resolveUserId(client, ref);
      }
      ctx.emit(await client.removeMember(name, userId), sliceRecord);
    });
}
