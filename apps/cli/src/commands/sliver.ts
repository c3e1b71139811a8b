// sliver ls|show|stats|log|create|<action>|delete: one slice's virtual machine or container on one node.
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { SLIVER_ACTIONS, type PlanetLiteClient, type Sliver, type SliverAction } from '@planetlite/api';
import type { Context } from '../context.js';
import { CliError } from '../errors.js';
import { integer } from '../parse.js';
import { resolveNodeId } from '../resolve.js';
import { sliverRecord, sliverStats, sliverTable } from '../render.js';
import { parseSince, SINCE_HELP } from '../stats.js';
import { forTerminal } from '../terminal.js';

const POLL_MS = 1000;
const DEFAULT_TIMEOUT_S = 600;

const ACTION_HELP: Record<SliverAction['action'], string> = {
  start: 'start a stopped sliver',
  stop: 'stop a sliver (its disk is kept)',
  restart: 'stop and start a sliver',
  reset: 'rebuild a sliver\'s root filesystem from the image and start it again',
  freeze: 'pause every process of a sliver',
  thaw: 'resume a frozen sliver',
};

/** Reports wait progress: a bar on a terminal, a line per state change otherwise, nothing for --json. */
interface WaitReporter {
  update(s: Sliver, imageProgress: number | undefined): void;
  stop(): void;
}

function percent(s: Sliver, imageProgress: number | undefined): number {
  switch (s.state) {
    case 'pending':
      return 5;
    case 'provisioning':
      return 10 + Math.round(85 * (imageProgress ?? 0));
    default:
      return 100;
  }
}

function reporter(ctx: Context): WaitReporter {
  if (ctx.json) return { update() {}, stop() {} };
  const stderr = ctx.io.stderr;
  if (stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        stream: stderr as NodeJS.WritableStream,
        format: 'sliver {id} [{bar}] {percentage}% | {state} | {duration}s',
        hideCursor: true,
        clearOnComplete: false,
      },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    return {
      update(s, image) {
        const payload = { id: s.id.slice(0, 8), state: s.state };
        if (!started) bar.start(100, percent(s, image), payload);
        else bar.update(percent(s, image), payload);
        started = true;
      },
      stop() {
        if (started) bar.stop();
      },
    };
  }
  let last = '';
  return {
    update(s) {
      // The node's reason (say, an image it lacks) is worth a line as much as a new state.
      const line = `sliver ${s.id}: ${s.state}${s.error ? ` (${s.error})` : ''}`;
      if (line !== last) ctx.note(line);
      last = line;
    },
    stop() {},
  };
}

/** How far the node has fetched the slice's image, when the node says so. */
async function imageProgress(client: PlanetLiteClient, s: Sliver, image: string | undefined): Promise<number | undefined> {
  if (!image || s.state !== 'provisioning') return undefined;
  try {
    const node = await client.getNode(s.node_id);
    return node.images.find((i) => i.image === image)?.progress;
  } catch {
    // Progress is decoration: a failed lookup must not end the wait.
    return undefined;
  }
}

/** Polls until the sliver is running (returned) or failed/gone/timed out (thrown). */
export async function waitForSliver(ctx: Context, client: PlanetLiteClient, first: Sliver, timeoutS: number, pollMs = POLL_MS): Promise<Sliver> {
  const deadline = Date.now() + timeoutS * 1000;
  const report = reporter(ctx);
  const image = await client.getSlice(first.slice).then((s) => s.image, () => undefined);
  let s = first;
  try {
    for (;;) {
      report.update(s, await imageProgress(client, s, image));
      if (s.state === 'running') return s;
      if (s.state === 'failed') throw new CliError(`sliver ${s.id} failed${s.error ? `: ${s.error}` : ''}`);
      if (s.state === 'deleting' || s.state === 'stopped') throw new CliError(`sliver ${s.id} is ${s.state}, not starting`);
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new CliError(`timed out after ${timeoutS}s waiting for sliver ${s.id} (still ${s.state}${s.error ? `: ${s.error}` : ''}); check with planetlite sliver show ${s.id}`);
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(pollMs, left)));
      s = await client.getSliver(s.id);
    }
  } finally {
    report.stop();
  }
}

export function registerSliver(program: Command, ctx: Context): void {
  const sliver = program
    .command('sliver')
    .description('slivers: a slice\'s container (lxc) or virtual machine (kvm) on one node')
    .addHelpText('after', `
Examples:
  planetlite sliver create princeton_codeen node1.princeton.edu --wait
  planetlite sliver ls princeton_codeen
  planetlite sliver restart 0b6e3c1a-...
  planetlite --json sliver show 0b6e3c1a-... | jq -r .ssh.port
  planetlite sliver stats 0b6e3c1a-... --since 24h
  planetlite sliver log 0b6e3c1a-... | less -R`);

  sliver
    .command('ls')
    .alias('list')
    .description('list a slice\'s slivers')
    .argument('<slice>', 'slice name')
    .action(async (slice: string) => {
      ctx.emit(await (await ctx.client()).listSlivers(slice), sliverTable);
    });

  sliver
    .command('show')
    .description('show one sliver and the ssh command that reaches it')
    .argument('<id>', 'sliver id')
    .action(async (id: string) => {
      ctx.emit(await (await ctx.client()).getSliver(id), sliverRecord);
    });

  sliver
    .command('stats')
    .description('show a sliver\'s latest usage and its history: cpu % of one core, memory, disk, network kbit/s')
    .argument('<id>', 'sliver id')
    .option('--since <when>', `how far back the history goes: ${SINCE_HELP} (default 1h)`, (v: string) => parseSince(v))
    .addHelpText('after', `
Rates are over the interval that ends at each row's time; '-' means there is no interval before
it, or a counter went down because the sliver started again. --json prints the registry's answer
to GET /v1/slivers/{id}/usage.`)
    .action(async (id: string, opts: { since?: string }) => {
      const client = await ctx.client();
      const [s, history] = await Promise.all([client.getSliver(id), client.sliverUsage(id, { since: opts.since ?? parseSince('1h') })]);
      if (history.truncated && !ctx.json) ctx.note(`the registry sent only the first ${history.samples.length} samples; use a later --since to see the rest`);
      ctx.emit(history, (h) => sliverStats(s, h));
    });

  sliver
    .command('log')
    .description('print the tail of a sliver\'s console log (a VM\'s serial console), as its node last uploaded it')
    .argument('<id>', 'sliver id')
    .option('--raw', 'print control sequences as they are, also on a terminal')
    .addHelpText('after', `
The node uploads the last 64 KiB of the console once the sliver has started, and the registry
keeps its latest upload. On a terminal, control sequences other than colours are left out (a
console log may clear the screen); piped or with --raw the text is printed as uploaded. --json
prints the registry's answer to GET /v1/slivers/{id}/console: {sliver_id, text, updated_at}.`)
    .action(async (id: string, opts: { raw?: boolean }) => {
      const log = await (await ctx.client()).getSliverConsole(id);
      if (!ctx.json && log.text === '') {
        ctx.note(`the console log of sliver ${id} is empty (uploaded ${log.updated_at})`);
        return;
      }
      const onTerminal = ctx.io.stdout.isTTY === true && !opts.raw;
      ctx.emit(log, (l) => (onTerminal ? forTerminal(l.text) : l.text));
    });

  sliver
    .command('create')
    .description('create a sliver of a slice on a node (one per slice per node)')
    .argument('<slice>', 'slice name')
    .argument('<node>', 'node id or hostname')
    .option('--wait', 'wait until the sliver is running (or failed)')
    .option('--timeout <seconds>', `with --wait: give up after this long (default ${DEFAULT_TIMEOUT_S})`, integer(1))
    .action(async (slice: string, nodeRef: string, opts: { wait?: boolean; timeout?: number }, cmd: Command) => {
      if (opts.timeout !== undefined && !opts.wait) cmd.error('error: --timeout only makes sense with --wait', { exitCode: 2 });
      const client = await ctx.client();
      let created = await client.createSliver(slice, await resolveNodeId(client, nodeRef));
      if (opts.wait) created = await waitForSliver(ctx, client, created, opts.timeout ?? DEFAULT_TIMEOUT_S);
      ctx.emit(created, sliverRecord);
    });

  for (const action of SLIVER_ACTIONS) {
    sliver
      .command(action)
      .description(ACTION_HELP[action])
      .argument('<id>', 'sliver id')
      .action(async (id: string) => {
        ctx.emit(await (await ctx.client()).sliverAction(id, action), sliverRecord);
      });
  }

  sliver
    .command('delete')
    .alias('rm')
    .description('delete a sliver; it is gone once its node confirms')
    .argument('<id>', 'sliver id')
    .action(async (id: string) => {
      ctx.emit(await (await ctx.client()).deleteSliver(id), sliverRecord);
    });
}
