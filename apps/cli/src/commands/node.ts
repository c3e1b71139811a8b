// node ls|show: the machines the testbed offers to run slivers on (images: image.ts).
import type { Command } from 'commander';
import type { Context } from '../context.js';
import { resolveNodeId } from '../resolve.js';
import { nodeRecord, nodeTable } from '../render.js';

export function registerNode(program: Command, ctx: Context): void {
  const node = program.command('node').description('nodes: machines that host slivers, enrolled by their site');

  node
    .command('ls')
    .alias('list')
    .description('list nodes')
    .option('--site <login_base>', 'only nodes of this site')
    .action(async (opts: { site?: string }) => {
      ctx.emit(await (await ctx.client()).listNodes(opts.site ? { site: opts.site } : {}), nodeTable);
    });

  node
    .command('show')
    .description('show a node: capabilities, resources, port window and image fetch progress')
    .argument('<node>', 'node id or hostname')
    .action(async (ref: string) => {
      const client = await ctx.client();
      ctx.emit(await client.getNode(await resolveNodeId(client, ref)), nodeRecord);
    });
}
