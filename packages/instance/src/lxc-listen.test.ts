// Reading a container's listening sockets from the host: the kernel's socket tables and the
// cgroup that names one of its processes.
import { afterAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pidIn } from './lxc/cgroup.js';
import { listensOn } from './lxc/listen.js';

const HEAD = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
const tcp = (...rows: string[]) => HEAD + rows.map((r, i) => `   ${i}: ${r} 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0\n`).join('');

describe('listensOn', () => {
  it('finds a socket listening on the port, over IPv4 and IPv6', () => {
    expect(listensOn(tcp('00000000:0016 00000000:0000 0A'), 22)).toBe(true);
    expect(listensOn(tcp('00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A'), 22)).toBe(true);
    expect(listensOn(tcp('0100007F:1F90 00000000:0000 0A', '00000000:0016 00000000:0000 0A'), 8080)).toBe(true);
  });

  it('counts no connection on the port, no other port, and no empty table', () => {
    // An established connection to 22 (state 01) and a closing one (06): nothing listens.
    expect(listensOn(tcp('0600A00A:0016 0100A00A:9C40 01', '0600A00A:0016 0100A00A:9C41 06'), 22)).toBe(false);
    // 2222 (08AE) and 0x16 as the last two digits of another port (0x0116 = 278).
    expect(listensOn(tcp('00000000:08AE 00000000:0000 0A', '00000000:0116 00000000:0000 0A'), 22)).toBe(false);
    expect(listensOn(HEAD, 22)).toBe(false);
    expect(listensOn('', 22)).toBe(false);
  });
});

describe('pidIn', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pl-listen-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("takes a process of the cgroup, or of one below it (systemd's init.scope)", () => {
    const flat = join(dir, 'flat');
    mkdirSync(flat);
    writeFileSync(join(flat, 'cgroup.procs'), '4242\n4243\n');
    expect(pidIn(flat)).toBe(4242);

    const nested = join(dir, 'nested');
    mkdirSync(join(nested, 'system.slice'), { recursive: true });
    mkdirSync(join(nested, 'init.scope'));
    writeFileSync(join(nested, 'cgroup.procs'), '');
    writeFileSync(join(nested, 'system.slice', 'cgroup.procs'), '');
    writeFileSync(join(nested, 'init.scope', 'cgroup.procs'), '77\n');
    expect(pidIn(nested)).toBe(77);
  });

  it('is null for an empty cgroup tree and for one that is gone', () => {
    const empty = join(dir, 'empty');
    mkdirSync(join(empty, 'child'), { recursive: true });
    writeFileSync(join(empty, 'cgroup.procs'), '');
    writeFileSync(join(empty, 'child', 'cgroup.procs'), '');
    expect(pidIn(empty)).toBeNull();
    expect(pidIn(join(dir, 'gone'))).toBeNull();
  });
});
