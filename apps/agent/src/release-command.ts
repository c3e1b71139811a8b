// The `release` command of planetlite-agent, and the pid file `run` keeps so release can refuse a
// live agent.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Command, type Option } from 'commander';
import { PID_FILE, releaseNode } from './release.js';
import { atomicWrite } from './state.js';

export function writePidFile(stateDir: string): void {
  atomicWrite(join(stateDir, PID_FILE), `${process.pid}\n`, 0o644);
}

export function removePidFile(stateDir: string): void {
  rmSync(join(stateDir, PID_FILE), { force: true });
}

export function releaseCommand(stateDir: Option): Command {
  return new Command('release')
    .description("stop this node's slivers and release everything the agent holds: containers and VMs, links, tc/ifb devices, the nftables table, the pool mount and its loop device; then delete the pool file and the state dir unless --keep-data")
    .addOption(stateDir)
    .option('--keep-data', "keep the pool file (slivers' disks, images), the ledger and the node's enrollment, so that `run` builds the slivers again")
    .addHelpText('after', `
A plain stop of the agent (systemctl stop, restart, upgrade) leaves slivers running and keeps all of
the above on purpose. Release is for taking the node out of service or uninstalling. The agent must
be stopped first.`)
    .action(async (opts: { stateDir: string; keepData?: boolean }) => {
      for (const line of await releaseNode({ stateDir: opts.stateDir, keepData: opts.keepData === true })) process.stdout.write(`released: ${line}\n`);
    });
}
