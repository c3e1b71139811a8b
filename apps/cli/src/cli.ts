// The planetlite command tree and runCli, which runs one command line and returns its exit code.
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { registerAuth } from './commands/auth.js';
import { registerEvents } from './commands/events.js';
import { registerImage } from './commands/image.js';
import { registerKey } from './commands/key.js';
import { registerNode } from './commands/node.js';
import { registerSite } from './commands/site.js';
import { registerSlice } from './commands/slice.js';
import { registerSliver } from './commands/sliver.js';
import { registerSsh, SshExit } from './commands/ssh.js';
import { registerUser } from './commands/user.js';
import { Context } from './context.js';
import { formatError } from './errors.js';
import { processIo, type Io } from './io.js';

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    // Only --version needs it; never fail a command over it.
    return 'unknown';
  }
}

export function buildProgram(io: Io): { program: Command; ctx: Context } {
  const program = new Command('planetlite');
  const ctx = new Context(io, program);
  // Settings made before .command() calls are inherited by every subcommand.
  program
    .description('PlanetLite command line: sites, users, keys, slices, slivers, nodes, images and events over the registry API')
    .version(version(), '-V, --version', 'print the version')
    .option('--registry <url>', 'registry URL (env PLANETLITE_REGISTRY; default: the one saved by login)')
    .option('--token <token>', 'bearer token (env PLANETLITE_TOKEN; default: the one saved by login)')
    .option('--json', 'print the API object or array as JSON and nothing else on stdout')
    .option('--config <file>', 'config file (env PLANETLITE_CONFIG; default ~/.config/planetlite/config.json)')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => void io.stdout.write(s),
      writeErr: (s) => void io.stderr.write(s),
      // A usage error in one line, with where to look (commander's own is two).
      outputError: (s) => void io.stderr.write(`planetlite: ${s.trim().replace(/^error: /, '').replace(/\s*\n\s*/g, ' ')} (add --help for usage)\n`),
    })
    .configureHelp({ showGlobalOptions: true })
    .addHelpText(
      'after',
      `
Start with:
  planetlite --registry http://HOST:PORT login --email you@site.edu
  planetlite slice ls

Every command answers --help.`,
    );
  registerAuth(program, ctx);
  registerSite(program, ctx);
  registerUser(program, ctx);
  registerKey(program, ctx);
  registerSlice(program, ctx);
  registerSliver(program, ctx);
  registerSsh(program, ctx);
  registerNode(program, ctx);
  registerImage(program, ctx);
  registerEvents(program, ctx);
  return { program, ctx };
}

/**
 * Runs one command line (arguments only, without node and script) and returns the exit code:
 * 0 ok, 1 the command failed (one line on stderr), 2 usage error (commander's message).
 */
export async function runCli(argv: readonly string[], io: Io = processIo()): Promise<number> {
  const { program } = buildProgram(io);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return 0;
  } catch (err) {
    // Help and --version end through here with exit code 0; everything commander rejects is usage.
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    // ssh said what went wrong itself.
    if (err instanceof SshExit) return err.code;
    io.stderr.write(`planetlite: ${formatError(err)}\n`);
    return 1;
  }
}
