// node ls|show: the machines the testbed offers to run slivers on (images: image.ts); and what a
// site's tech or pi does with them: location, drain, undrain, decommission, revoke-key.
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import type { Node, NodeAction } from '@planetlite/api';
import type { Context } from '../context.js';
import { CliError } from '../errors.js';
import { decimal } from '../parse.js';
import { resolveNodeId } from '../resolve.js';
import { nodeRecord, nodeTable } from '../render.js';

/** Asks on a terminal; without one (scripts, pipes) the answer is no, and --yes must say it. */
async function confirm(ctx: Context, question: string): Promise<boolean> {
  const stdin = ctx.io.stdin;
  if (!stdin?.isTTY) return false;
  ctx.io.stderr.write(`${question} [y/N] `);
  const rl = createInterface({ input: stdin, terminal: false });
  const line = await new Promise<string>((resolve) => {
    rl.once('line', resolve);
    rl.once('close', () => resolve(''));
  });
  rl.close();
  return /^y(es)?$/i.test(line.trim());
}

/** Looks the node up (for its hostname in messages and prompts). */
async function nodeOf(ctx: Context, ref: string): Promise<{ node: Node; client: Awaited<ReturnType<Context['client']>> }> {
  const client = await ctx.client();
  return { node: await client.getNode(await resolveNodeId(client, ref)), client };
}

const SAID: Record<NodeAction['action'], (n: Node) => string> = {
  drain: (n) => `node ${n.hostname} is draining: it gets no new slivers; the ones there keep running (undo: planetlite node undrain ${n.hostname})`,
  undrain: (n) => `node ${n.hostname} takes new slivers again`,
  decommission: (n) =>
    n.admin_state === 'decommissioned'
      ? `node ${n.hostname} is decommissioned: its key is revoked; its record stays (planetlite node ls --all)`
      : `node ${n.hostname} is decommissioning: its slivers are being torn down; its key is revoked once the node confirms them gone`,
};

export function registerNode(program: Command, ctx: Context): void {
  const node = program.command('node').description('nodes: machines that host slivers, enrolled by their site');

  node
    .command('ls')
    .alias('list')
    .description('list nodes (not decommissioned ones unless --all)')
    .option('--site <login_base>', 'only nodes of this site')
    .option('--all', 'also decommissioned nodes')
    .action(async (opts: { site?: string; all?: boolean }) => {
      ctx.emit(await (await ctx.client()).listNodes({ ...(opts.site ? { site: opts.site } : {}), ...(opts.all ? { all: true } : {}) }), nodeTable);
    });

  node
    .command('show')
    .description('show a node: capabilities, resources, port window, admin state and image fetch progress')
    .argument('<node>', 'node id or hostname')
    .action(async (ref: string) => {
      const client = await ctx.client();
      ctx.emit(await client.getNode(await resolveNodeId(client, ref)), nodeRecord);
    });

  node
    .command('location')
    .description("set where a node stands (the admin's map in the dashboard draws it), or --clear it (its site's tech or pi, admin)")
    .argument('<node>', 'node id or hostname')
    .option('--city <name>', 'city or place, as people would name it (1-100 characters)')
    .option('--lat <degrees>', 'latitude in decimal degrees, north positive (-90 to 90)', decimal(-90, 90))
    .option('--lon <degrees>', 'longitude in decimal degrees, east positive (-180 to 180)', decimal(-180, 180))
    .option('--clear', 'remove the location')
    .addHelpText('after', '\nExamples:\n  planetlite node location node1.princeton.test --city "Princeton, NJ" --lat 40.3573 --lon -74.6672\n  planetlite node location node1.princeton.test --clear')
    .action(async (ref: string, opts: { city?: string; lat?: number; lon?: number; clear?: boolean }) => {
      const given = [opts.city, opts.lat, opts.lon].filter((v) => v !== undefined).length;
      if (opts.clear && given > 0) throw new CliError('give either --clear or --city, --lat and --lon, not both');
      if (!opts.clear && given < 3) throw new CliError('give --city, --lat and --lon together (e.g. --city "Princeton, NJ" --lat 40.3573 --lon -74.6672), or --clear');
      const city = opts.city?.trim();
      if (!opts.clear && (!city || city.length > 100 || /[\u0000-\u001f\u007f-\u009f]/.test(city))) throw new CliError('--city must be 1 to 100 printable characters');
      const location = opts.clear ? null : { city: city!, latitude: opts.lat!, longitude: opts.lon! };
      const { node: n, client } = await nodeOf(ctx, ref);
      ctx.emit(await client.updateNode(n.id, { location }), (r) => r.location
        ? `node ${r.hostname} is at ${r.location.city} (${r.location.latitude}, ${r.location.longitude})`
        : `node ${r.hostname} has no location now`);
    });

  for (const [action, what] of [
    ['drain', 'stop placing new slivers on a node; the ones there keep running (its site\'s tech or pi, admin)'],
    ['undrain', 'let a drained node take new slivers again (its site\'s tech or pi, admin)'],
  ] as const) {
    node
      .command(action)
      .description(what)
      .argument('<node>', 'node id or hostname')
      .action(async (ref: string) => {
        const { node: n, client } = await nodeOf(ctx, ref);
        ctx.emit(await client.nodeAction(n.id, action), SAID[action]);
      });
  }

  node
    .command('decommission')
    .description('take a node out of service for good: its slivers are torn down, then its key is revoked; its record stays (its site\'s tech or pi, admin)')
    .argument('<node>', 'node id or hostname')
    .option('-y, --yes', 'do not ask for confirmation')
    .option('--force', 'for an offline node that is gone for good: forget its slivers without its confirmation')
    .action(async (ref: string, opts: { yes?: boolean; force?: boolean }) => {
      const { node: n, client } = await nodeOf(ctx, ref);
      if (!opts.yes && !(await confirm(ctx, `Decommission node ${n.hostname}? Every sliver on it is torn down and its key revoked.`))) {
        throw new CliError(`not decommissioning ${n.hostname}: it would tear down every sliver on it and revoke its key; run again with --yes to do it`);
      }
      ctx.emit(await client.nodeAction(n.id, 'decommission', { force: opts.force === true }), SAID.decommission);
    });

  node
    .command('revoke-key')
    .description('revoke a node\'s key at once, on every replica; the node must enroll again (its site\'s tech or pi, admin)')
    .argument('<node>', 'node id or hostname')
    .option('-y, --yes', 'do not ask for confirmation')
    .action(async (ref: string, opts: { yes?: boolean }) => {
      const { node: n, client } = await nodeOf(ctx, ref);
      if (!opts.yes && !(await confirm(ctx, `Revoke the key of node ${n.hostname}? It cannot reach the registry until it enrolls again.`))) {
        throw new CliError(`not revoking the key of ${n.hostname}: it could not reach the registry until it enrolls again; run again with --yes to do it`);
      }
      ctx.emit(await client.revokeNodeKey(n.id), (r) => `the key of node ${r.hostname} is revoked; it must enroll again with a new token (planetlite site token ${r.site})`);
    });
}
