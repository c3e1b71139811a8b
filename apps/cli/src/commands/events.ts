// events: what happened to slices, slivers and nodes; --follow streams new ones until Ctrl-C.
import type { Command } from 'commander';
import type { Event } from '@planetlite/api';
import type { Context } from '../context.js';
import { integer } from '../parse.js';
import { resolveNodeId } from '../resolve.js';
import { eventLine, eventTable } from '../render.js';

const RECONNECT_MS = 1000;

interface EventOptions {
  slice?: string;
  node?: string;
  type?: string;
  after?: number;
  limit?: number;
  follow?: boolean;
}

export function registerEvents(program: Command, ctx: Context): void {
  program
    .command('events')
    .description('list events, or follow them as they happen')
    .option('--slice <name>', 'only events of this slice')
    .option('--node <node>', 'only events of this node (id or hostname)')
    .option('--type <type>', 'only this event type, e.g. sliver.state or watchdog.reset')
    .option('--after <id>', 'only events with a larger id', integer(0))
    .option('--limit <n>', 'at most this many (1-1000, default 100; not with --follow)', integer(1, 1000))
    .option('-f, --follow', 'keep streaming new events until Ctrl-C (--json: one JSON object per line)')
    .addHelpText('after', `
Examples:
  planetlite events --slice princeton_codeen
  planetlite events --type watchdog.reset --follow`)
    .action(async (opts: EventOptions) => {
      const client = await ctx.client();
      const query = {
        slice: opts.slice,
        node: opts.node ? await resolveNodeId(client, opts.node) : undefined,
        type: opts.type,
        after: opts.after,
      };
      if (!opts.follow) {
        ctx.emit(await client.listEvents({ ...query, limit: opts.limit }), eventTable);
        return;
      }
      const stop = new AbortController();
      const onSigint = () => stop.abort();
      process.once('SIGINT', onSigint);
      const print = (e: Event) => {
        query.after = e.id;
        ctx.out(ctx.json ? JSON.stringify(e) : eventLine(e));
      };
      try {
        // The registry may close the stream (restart, proxy timeout): pick up after the last event seen.
        while (!stop.signal.aborted) {
          await client.streamEvents(query, print, stop.signal);
          if (!stop.signal.aborted) await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
        }
      } finally {
        process.off('SIGINT', onSigint);
      }
    });
}
