// A sliver's root is provisioned beside its link: an agent SIGKILLed at a build's network step may
// die in the middle of writing /etc/passwd or the host key. The next agent provisions again and
// must find every file as it was or as it should be: a truncated passwd loses root and sshd's
// user for good, and a host key left owned by the host's root is one the sliver's sshd cannot
// read (the sliver then refuses every ssh).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { provisionRoot, SLICE_UID } from '../src/provision.js';

const PROVISION = fileURLToPath(new URL('../dist/provision.js', import.meta.url));
/** Host ids of the root's files are the sliver's plus this, as in a layered root. */
const SHIFT = 200_000;
const IMAGE = {
  passwd: 'root:x:0:0:root:/root:/bin/sh\nsshd:x:22:22:sshd:/var/empty:/bin/false\n',
  group: 'root:x:0:\nsshd:x:22:\n',
  shadow: 'root:*:19000:0:99999:7:::\n',
};

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'pl-provision-'));
  mkdirSync(join(root, 'etc'));
  for (const [name, text] of Object.entries(IMAGE)) writeFileSync(join(root, 'etc', name), text);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A process that provisions the root over and over (its host key and homes removed each time,
 * so every write happens in every round), SIGKILLed `afterMs` into its rounds. */
async function killedWhileProvisioning(afterMs: number): Promise<void> {
  const script = `
    import { rm } from 'node:fs/promises';
    import { provisionRoot } from ${JSON.stringify(PROVISION)};
    const root = ${JSON.stringify(root)};
    for (let i = 0; ; i++) {
      await rm(root + '/etc/ssh', { recursive: true, force: true });
      await rm(root + '/home', { recursive: true, force: true });
      await provisionRoot({ rootfs: root, slice: 'crash', keys: ['ssh-ed25519 AAAA' + i + ' round'], idShift: ${SHIFT} });
      if (i === 0) process.stdout.write('go\\n');
    }`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`the provisioning process exited (${code}) before its first round`)));
  });
  await new Promise((r) => setTimeout(r, afterMs));
  child.kill('SIGKILL');
  expect(await exited).toBe('SIGKILL');
}

describe('provisioning a sliver root', () => {
  it('leaves a root the next provision completes, wherever a crash stopped it', async () => {
    const key = 'ssh-ed25519 AAAAfinal member@example.org';
    for (let round = 0; round < 40; round++) {
      await killedWhileProvisioning(round % 20);
      await provisionRoot({ rootfs: root, slice: 'crash', keys: [key], idShift: SHIFT });

      const etc = (name: string) => readFileSync(join(root, 'etc', name), 'utf8');
      const at = `after a kill ${round % 20} ms into the rounds (round ${round})`;
      expect(etc('passwd'), at).toBe(`${IMAGE.passwd}crash:x:${SLICE_UID}:${SLICE_UID}:slice crash:/home/crash:/bin/sh\n`);
      expect(etc('group'), at).toBe(`${IMAGE.group}crash:x:${SLICE_UID}:\n`);
      expect(etc('shadow'), at).toBe(`${IMAGE.shadow}crash:*:19000:0:99999:7:::\n`);
      expect(etc('slicename'), at).toBe('crash\n');
      // The host key loads in OpenSSH, its public half beside it, both the sliver root's own.
      const hostKey = join(root, 'etc/ssh/ssh_host_ed25519_key');
      expect(execFileSync('ssh-keygen', ['-y', '-f', hostKey], { encoding: 'utf8' }).trim(), at).toBe(readFileSync(`${hostKey}.pub`, 'utf8').trim());
      expect(statSync(hostKey), at).toMatchObject({ uid: SHIFT, gid: SHIFT, mode: 0o100600 });
      for (const dir of ['etc/ssh', 'home']) expect(statSync(join(root, dir)), `${dir} ${at}`).toMatchObject({ uid: SHIFT, gid: SHIFT });
      expect(statSync(join(root, 'home/crash/.ssh/authorized_keys')), at).toMatchObject({ uid: SHIFT + SLICE_UID, mode: 0o100600 });
      expect(readFileSync(join(root, 'home/crash/.ssh/authorized_keys'), 'utf8'), at).toBe(`${key}\n`);
      // Nothing half-made is left behind, in the sliver's view or anywhere else.
      expect(readdirSync(root, { recursive: true, encoding: 'utf8' }).filter((p) => p.includes('planetlite-new')), at).toEqual([]);
    }
  }, 120_000);

  it('replaces a symlink planted in the root instead of writing through it', async () => {
    const outside = join(root, '..', `${root.split('/').pop()}-outside`);
    writeFileSync(outside, 'host file\n');
    try {
      rmSync(join(root, 'etc/slicename'));
      execFileSync('ln', ['-s', outside, join(root, 'etc/slicename')]);
      await provisionRoot({ rootfs: root, slice: 'crash', keys: [], idShift: SHIFT });
      expect(readFileSync(outside, 'utf8')).toBe('host file\n');
      expect(readFileSync(join(root, 'etc/slicename'), 'utf8')).toBe('crash\n');
    } finally {
      rmSync(outside, { force: true });
    }
  });
});
