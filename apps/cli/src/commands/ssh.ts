// ssh SLICE [NODE]: runs the user's OpenSSH into the slice's sliver on a node, through the node's
// front door (`ssh SLICE@NODE`, its host key pinned in a known_hosts file of our own) or, with
// --port-forward, through the sliver's forwarded port.
import { spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Command } from 'commander';
import type { FrontDoor, Node, Sliver } from '@planetlite/api';
import type { Context } from '../context.js';
import { CliError } from '../errors.js';
import { sliverTable } from '../render.js';

interface SshPlan {
  sliver: string;
  node: string;
  how: 'front-door' | 'port-forward';
  /** The ssh program and its arguments, as run. */
  argv: string[];
  /** The known_hosts file written for the front door's host key (front door only). */
  known_hosts: string | null;
}

/** The host as known_hosts names it: `[host]:port` unless port 22. */
const knownHost = (host: string, port: number) => (port === 22 ? host : `[${host}]:${port}`);

export function registerSsh(program: Command, ctx: Context): void {
  program
    .command('ssh')
    .description("log in to a slice's sliver with your OpenSSH: through the node's front door (ssh SLICE@NODE), or its forwarded port")
    .argument('<slice>', 'the slice')
    .argument('[node]', "the node (id, hostname or address); needed when the slice has slivers on several nodes")
    .argument('[ssh-args...]', 'more arguments for ssh after --, e.g. -- -L 8080:localhost:80 uptime')
    .option('--root', "log in as the sliver's root (root+SLICE through the front door)")
    .option('--port-forward', "go through the sliver's forwarded port instead of the front door")
    .option('--print', 'print the ssh command instead of running it (with --json: the plan as JSON)')
    .addHelpText(
      'after',
      `
The front door's host key comes from the registry and is written to known_hosts beside the CLI's
config file (ssh then checks it strictly). PLANETLITE_SSH names another ssh program to run.
Examples:
  planetlite ssh my_slice                       # the slice's only sliver
  planetlite ssh my_slice node1.site.edu -- uptime
  planetlite ssh my_slice node1 --port-forward -- -L 8080:localhost:80`,
    )
    .action(async (slice: string, nodeRef: string | undefined, extra: string[], opts: { root?: boolean; portForward?: boolean; print?: boolean }) => {
      // `ssh SLICE -- uptime`: commander takes the first word after -- for NODE; it is ssh's.
      const raw = (program as Command & { rawArgs: string[] }).rawArgs;
      const dd = raw.indexOf('--');
      if (dd >= 0 && nodeRef !== undefined && !raw.slice(0, dd).includes(nodeRef)) {
        extra = [nodeRef, ...extra];
        nodeRef = undefined;
      }
      const client = await ctx.client();
      const slivers = (await client.listSlivers(slice)).filter((s) => s.desired !== 'deleted');
      const nodes = new Map<string, Node>();
      const nodeOf = async (id: string) => {
        if (!nodes.has(id)) nodes.set(id, await client.getNode(id));
        return nodes.get(id)!;
      };
      const sliver = await pickSliver(slice, slivers, nodeRef, nodeOf);
      const node = await nodeOf(sliver.node_id);
      const door = node.front_door;
      let plan: SshPlan;
      if (opts.portForward || !door) {
        if (!opts.portForward) throw new CliError(`node ${node.hostname} reports no ssh front door; use --port-forward (ssh -p ${sliver.ssh.port} ${slice}@${sliver.ssh.host})`);
        const user = opts.root ? 'root' : sliver.ssh.user;
        plan = { sliver: sliver.id, node: node.id, how: 'port-forward', known_hosts: null, argv: [...sshProgram(ctx), '-p', String(sliver.ssh.port), ...extra.slice(0, dashIndex(extra)), `${user}@${sliver.ssh.host}`, ...extra.slice(dashIndex(extra))] };
      } else {
        const file = join(dirname(ctx.configPath), 'known_hosts');
        await pinHostKey(file, node.address, door);
        const user = opts.root ? `root+${slice}` : slice;
        plan = {
          sliver: sliver.id,
          node: node.id,
          how: 'front-door',
          known_hosts: file,
          argv: [...sshProgram(ctx), '-o', `UserKnownHostsFile=${file}`, '-o', 'StrictHostKeyChecking=yes', ...(door.port === 22 ? [] : ['-p', String(door.port)]), ...extra.slice(0, dashIndex(extra)), `${user}@${node.address}`, ...extra.slice(dashIndex(extra))],
        };
      }
      if (opts.print) {
        ctx.emit(plan, (p) => p.argv.map(shellQuote).join(' '));
        return;
      }
      const code = await runSsh(ctx, plan.argv);
      if (code !== 0) throw new SshExit(code);
    });
}

/** ssh's options go before the destination, the remote command after: extras up to the first word that is not an option. */
function dashIndex(extra: string[]): number {
  let i = 0;
  while (i < extra.length && extra[i]!.startsWith('-')) {
    // Options of ssh that take a value (ssh(1)): the value goes with them.
    i += /^-[BbcDEeFIiJLlmOoPpQRSWw]$/.test(extra[i]!) ? 2 : 1;
  }
  return Math.min(i, extra.length);
}

async function pickSliver(slice: string, slivers: Sliver[], ref: string | undefined, nodeOf: (id: string) => Promise<Node>): Promise<Sliver> {
  if (slivers.length === 0) throw new CliError(`slice ${slice} has no slivers: add one with planetlite sliver create ${slice} NODE`);
  if (ref) {
    for (const s of slivers) {
      const n = await nodeOf(s.node_id);
      if ([n.id, n.hostname, n.hostname.split('.')[0], n.address].includes(ref)) return s;
    }
    throw new CliError(`slice ${slice} has no sliver on node ${ref}; it has slivers on: ${(await Promise.all(slivers.map(async (s) => (await nodeOf(s.node_id)).hostname))).join(', ')}`);
  }
  if (slivers.length === 1) return slivers[0]!;
  const names = await Promise.all(slivers.map(async (s) => `${(await nodeOf(s.node_id)).hostname}`));
  throw new CliError(`slice ${slice} has ${slivers.length} slivers; name the node: planetlite ssh ${slice} NODE (one of ${names.join(', ')})\n${sliverTable(slivers).trimEnd()}`);
}

/** Writes the front door's host key for this address, replacing an older one. */
async function pinHostKey(file: string, address: string, door: FrontDoor): Promise<void> {
  const host = knownHost(address, door.port);
  const old = await readFile(file, 'utf8').catch(() => '');
  const kept = old.split('\n').filter((l) => l !== '' && l.split(' ')[0] !== host);
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, [...kept, `${host} ${door.host_key}`].join('\n') + '\n', { mode: 0o600 });
}

function sshProgram(ctx: Context): string[] {
  const given = ctx.io.env.PLANETLITE_SSH;
  return given ? given.split(' ').filter(Boolean) : ['ssh'];
}

/** ssh's own exit status, passed on as ours. */
export class SshExit extends Error {
  constructor(readonly code: number) {
    super(`ssh exited with ${code}`);
  }
}

/** Runs ssh on this terminal; in-process runs (tests) get its output through their streams. */
function runSsh(ctx: Context, argv: string[]): Promise<number> {
  const own = ctx.io.stdout === process.stdout;
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: own ? 'inherit' : ['ignore', 'pipe', 'pipe'] });
    child.stdout?.on('data', (d: Buffer) => ctx.io.stdout.write(d.toString()));
    child.stderr?.on('data', (d: Buffer) => ctx.io.stderr.write(d.toString()));
    child.on('error', (err) => reject(new CliError(`cannot run ${argv[0]}: ${err.message}`)));
    child.on('close', (code, signal) => resolve(code ?? (signal ? 255 : 0)));
  });
}

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`;
}
