// planetlite-agent: enroll this node with a registry, and run the node agent daemon.
import { Command, InvalidArgumentError, Option } from 'commander';
import { ApiError } from '@planetlite/api';
import { createLogger } from '@planetlite/core';
import { Agent } from './agent.js';
import { enroll } from './enroll.js';

const program = new Command('planetlite-agent')
  .description('The PlanetLite node agent: turns a slice\'s share of this node into a sliver.')
  .version('0.1.0')
  .showHelpAfterError('(run with --help for usage)');

const stateDirOption = () =>
  new Option('--state-dir <dir>', 'where the node key, settings and the last desired state live').default('/var/lib/planetlite-agent').env('PLANETLITE_AGENT_STATE_DIR');

function portWindow(v: string): { first: number; last: number } {
  const m = /^(\d{4,5})-(\d{4,5})$/.exec(v);
  const first = Number(m?.[1]);
  const last = Number(m?.[2]);
  if (!m || first < 1024 || last > 65535 || first > last) throw new InvalidArgumentError('expected FIRST-LAST within 1024-65535, e.g. 20000-29999');
  return { first, last };
}

program
  .command('enroll')
  .description('enroll this node with a one-time token from its site admin (planetlite site token SITE)')
  .requiredOption('--registry <url>', 'the registry, e.g. http://registry.example.org:8080')
  .requiredOption('--token <token>', 'the one-time enrollment token')
  .requiredOption('--address <addr>', 'this node\'s public IP address: experimenters ssh to it')
  .option('--hostname <name>', 'name to enroll under (default: this machine\'s hostname)')
  .option('--port-window <first-last>', 'ports the registry may hand to slivers here (default 20000-29999)', portWindow)
  .addOption(stateDirOption())
  .action(async (opts: { registry: string; token: string; address: string; hostname?: string; portWindow?: { first: number; last: number }; stateDir: string }) => {
    const e = await enroll(opts);
    process.stdout.write(`enrolled ${e.hostname} as node ${e.node_id} of site ${e.site ?? '?'}; key and settings are in ${opts.stateDir}\n`);
    process.stdout.write(`next: planetlite-agent run --state-dir ${opts.stateDir}\n`);
  });

program
  .command('run')
  .description('run the agent: follow the registry\'s desired state for this node and report what the node has')
  .addOption(stateDirOption())
  .addOption(new Option('--log-level <level>', 'trace, debug, info, warn, error').default('info').env('PLANETLITE_LOG_LEVEL'))
  .action(async (opts: { stateDir: string; logLevel: string }) => {
    const log = createLogger({ name: 'agent', level: opts.logLevel });
    const agent = new Agent({ stateDir: opts.stateDir, log });
    await agent.start();
    log.info({ node: agent.nodeId }, 'agent running');
    const stop = async (signal: string) => {
      log.info({ signal }, 'stopping');
      await agent.stop();
      process.exit(0);
    };
    process.once('SIGINT', () => void stop('SIGINT'));
    process.once('SIGTERM', () => void stop('SIGTERM'));
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  const msg = err instanceof ApiError ? `${err.message} (${err.code})` : err instanceof Error ? err.message : String(err);
  process.stderr.write(`planetlite-agent: ${msg}\n`);
  process.exit(1);
});
