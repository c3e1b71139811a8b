// planetlite-agent: enroll this node with a registry, and run the node agent daemon.
import { Command, InvalidArgumentError, Option } from 'commander';
import { ApiError } from '@planetlite/api';
import { createLogger, onStopSignal } from '@planetlite/core';
import { isStorageError } from '@planetlite/storage';
import { reexecWithAgentFlags } from './node-flags.js';
import { Agent } from './agent.js';
import { enroll } from './enroll.js';
import { importImage } from './images/import.js';
import { releaseCommand, removePidFile, writePidFile } from './release-command.js';
import { forwardDrops } from './firewall.js';
import { loadSettings } from './settings.js';
import { rotateKey } from './rotate.js';

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
  .requiredOption('--registry <url>', 'the registry, e.g. https://registry.example.org:8080')
  .requiredOption('--token <token>', 'the one-time enrollment token')
  .option('--ca-pin <sha256:hex>', "the registry CA's pin that came with the token: the registry is refused unless its CA matches, and from then on only that CA is trusted (default: the system's CAs)")
  .requiredOption('--address <addr>', 'this node\'s public IP address: experimenters ssh to it')
  .option('--hostname <name>', 'name to enroll under (default: this machine\'s hostname)')
  .option('--port-window <first-last>', 'ports the registry may hand to slivers here (default 20000-29999)', portWindow)
  .addOption(stateDirOption())
  .action(async (opts: { registry: string; token: string; caPin?: string; address: string; hostname?: string; portWindow?: { first: number; last: number }; stateDir: string }) => {
    const e = await enroll(opts);
    process.stdout.write(`enrolled ${e.hostname} as node ${e.node_id} of site ${e.site ?? '?'}; key and settings are in ${opts.stateDir}\n`);
    if (e.ca_pin) process.stdout.write(`the registry's CA matched ${e.ca_pin}; this node trusts only it (${opts.stateDir}/registry-ca.pem)\n`);
    process.stdout.write(`next: planetlite-agent run --state-dir ${opts.stateDir}\n`);
  });

program
  .command('rotate-key')
  .description('replace this node\'s key with a new one from the registry, without downtime: a running agent switches to it by itself')
  .addOption(stateDirOption())
  .action(async (opts: { stateDir: string }) => {
    const r = await rotateKey(opts);
    process.stdout.write(`node ${r.node_id} has a new key from ${r.registry}, written to ${opts.stateDir}; a running agent switches to it within a minute (the old key still works for 2 minutes)\n`);
  });

interface PoolFlags {
  stateDir: string;
  pool?: string;
  poolSize?: string;
  sliverSubnet?: string;
  netns?: string;
}

const poolSettings = (o: PoolFlags) => ({ pool: o.pool, pool_size: o.poolSize, sliver_subnet: o.sliverSubnet, netns: o.netns });

interface WatchdogFlags {
  watchdog?: boolean;
  watchdogBudget?: number | null;
  watchdogWarn?: number;
  watchdogReset?: number;
  watchdogCooldown?: number;
}

function percent(v: string): number {
  const n = Number(v);
  if (!/^\d+(\.\d+)?$/.test(v) || n < 1 || n > 100) throw new InvalidArgumentError('expected a percentage from 1 to 100');
  return n;
}

function budget(v: string): number | null {
  if (v === 'off' || v === 'host') return null;
  if (!/^\d+$/.test(v) || Number(v) < 16) throw new InvalidArgumentError("expected MiB (at least 16), or 'host' for the whole host's memory");
  return Number(v);
}

function seconds(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) > 86_400) throw new InvalidArgumentError('expected whole seconds from 0 to 86400');
  return Number(v);
}

interface ImageFlags {
  warmPoolImage?: string;
  warmPoolSize?: number;
  imageUploadKbps?: number | null;
  imageGcGrace?: number;
  vm?: 'auto' | 'off';
  sliverRoots?: 'layered' | 'snapshot';
  frontDoorPort?: 'auto' | 'off' | number;
}

function frontDoorPort(v: string): 'auto' | 'off' | number {
  if (v === 'auto' || v === 'off') return v;
  if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 65_535) throw new InvalidArgumentError("expected 'auto', 'off' or a TCP port from 1 to 65535");
  return Number(v);
}

function kbps(v: string): number | null {
  if (v === 'none') return null;
  if (!/^\d+$/.test(v) || Number(v) < 8) throw new InvalidArgumentError("expected kbit/s (at least 8), or 'none' for no cap");
  return Number(v);
}

function graceSeconds(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) > 30 * 86_400) throw new InvalidArgumentError('expected whole seconds from 0 to 2592000 (30 days)');
  return Number(v);
}

const imageSettings = (o: ImageFlags) => ({
  image_upload_kbps: o.imageUploadKbps,
  image_gc_grace_seconds: o.imageGcGrace,
  vm: o.vm,
  sliver_roots: o.sliverRoots,
  front_door_port: o.frontDoorPort,
  // --warm-pool-size 0 turns the pool off; the image is kept for a later size.
  warm_pool_image: o.warmPoolImage,
  warm_pool_size: o.warmPoolSize,
});

function poolSize(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) > 1000) throw new InvalidArgumentError('expected a whole number of spares from 0 to 1000');
  return Number(v);
}

function imageName(v: string): string {
  if (!/^[a-z0-9][a-z0-9._-]{0,63}$/.test(v)) throw new InvalidArgumentError(`image name '${v}' must match ^[a-z0-9][a-z0-9._-]{0,63}$`);
  return v;
}

const watchdogSettings = (o: WatchdogFlags) => ({
  enabled: o.watchdog,
  budget_mb: o.watchdogBudget,
  warn_percent: o.watchdogWarn,
  reset_percent: o.watchdogReset,
  cooldown_seconds: o.watchdogCooldown,
});

program
  .command('run')
  .description('run the agent: follow the registry\'s desired state for this node, build its slivers, report what the node has')
  .addOption(stateDirOption())
  .option('--pool <file|device>', 'btrfs pool: a loop file the agent creates, or a block device (default STATE_DIR/pool.img)')
  .option('--pool-size <size>', 'size of a new loop-file pool, e.g. 20G (default 20G)')
  .option('--sliver-subnet <cidr>', 'private addresses of slivers, one /30 each (default 10.200.0.0/16)')
  .option('--netns <name>', "several nodes on one machine (scripts/testbed.sh): slivers, their links and the nftables table live in this network namespace (ip netns add NAME), which holds the node's address; the agent itself stays in this one")
  .addOption(new Option('--vm <auto|off>', "kvm slivers: 'auto' runs them when qemu boots a probe guest here (KVM, else TCG); 'off' never (default auto)").choices(['auto', 'off']))
  .addOption(new Option('--sliver-roots <layered|snapshot>', "new container slivers' roots: 'layered' (an overlay over the image, idmapped, so slivers of one image share its page cache; needs python3 and overlayfs, else snapshots) or 'snapshot' (a btrfs snapshot each); a root keeps its kind (default layered)").choices(['layered', 'snapshot']))
  .option('--front-door-port <auto|off|port>', "the ssh front door (ssh SLICE@NODE) on the node's address: 'auto' takes port 22 when nothing listens there, else 2222; a port takes that one (22 once the node's own sshd has moved); 'off' runs none (default auto)", frontDoorPort)
  .option('--image-upload-kbps <kbps|none>', 'cap on seeding images to other nodes, kbit/s (default 20000)', kbps)
  .option('--image-gc-grace <seconds>', 'an image no sliver uses is removed from the node after this long (default 86400)', graceSeconds)
  .option('--warm-pool-image <name>', 'keep spare slivers of this image built and running, handed out to new slivers of slices with that image (start-up without a build); the image must be on this node (imported, or fetched for a sliver)', imageName)
  .option('--warm-pool-size <n>', 'how many spares the warm pool keeps (default 0: none)', poolSize)
  .option('--watchdog-budget <MiB|host>', "memory watchdog level: the slivers' memory over this budget, or 'host' (default): the whole host's", budget)
  .option('--watchdog-warn <percent>', 'level that records a watchdog.warning event (default 85)', percent)
  .option('--watchdog-reset <percent>', 'level at which the sliver using the most memory is reset (default 90)', percent)
  .option('--watchdog-cooldown <seconds>', 'after a reset, no other sliver is reset for this long (default 30)', seconds)
  .option('--watchdog', 'run the memory watchdog (the default; undoes an earlier --no-watchdog)')
  .option('--no-watchdog', 'do not run the memory watchdog')
  .addOption(new Option('--log-level <level>', 'trace, debug, info, warn, error').default('info').env('PLANETLITE_LOG_LEVEL'))
  .addHelpText('after', `
Settings given here are remembered in the state dir (settings.json); later runs and \`image import\`
use them. The memory watchdog samples every second; its other settings (interval_ms,
hysteresis_percent, psi_full_reset, and the freeze on memory pressure: freeze_psi_some,
thaw_psi_some, sliver_psi_min, freeze_timeout_seconds, freeze_strikes) are in settings.json
under "watchdog".
Needs root, btrfs-progs, lxc and nftables; kvm slivers also qemu-system-x86, busybox-static and python3
(scripts/setup.sh installs them all). The first start with --vm auto fetches the node kernel
(Debian's linux-image-amd64, with apt-get download) into /var/cache/planetlite-kvm.`)
  .action(async (opts: PoolFlags & WatchdogFlags & ImageFlags & { logLevel: string }) => {
    reexecWithAgentFlags();
    const log = createLogger({ name: 'agent', level: opts.logLevel });
    const agent = new Agent({ stateDir: opts.stateDir, log, settings: { ...poolSettings(opts), ...imageSettings(opts), watchdog: watchdogSettings(opts) } });
    // A stop asked for while the agent starts (its first pass runs inside start()) is a clean one
    // once the start is done, not the default handler's kill.
    let started = false;
    let asked: string | null = null;
    const stop = async (signal: string) => {
      if (!started) return void (asked = signal);
      log.info({ signal }, 'stopping');
      await agent.stop();
      removePidFile(opts.stateDir);
      process.exit(0);
    };
    onStopSignal((signal) => void stop(signal));
    await agent.start();
    writePidFile(opts.stateDir);
    started = true;
    if (asked) return void stop(asked);
    log.info({ node: agent.nodeId }, 'agent running');
    void forwardDrops(loadSettings(opts.stateDir).netns).then(
      (drops) => {
        for (const d of drops) log.warn({ chain: d.chain, fix: d.fix }, "another firewall here drops forwarded traffic: slivers are unreachable and cannot reach out until it lets their links through (run the fix)");
      },
      (err: unknown) => log.debug({ err: err instanceof Error ? err.message : String(err) }, 'could not look for other firewalls'),
    );
  });

const image = program.command('image').description('images on this node');
image
  .command('import')
  .description('make a local root filesystem archive (tar, .gz, .xz, .zst) available on this node under NAME')
  .argument('<name>', 'image name, as slices name it (e.g. debian12)')
  .argument('<file>', 'the archive')
  .addOption(stateDirOption())
  .option('--pool <file|device>', 'btrfs pool (default: the one `run` uses)')
  .option('--pool-size <size>', 'size of a new loop-file pool')
  .action(async (name: string, file: string, opts: PoolFlags) => {
    if (!/^[a-z0-9][a-z0-9._-]{0,63}$/.test(name)) throw new InvalidArgumentError(`image name '${name}' must match ^[a-z0-9][a-z0-9._-]{0,63}$`);
    const rec = await importImage({ stateDir: opts.stateDir, name, file, settings: poolSettings(opts) });
    process.stdout.write(`image ${rec.name} is sha256:${rec.sha256} (${rec.size} bytes) on this node\n`);
  });

program.addCommand(releaseCommand(stateDirOption()));

program.parseAsync(process.argv).catch((err: unknown) => {
  const msg = err instanceof ApiError || isStorageError(err) ? `${err.message} (${err.code})` : err instanceof Error ? err.message : String(err);
  process.stderr.write(`planetlite-agent: ${msg}\n`);
  process.exit(1);
});
